package vmproc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func startSleep(t *testing.T, dir string) *Process {
	t.Helper()
	p, err := Start(Command{Path: "/bin/sleep", Args: []string{"300"}, LogFile: filepath.Join(dir, "log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Signal(syscall.SIGKILL)
		<-p.Done()
	})
	return p
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStartDetachedAndReap(t *testing.T) {
	dir := t.TempDir()
	p := startSleep(t, dir)
	if !p.Child() || p.StartTime() == 0 {
		t.Fatalf("child=%v start=%d", p.Child(), p.StartTime())
	}
	sid, err := unix.Getsid(p.PID())
	if err != nil {
		t.Fatal(err)
	}
	if sid != p.PID() {
		t.Errorf("session id %d, want own session %d", sid, p.PID())
	}
	stdin, err := os.Readlink("/proc/" + strconv.Itoa(p.PID()) + "/fd/0")
	if err != nil || stdin != "/dev/null" {
		t.Errorf("stdin = %q, %v; want /dev/null", stdin, err)
	}
	stdout, _ := os.Readlink("/proc/" + strconv.Itoa(p.PID()) + "/fd/1")
	if stdout != filepath.Join(dir, "log") {
		t.Errorf("stdout = %q, want the log file", stdout)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait(waitCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !st.Known || st.Signal != syscall.SIGTERM {
		t.Errorf("status %+v, want killed by SIGTERM", st)
	}
	if _, err := StartTimeOf(p.PID()); err == nil {
		t.Errorf("pid %d still in /proc after reaping", p.PID())
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("signal after exit: %v, want ErrProcessDone", err)
	}
}

func TestExitCodeAndLog(t *testing.T) {
	dir := t.TempDir()
	p, err := Start(Command{Path: "/bin/sh", Args: []string{"-c", "echo out; echo err >&2; exit 3"},
		LogFile: filepath.Join(dir, "log")})
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait(waitCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !st.Known || st.Code != 3 || st.Success() {
		t.Errorf("status %+v, want exit 3", st)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "log"))
	if string(b) != "out\nerr\n" {
		t.Errorf("log = %q", b)
	}
}

func TestAttach(t *testing.T) {
	p := startSleep(t, t.TempDir())
	if _, err := Attach(p.PID(), p.StartTime()+1, ""); !errors.Is(err, ErrGone) {
		t.Errorf("attach with wrong start time: %v, want ErrGone", err)
	}
	if _, err := Attach(p.PID(), p.StartTime(), "no-such-arg"); !errors.Is(err, ErrGone) {
		t.Errorf("attach with wrong command line: %v, want ErrGone", err)
	}
	a, err := Attach(p.PID(), p.StartTime(), "300")
	if err != nil {
		t.Fatal(err)
	}
	if a.Child() || a.Exited() {
		t.Fatalf("attached: child=%v exited=%v", a.Child(), a.Exited())
	}
	if err := a.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st, err := a.Wait(waitCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Known {
		t.Errorf("attached status %+v should be unknown", st)
	}
	a.Release()
	if st, _ := p.Wait(waitCtx(t)); st.Signal != syscall.SIGKILL {
		t.Errorf("child status %+v, want SIGKILL", st)
	}
	if _, err := Attach(p.PID(), p.StartTime(), ""); !errors.Is(err, ErrGone) {
		t.Errorf("attach after exit: %v, want ErrGone", err)
	}
}

// TestSurvivesParent starts a process from a short-lived parent (this test
// binary re-executed), checks it outlives the parent, then adopts it.
func TestSurvivesParent(t *testing.T) {
	if os.Getenv("VMPROC_PARENT") != "" {
		p, err := Start(Command{Path: "/bin/sleep", Args: []string{"301"}, LogFile: os.Getenv("VMPROC_PARENT")})
		if err != nil {
			os.Exit(2)
		}
		os.Stdout.WriteString(strconv.Itoa(p.PID()) + " " + strconv.FormatUint(p.StartTime(), 10) + "\n")
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSurvivesParent$")
	cmd.Env = append(os.Environ(), "VMPROC_PARENT="+filepath.Join(t.TempDir(), "log"))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("parent: %v", err)
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		t.Fatalf("parent printed %q", out)
	}
	pid, _ := strconv.Atoi(f[0])
	start, _ := strconv.ParseUint(f[1], 10, 64)
	a, err := Attach(pid, start, "301")
	if err != nil {
		t.Fatalf("process did not survive its parent: %v", err)
	}
	t.Cleanup(func() { _ = a.Signal(syscall.SIGKILL) })
	if a.Exited() {
		t.Fatal("adopted process reported exited")
	}
	if err := a.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Wait(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
}

func TestParseStat(t *testing.T) {
	line := "123 (qemu (x) y) S 1 123 123 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 3 0 98765 1000 10 18446744073709551615\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.State != 'S' || st.StartTime != 98765 {
		t.Errorf("got %+v", st)
	}
	if _, err := parseStat([]byte("12 (x) S 1 2")); err == nil {
		t.Error("short line parsed")
	}
}
