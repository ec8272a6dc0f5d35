// Package e2e drives the real banger and bangerd binaries end to end.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is one isolated banger installation (its own BANGER_HOME and daemon).
type env struct {
	t    *testing.T
	home string
	bins testenv.Binaries
}

func newEnv(t *testing.T) *env {
	t.Helper()
	bins := testenv.BuildBinaries(t, testenv.PkgBanger, testenv.PkgBangerd)
	home, err := os.MkdirTemp("", "bgr")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, home: home, bins: bins}
	t.Cleanup(func() {
		e.stopDaemon()
		os.RemoveAll(home)
	})
	return e
}

func (e *env) environ() []string {
	return append(os.Environ(), "BANGER_HOME="+e.home, "BANGER_DAEMON_BIN="+e.bins.Bangerd)
}

type result struct {
	stdout, stderr string
	code           int
}

// run executes banger with args and returns its output and exit code.
func (e *env) run(args ...string) result {
	e.t.Helper()
	return e.runIn(nil, args...)
}

func (e *env) runIn(stdin []byte, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bins.Banger, args...)
	cmd.Env = e.environ()
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("running banger %v: %v", args, err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// must runs banger and fails the test unless it exits 0.
func (e *env) must(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("banger %s: exit %d\nstdout: %s\nstderr: %s\ndaemon log:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr, e.daemonLog())
	}
	return r.stdout
}

func (e *env) socket() string { return filepath.Join(e.home, "run", "bangerd.sock") }

func (e *env) daemonLog() string {
	b, _ := os.ReadFile(filepath.Join(e.home, "state", "bangerd.log"))
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

// daemonPID reads the pid from the daemon's lock file (0 if none).
func (e *env) daemonPID() int {
	b, err := os.ReadFile(filepath.Join(e.home, "run", "bangerd.lock"))
	if err != nil {
		return 0
	}
	var pid int
	for _, c := range strings.TrimSpace(string(b)) {
		if c < '0' || c > '9' {
			return 0
		}
		pid = pid*10 + int(c-'0')
	}
	return pid
}

// stopDaemon stops the daemon through the CLI and makes sure it is gone.
func (e *env) stopDaemon() {
	pid := e.daemonPID()
	cmd := exec.Command(e.bins.Banger, "daemon", "stop")
	cmd.Env = e.environ()
	_ = cmd.Run()
	if pid > 0 && syscall.Kill(pid, 0) == nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
