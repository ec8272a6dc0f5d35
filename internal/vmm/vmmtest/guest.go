package vmmtest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/initrd"
	"github.com/bangerdev/banger/internal/kernel/kerneltest"
	"github.com/bangerdev/banger/internal/testenv"
)

// Agent is the part of the guest agent client the suite uses.
type Agent interface {
	// KernelRelease asks the agent for health and returns the release.
	KernelRelease(ctx context.Context) (string, error)
	// Run executes argv in the guest and returns its stdout and exit code.
	Run(ctx context.Context, argv ...string) (stdout string, code int, err error)
	// Poweroff asks the guest to sync and power off.
	Poweroff(ctx context.Context) error
	Close() error
}

// GuestArtifacts is a bootable guest: kernel, initrd with banger-agent as
// /init, and a read-only base disk. The suite adds per-VM overlay and work
// disks.
type GuestArtifacts struct {
	Kernel        string // vmlinux ELF (or bzImage for QEMU)
	Initrd        string
	BaseDisk      string
	KernelRelease string
	// Cmdline is the guest-contract part of the kernel command line
	// (disks, hostname, init mode); drivers add their own keys.
	Cmdline string
	// ConnectAgent runs the agent handshake on a connection returned by
	// Instance.DialAgent.
	ConnectAgent func(ctx context.Context, conn net.Conn) (Agent, error)
}

// Kernel is an extracted Debian cloud kernel.
type Kernel struct {
	Vmlinuz    string // bzImage
	Vmlinux    string // ELF extracted from Vmlinuz
	ModulesDir string // lib/modules/<release>
	Release    string
}

// DebianKernel returns the Debian cloud kernel fixture (imported once into
// the test cache by kerneltest). Skips when it cannot be fetched.
func DebianKernel(t testing.TB) Kernel {
	t.Helper()
	k := kerneltest.DebianCloudKernel(t)
	if k.Vmlinux == "" || k.ModulesDir == "" {
		t.Fatalf("kernel fixture lacks vmlinux or modules: %+v", k)
	}
	return Kernel{Vmlinuz: k.Vmlinuz, Vmlinux: k.Vmlinux, ModulesDir: k.ModulesDir, Release: k.Version}
}

// BusyboxBaseDisk builds a small read-only base image from the host's static
// busybox (busybox-static) with mkfs.ext4 -d: /bin/busybox plus an applet
// symlink for each applet, and the usual empty top-level dirs.
func BusyboxBaseDisk(t testing.TB, path string) {
	t.Helper()
	bb := testenv.BusyboxBinary
	if _, err := os.Stat(bb); err != nil {
		t.Skipf("%s not installed (busybox-static)", bb)
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed")
	}
	tree := t.TempDir()
	for _, d := range []string{"bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root", "var", "usr/bin", "mnt"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	for _, a := range strings.Fields(string(out)) {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(tree, "bin", a)); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"etc/passwd":     "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":      "root:x:0:\n",
		"etc/os-release": "ID=busybox\nNAME=vmmtest\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(tree, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-L", "vmmtest", "-d", tree, path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 -d: %v\n%s", err, out)
	}
}

// BuildGuest builds the standard guest: the Debian cloud kernel (vmlinux),
// an initrd with the real banger-agent (CGO_ENABLED=0) and the default
// modules, and a busybox base disk. Everything but the cached kernel lives
// in a temp dir of t.
func BuildGuest(t testing.TB) GuestArtifacts {
	t.Helper()
	k := DebianKernel(t)
	agent := testenv.BuildBinaries(t, testenv.PkgAgent).Agent
	dir := t.TempDir()
	img := filepath.Join(dir, "initrd.img")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := initrd.Build(ctx, initrd.Spec{AgentPath: agent, ModulesDir: k.ModulesDir, Modules: initrd.DefaultModules()}, img); err != nil {
		t.Fatalf("building initrd: %v", err)
	}
	base := filepath.Join(dir, "base.ext4")
	BusyboxBaseDisk(t, base)
	return GuestArtifacts{
		Kernel:        k.Vmlinux,
		Initrd:        img,
		BaseDisk:      base,
		KernelRelease: k.Release,
		Cmdline: "banger.root=/dev/vda banger.overlay=/dev/vdb banger.work=/dev/vdc " +
			"banger.hostname=vmmtest banger.init=agent",
		ConnectAgent: connectAgentClient,
	}
}
