package doctor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/lookpath"
)

// Probes is how the checks read the host. Each field is one small operation;
// a nil field uses the real implementation (see DefaultProbes). Tests replace
// fields to describe hosts that this machine is not.
type Probes struct {
	// Machine returns the hardware name, as `uname -m` prints it.
	Machine func() (string, error)
	// ReadFile reads a file such as /proc/cpuinfo or /proc/self/status.
	ReadFile func(path string) ([]byte, error)
	// Exists reports whether a path (file, device node, directory) exists.
	Exists func(path string) bool
	// OpenReadWrite opens a path read-write and closes it again.
	OpenReadWrite func(path string) error
	// LookPath finds an executable; the real one also searches the sbin
	// directories, which are not on an ordinary user's PATH on Debian.
	LookPath func(name string) (string, error)
	// Run runs a program and returns its combined stdout and stderr.
	Run func(ctx context.Context, name string, args ...string) (string, error)
	// Getenv reads an environment variable.
	Getenv func(key string) string
	// Geteuid returns the effective user id.
	Geteuid func() int
	// FreeBytes returns the bytes available to unprivileged users on the
	// filesystem holding path (or its nearest existing ancestor).
	FreeBytes func(path string) (uint64, error)
	// Nftables asks the kernel's nf_tables over netlink for its tables and
	// returns how many there are.
	Nftables func(ctx context.Context) (int, error)
}

// DefaultProbes returns probes that read the real host.
func DefaultProbes() Probes {
	return Probes{
		Machine:       unameMachine,
		ReadFile:      os.ReadFile,
		Exists:        pathExists,
		OpenReadWrite: openReadWrite,
		LookPath:      lookPathSbin,
		Run:           runCombined,
		Getenv:        os.Getenv,
		Geteuid:       os.Geteuid,
		FreeBytes:     freeBytes,
		Nftables:      nftablesTables,
	}
}

func (p Probes) withDefaults() Probes {
	d := DefaultProbes()
	if p.Machine == nil {
		p.Machine = d.Machine
	}
	if p.ReadFile == nil {
		p.ReadFile = d.ReadFile
	}
	if p.Exists == nil {
		p.Exists = d.Exists
	}
	if p.OpenReadWrite == nil {
		p.OpenReadWrite = d.OpenReadWrite
	}
	if p.LookPath == nil {
		p.LookPath = d.LookPath
	}
	if p.Run == nil {
		p.Run = d.Run
	}
	if p.Getenv == nil {
		p.Getenv = d.Getenv
	}
	if p.Geteuid == nil {
		p.Geteuid = d.Geteuid
	}
	if p.FreeBytes == nil {
		p.FreeBytes = d.FreeBytes
	}
	if p.Nftables == nil {
		p.Nftables = d.Nftables
	}
	return p
}

func unameMachine() (string, error) {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	b := make([]byte, 0, len(u.Machine))
	for _, c := range u.Machine {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b), nil
}

func pathExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func openReadWrite(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// lookPathSbin finds tools in the sbin directories too: e2fsprogs and nft
// live there on Debian, on root's PATH only.
func lookPathSbin(name string) (string, error) { return lookpath.Find(name) }

func runCombined(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	// Run the tool in its own process group and kill the whole group on
	// cancellation, so a hung tool's children do not outlive the check.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Do not wait forever for output pipes held open by a stray child.
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("running %s: %w", name, err)
	}
	return string(out), nil
}

func freeBytes(path string) (uint64, error) {
	dir := filepath.Clean(path)
	for {
		var st syscall.Statfs_t
		err := syscall.Statfs(dir, &st)
		if err == nil {
			return st.Bavail * uint64(st.Bsize), nil
		}
		parent := filepath.Dir(dir)
		if !errors.Is(err, syscall.ENOENT) || parent == dir {
			return 0, fmt.Errorf("statfs %s: %w", dir, err)
		}
		dir = parent
	}
}
