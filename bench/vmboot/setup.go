package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/kernel/apt"
	"github.com/bangerdev/banger/internal/testenv"
)

// kernelPackage is the Debian cloud kernel the e2e tests also use.
const kernelPackage = "linux-image-cloud-amd64"

// install is a throw-away banger installation: freshly built binaries and
// a BANGER_HOME of its own.
type install struct {
	bin  string // dir with banger, bangerd, banger-agent
	home string
	// cliCPU adds up the CPU time of every banger process run.
	cliCPU time.Duration
}

func (in *install) banger() string { return filepath.Join(in.bin, "banger") }

func (in *install) env() []string {
	return append(os.Environ(), "BANGER_HOME="+in.home, "BANGER_DAEMON_BIN="+filepath.Join(in.bin, "bangerd"))
}

// run runs banger and returns its stdout, failing on a non-zero exit.
func (in *install) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, in.banger(), args...)
	cmd.Env = in.env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if cmd.ProcessState != nil {
		in.cliCPU += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return out.String(), fmt.Errorf("banger %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// timed runs banger and returns how long it took.
func (in *install) timed(ctx context.Context, args ...string) (time.Duration, error) {
	start := time.Now()
	_, err := in.run(ctx, args...)
	return time.Since(start), err
}

// daemonPID reads the daemon's lock file.
func (in *install) daemonPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(in.home, "run", "bangerd.lock"))
	if err != nil {
		return 0, fmt.Errorf("reading daemon pid: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func (in *install) daemonLog() string { return filepath.Join(in.home, "state", "bangerd.log") }

// close stops the daemon and kills any VM left behind.
func (in *install) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if pid, err := in.daemonPID(); err == nil {
		_, _ = in.run(ctx, "daemon", "stop")
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, pid := range testenv.QEMUPIDs(in.home) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// moduleRoot is the directory holding go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the benchmark from inside the banger module")
	}
	return filepath.Dir(mod), nil
}

// build compiles the three binaries the way `make build` does.
func build(ctx context.Context, root, dir string) error {
	for _, b := range []struct{ pkg, out string }{
		{"./cmd/banger", "banger"}, {"./cmd/bangerd", "bangerd"}, {"./cmd/banger-agent", "banger-agent"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-ldflags", "-s -w", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Dir = root
		cmd.Env = os.Environ()
		if b.out == "banger-agent" {
			cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %w\n%s", b.pkg, err, out)
		}
	}
	return nil
}

// kernelDeb finds the cached Debian cloud kernel package (the e2e tests'
// cache), downloading it with apt-get when missing.
func kernelDeb(ctx context.Context, cache string) (string, error) {
	m, _ := filepath.Glob(filepath.Join(cache, "linux-image-[0-9]*-cloud-amd64_*.deb"))
	if len(m) > 0 {
		sort.Strings(m)
		return m[len(m)-1], nil
	}
	if !apt.Available() {
		return "", fmt.Errorf("no kernel package in %s and apt-get is not available", cache)
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	logf("downloading %s into %s", kernelPackage, cache)
	return apt.Download(ctx, cache, kernelPackage)
}

// busyboxRootfs builds the busybox root filesystem with the repository's
// script, then grows it to size bytes (0 keeps the script's size).
func busyboxRootfs(ctx context.Context, root, out string, size int64) error {
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "lib", "busybox-rootfs.sh"), out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("busybox-rootfs.sh: %w\n%s", err, b)
	}
	if size == 0 {
		return nil
	}
	if err := os.Truncate(out, size); err != nil {
		return err
	}
	if b, err := exec.CommandContext(ctx, "resize2fs", "-f", out).CombinedOutput(); err != nil {
		return fmt.Errorf("resize2fs %s: %w\n%s", out, err, b)
	}
	return nil
}

// writeBytes reads write_bytes from /proc/PID/io: bytes the process (and
// the children it reaped) caused to be written to storage.
func writeBytes(pid int) (int64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "io"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("no write_bytes in /proc/%d/io", pid)
}

// clockTick is USER_HZ, the unit of the times in /proc/PID/stat (100 on
// every Linux architecture banger supports).
const clockTick = 10 * time.Millisecond

// procCPU is the CPU time of a process plus that of the children it reaped
// (utime, stime, cutime and cstime of /proc/PID/stat).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	// After "pid (comm)": state is field 3; utime..cstime are fields 14-17.
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	var ticks int64
	for _, v := range f[11:15] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing /proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// allocated is the space the files under dir occupy on disk.
func allocated(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		var st syscall.Stat_t
		if syscall.Lstat(p, &st) == nil {
			n += st.Blocks * 512
		}
		return nil
	})
	return n
}
