package firecracker_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/testenv"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/firecracker"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// fcBinary returns the Firecracker binary from $BANGER_FIRECRACKER_BIN or
// PATH, or skips: Firecracker is not packaged for Debian (docs/firecracker.md).
func fcBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(firecracker.BinaryEnv); p != "" {
		return p
	}
	p, err := exec.LookPath("firecracker")
	if err != nil {
		t.Skip("no Firecracker binary: set $" + firecracker.BinaryEnv + " (see docs/firecracker.md)")
	}
	return p
}

// needKVMDevice skips unless /dev/kvm opens: Firecracker opens it at
// InstanceStart, even where guests cannot actually run (PVM).
func needKVMDevice(t testing.TB) {
	t.Helper()
	if !vmm.DetectKVM().Usable {
		t.Skip("/dev/kvm not usable")
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// apiOf returns the API client of a driver instance.
func apiOf(t *testing.T, inst vmm.Instance) *firecracker.Client {
	t.Helper()
	a, ok := inst.(interface{ API() *firecracker.Client })
	if !ok {
		t.Fatalf("instance %T has no API()", inst)
	}
	return a.API()
}

// processSpec is a VM whose guest is irrelevant: the real kernel, no
// initrd, and small raw disks. These tests check the VMM process and its
// configuration; on a PVM host the guest dies in early boot, which takes
// far longer than the tests.
func processSpec(t *testing.T, runDir string) vmm.Spec {
	t.Helper()
	k := vmmtest.DebianKernel(t)
	dir := t.TempDir()
	var disks []vmm.Disk
	for i, ro := range []bool{true, false, false} {
		p := filepath.Join(dir, "disk"+strconv.Itoa(i)+".img")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, 8<<20); err != nil {
			t.Fatal(err)
		}
		disks = append(disks, vmm.Disk{Path: p, ReadOnly: ro})
	}
	return vmm.Spec{
		ID: "p" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36), Name: "proc", RunDir: runDir,
		Kernel: k.Vmlinux, Cmdline: "banger.root=/dev/vda", CPUs: 1, MemoryMiB: 128, Disks: disks,
	}
}

func bootT(t *testing.T, d *firecracker.Driver, spec vmm.Spec) vmm.Instance {
	t.Helper()
	inst, err := d.Boot(ctxT(t, 60*time.Second), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = inst.Kill(syscall.SIGKILL)
		_, _ = inst.Wait(ctxT(t, 30*time.Second))
	})
	return inst
}

// alive reports whether id's process runs (same start time, not a zombie).
func alive(id vmm.Identity) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(id.PID) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 19 && f[0] != "Z" && f[19] == strconv.FormatUint(id.StartTime, 10)
}

// noLeftovers fails when the process or its sockets and pidfile remain.
func noLeftovers(t *testing.T, id vmm.Identity) {
	t.Helper()
	if alive(id) {
		t.Errorf("firecracker %d still running", id.PID)
	}
	paths := []string{id.ControlSocket, id.AgentSocket, id.PIDFile}
	if id.ControlSocket != "" {
		paths = append(paths, filepath.Dir(id.ControlSocket))
	}
	for _, p := range paths {
		if p == id.RunDir || p == "" {
			continue
		}
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
	ents, _ := os.ReadDir(id.RunDir)
	for _, e := range ents {
		if e.Type()&os.ModeSocket != 0 || strings.HasSuffix(e.Name(), ".pid") {
			t.Errorf("%s left in the run dir", e.Name())
		}
	}
}

// runCmd runs a command and returns its output in the error.
func runCmd(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
