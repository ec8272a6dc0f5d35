package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
)

func TestDaemonLifecycle(t *testing.T) {
	e := newEnv(t)

	// The first command starts the daemon on its own.
	out := e.must("version")
	if !strings.Contains(out, "bangerd") || !strings.Contains(out, "api v1") {
		t.Fatalf("version output: %q", out)
	}
	pid := e.daemonPID()
	if pid == 0 || syscall.Kill(pid, 0) != nil {
		t.Fatalf("daemon not running after version (pid %d)", pid)
	}

	fi, err := os.Stat(e.socket())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, want socket 0600", fi.Mode())
	}
	if dfi, _ := os.Stat(filepath.Dir(e.socket())); dfi.Mode().Perm() != 0o700 {
		t.Fatalf("runtime dir mode = %v", dfi.Mode().Perm())
	}

	// The API answers over curl-style HTTP on the socket.
	var v struct {
		Version string `json:"version"`
		PID     int    `json:"pid"`
	}
	if err := json.Unmarshal([]byte(e.must("version", "-o", "json")), &v); err != nil {
		t.Fatal(err)
	}
	if curl, err := exec.LookPath("curl"); err == nil {
		b, err := exec.Command(curl, "-sf", "--unix-socket", e.socket(), "http://banger/v1/health").Output()
		if err != nil || !strings.Contains(string(b), `"ok"`) {
			t.Fatalf("curl health: %v %s", err, b)
		}
	}

	// A second daemon on the same socket is refused and changes nothing.
	r := exec.Command(e.bins.Bangerd)
	r.Env = e.environ()
	outb, err := r.CombinedOutput()
	if err == nil || !strings.Contains(string(outb), "another bangerd") {
		t.Fatalf("second daemon: err=%v out=%s", err, outb)
	}
	if e.daemonPID() != pid {
		t.Fatalf("lock file rewritten by the refused daemon")
	}
	e.must("daemon", "status")

	// doctor: PASS/WARN/FAIL rows, JSON form, store opened read-only.
	var rep struct {
		Checks []struct{ Name, Status, Detail string } `json:"checks"`
	}
	r2 := e.run("doctor", "-o", "json")
	if err := json.Unmarshal([]byte(r2.stdout), &rep); err != nil || len(rep.Checks) < 10 {
		t.Fatalf("doctor json: %v %+v", err, r2)
	}
	fails := 0
	for _, c := range rep.Checks {
		switch c.Status {
		case "PASS", "WARN":
		case "FAIL":
			fails++
		default:
			t.Fatalf("bad status %q", c.Status)
		}
		if c.Name == "store" && c.Status != "PASS" {
			t.Fatalf("store check: %+v", c)
		}
	}
	if (fails > 0) != (r2.code != 0) {
		t.Fatalf("doctor exit %d with %d FAIL rows", r2.code, fails)
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if out := e.must("completion", sh); !strings.Contains(out, "banger") {
			t.Fatalf("completion %s: %q", sh, out[:min(len(out), 80)])
		}
	}

	// Stop, then status reports it is down with exit code 3.
	e.must("daemon", "stop")
	if syscall.Kill(pid, 0) == nil {
		time.Sleep(100 * time.Millisecond)
		if syscall.Kill(pid, 0) == nil {
			t.Fatalf("daemon pid %d still alive after stop", pid)
		}
	}
	if r := e.run("daemon", "status"); r.code != 3 || !strings.Contains(r.stdout, "not running") {
		t.Fatalf("status after stop: %+v", r)
	}
	if _, err := os.Stat(e.socket()); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
	if !strings.Contains(e.must("daemon", "logs"), "bangerd listening") {
		t.Fatal("daemon log lacks the start line")
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	e := newEnv(t)
	if err := os.MkdirAll(filepath.Dir(e.socket()), 0o700); err != nil {
		t.Fatal(err)
	}
	// A socket file nobody listens on (a daemon killed with -9).
	l, err := netListenUnix(e.socket())
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	e.must("version")
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	cfgDir := filepath.Join(e.home, "config")
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "config.toml"), []byte("log_levl = \"debug\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.run("version")
	if r.code == 0 || !strings.Contains(r.stderr, "unknown key log_levl") {
		t.Fatalf("malformed config: %+v", r)
	}
	if strings.Count(strings.TrimSpace(r.stderr), "\n") > 1 {
		t.Fatalf("error is not one line plus a hint: %q", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(e.home, "state")); !os.IsNotExist(err) {
		t.Fatalf("malformed config still created the state dir: %v", err)
	}
	os.Remove(filepath.Join(cfgDir, "config.toml"))

	if r := e.run("no-such-command"); r.code != 2 || !strings.HasPrefix(r.stderr, "banger: ") {
		t.Fatalf("unknown command: %+v", r)
	}
	if r := e.run("version", "-o", "yaml"); r.code != 2 {
		t.Fatalf("bad output format: %+v", r)
	}
}

func TestNewerDatabaseRefused(t *testing.T) {
	e := newEnv(t)
	e.must("version")
	e.must("daemon", "stop")
	db := filepath.Join(e.home, "state", "banger.db")
	sqlite(t, db, "INSERT INTO schema_migrations(id, name, applied_at) VALUES (999, 'future', 'x')")
	before, _ := os.ReadFile(db)

	cmd := exec.Command(e.bins.Bangerd, "--check-migrations")
	cmd.Env = e.environ()
	if err := cmd.Run(); exitOf(err) != 2 {
		t.Fatalf("--check-migrations exit = %d, want 2", exitOf(err))
	}
	r := e.run("version")
	if r.code == 0 || !strings.Contains(r.stderr, "newer") {
		t.Fatalf("newer database: %+v", r)
	}
	after, _ := os.ReadFile(db)
	if string(before) != string(after) {
		t.Fatal("database changed")
	}
}

// TestDaemonRestartedWhenBinaryChanges checks the CLI replaces a daemon
// whose binary was rebuilt since it started.
func TestDaemonRestartedWhenBinaryChanges(t *testing.T) {
	e := newEnv(t)
	bin := filepath.Join(t.TempDir(), "bangerd")
	data, err := os.ReadFile(e.bins.Bangerd)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	e.bins.Bangerd = bin
	e.must("version")
	pid := e.daemonPID()
	// A busy daemon is not restarted: a pull hangs on a registry that
	// accepts connections and never answers, and meanwhile the CLI keeps
	// the old daemon (and says so) instead of cutting the pull.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	fakeKernel := filepath.Join(t.TempDir(), "vmlinux") // checked only once the pull is done
	if err := os.WriteFile(fakeKernel, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	pull := exec.Command(e.bins.Banger, "image", "pull", ln.Addr().String()+"/hang:latest", "--kernel", fakeKernel)
	pull.Env = e.environ()
	if err := pull.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var v api.VersionInfo
		cmd := exec.Command("curl", "-s", "--unix-socket", filepath.Join(e.home, "run", "bangerd.sock"), "http://banger/v1/version")
		out, _ := cmd.Output()
		if json.Unmarshal(out, &v) == nil && v.Busy > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon never reported the pull in flight: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	later := time.Now().Add(time.Minute) // the binary is "rebuilt"
	if err := os.Chtimes(bin, later, later); err != nil {
		t.Fatal(err)
	}
	r := e.run("version")
	if r.code != 0 || !strings.Contains(r.stderr, "is busy with 1 operation") || e.daemonPID() != pid {
		t.Fatalf("busy daemon restarted: %+v", r)
	}
	_ = pull.Process.Kill()
	_ = pull.Wait()
	for i := 0; i < 100; i++ { // the daemon sees the client go away
		var v api.VersionInfo
		out, _ := exec.Command("curl", "-s", "--unix-socket", filepath.Join(e.home, "run", "bangerd.sock"), "http://banger/v1/version").Output()
		if json.Unmarshal(out, &v) == nil && v.Busy == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	r = e.run("version")
	if r.code != 0 || !strings.Contains(r.stderr, "restarting bangerd") {
		t.Fatalf("no restart: %+v", r)
	}
	if npid := e.daemonPID(); npid == pid || npid == 0 {
		t.Fatalf("daemon pid %d -> %d", pid, npid)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Fatalf("old daemon %d still alive", pid)
	}
}

// TestConcurrentAutostart starts several CLIs at once against a home with
// no daemon: every one of them must succeed, whichever daemon wins the lock.
func TestConcurrentAutostart(t *testing.T) {
	for round := 0; round < 3; round++ {
		e := newEnv(t)
		const n = 4
		errs := make(chan string, n)
		for i := 0; i < n; i++ {
			go func() {
				cmd := exec.Command(e.bins.Banger, "image", "list", "-o", "json")
				cmd.Env = e.environ()
				out, err := cmd.CombinedOutput()
				if err != nil {
					errs <- fmt.Sprintf("%v: %s", err, out)
					return
				}
				errs <- ""
			}()
		}
		for i := 0; i < n; i++ {
			if msg := <-errs; msg != "" {
				t.Errorf("round %d: a concurrent first command failed: %s", round, msg)
			}
		}
		e.stopDaemon()
	}
}
