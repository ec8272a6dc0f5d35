package agent_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent"
	"github.com/bangerdev/banger/internal/agentclient"
	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/errkind"
)

// socketPair returns two connected unix stream sockets.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startAgent serves one session on a socket pair and returns a connected client.
func startAgent(t *testing.T, cfg agent.Config) *agentclient.Client {
	t.Helper()
	hostEnd, guestEnd := socketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agent.NewServer(cfg).ServeConn(ctx, guestEnd)
	}()
	c, err := agentclient.NewContext(testCtx(t), hostEnd)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		cancel()
		<-done
	})
	return c
}

func TestHealth(t *testing.T) {
	c := startAgent(t, agent.Config{Version: "1.2.3-test"})
	h, err := c.Health(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if h.BootID != strings.TrimSpace(string(want)) {
		t.Errorf("boot id %q, want %q", h.BootID, want)
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	if h.KernelRelease != unix.ByteSliceToString(uts.Release[:]) {
		t.Errorf("kernel release %q", h.KernelRelease)
	}
	if h.AgentVersion != "1.2.3-test" || c.AgentVersion() != "1.2.3-test" {
		t.Errorf("agent version %q / %q", h.AgentVersion, c.AgentVersion())
	}
	if h.InitMode != agent.ModeStandalone || h.UptimeSeconds <= 0 || h.ProtocolVersion != agentproto.ProtocolVersion {
		t.Errorf("health %+v", h)
	}
}

func TestExecOutputAndExitCode(t *testing.T) {
	c := startAgent(t, agent.Config{})
	var out, errb bytes.Buffer
	code, err := c.Exec(testCtx(t), agentproto.ExecRequest{Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 7"}}, nil, &out, &errb)
	if err != nil {
		t.Fatal(err)
	}
	if code != 7 || out.String() != "out\n" || errb.String() != "err\n" {
		t.Fatalf("code %d stdout %q stderr %q", code, out.String(), errb.String())
	}
}

func TestExecKilledBySignal(t *testing.T) {
	c := startAgent(t, agent.Config{})
	code, err := c.Exec(testCtx(t), agentproto.ExecRequest{Argv: []string{"sh", "-c", "kill -TERM $$"}}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code != 128+int(syscall.SIGTERM) {
		t.Fatalf("code %d, want %d", code, 128+int(syscall.SIGTERM))
	}
}

func TestExecSignalFrame(t *testing.T) {
	c := startAgent(t, agent.Config{})
	ctx := testCtx(t)
	ec, err := c.OpenExec(ctx, agentproto.ExecRequest{Argv: []string{"sh", "-c", "echo ready; exec sleep 60"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	if ec.PID <= 0 {
		t.Errorf("pid %d", ec.PID)
	}
	es := agentproto.NewExecStream(ec)
	pr, pw := io.Pipe()
	go func() {
		buf := make([]byte, 6)
		if _, err := io.ReadFull(pr, buf); err == nil {
			_ = es.Signal(int(syscall.SIGINT))
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	st, err := es.Wait(pw, nil)
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	if st.Code != 130 || st.Signal != int(syscall.SIGINT) {
		t.Fatalf("exit %+v, want code 130 signal 2", st)
	}
}

func TestExecStdin(t *testing.T) {
	c := startAgent(t, agent.Config{})
	in := strings.Repeat("banger stdin line\n", 20000) // larger than the stream window
	var out bytes.Buffer
	code, err := c.Exec(testCtx(t), agentproto.ExecRequest{Argv: []string{"cat"}}, strings.NewReader(in), &out, nil)
	if err != nil || code != 0 {
		t.Fatalf("code %d err %v", code, err)
	}
	if out.String() != in {
		t.Fatalf("stdout has %d bytes, want %d", out.Len(), len(in))
	}
}

func TestExecEnvCwd(t *testing.T) {
	c := startAgent(t, agent.Config{})
	dir := t.TempDir()
	var out bytes.Buffer
	code, err := c.Exec(testCtx(t), agentproto.ExecRequest{
		Argv: []string{"sh", "-c", `echo "$FOO"; pwd; echo "$PATH"`},
		Env:  []string{"FOO=bar baz", "PATH=/usr/bin:/bin:/custom"},
		Cwd:  dir,
	}, nil, &out, nil)
	if err != nil || code != 0 {
		t.Fatalf("code %d err %v", code, err)
	}
	want := "bar baz\n" + dir + "\n/usr/bin:/bin:/custom\n"
	if out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}

func TestExecUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root")
	}
	c := startAgent(t, agent.Config{})
	for _, tc := range []struct{ user, want string }{
		{"nobody", "65534 65534 /nonexistent\n"},
		{"1234:4321", "1234 4321 /\n"},
		{"", "0 0 /root\n"},
	} {
		var out bytes.Buffer
		code, err := c.Exec(testCtx(t), agentproto.ExecRequest{
			Argv: []string{"sh", "-c", `echo "$(id -u) $(id -g) $HOME"`},
			User: tc.user, Cwd: "/",
		}, nil, &out, nil)
		if err != nil || code != 0 {
			t.Fatalf("user %q: code %d err %v", tc.user, code, err)
		}
		if out.String() != tc.want {
			t.Errorf("user %q: got %q, want %q", tc.user, out.String(), tc.want)
		}
	}
	_, err := c.Exec(testCtx(t), agentproto.ExecRequest{Argv: []string{"true"}, User: "no-such-user-xyz"}, nil, nil, nil)
	if !errors.Is(err, errkind.NotFound) {
		t.Errorf("unknown user: %v, want not found", err)
	}
}

func TestExecStartErrors(t *testing.T) {
	c := startAgent(t, agent.Config{})
	code, err := c.Exec(testCtx(t), agentproto.ExecRequest{Argv: []string{"no-such-command-banger"}}, nil, nil, nil)
	if !errors.Is(err, errkind.NotFound) || code != -1 {
		t.Errorf("missing command: code %d err %v", code, err)
	}
	_, err = c.Exec(testCtx(t), agentproto.ExecRequest{Argv: []string{"true"}, Cwd: "/no/such/dir"}, nil, nil, nil)
	if !errors.Is(err, errkind.NotFound) {
		t.Errorf("missing cwd: %v", err)
	}
	// The session is still usable afterwards.
	if _, err := c.Health(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

func TestExecCancelKillsProcess(t *testing.T) {
	c := startAgent(t, agent.Config{})
	marker := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, agentproto.ExecRequest{Argv: []string{"sh", "-c", "echo $$ > " + marker + "; exec sleep 60"}}, nil, nil, nil)
		errc <- err
	}()
	var pid int
	waitFor(t, func() bool {
		b, err := os.ReadFile(marker)
		if err != nil || len(b) == 0 {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	cancel()
	if err := <-errc; !errors.Is(err, errkind.Canceled) {
		t.Errorf("exec error %v, want canceled", err)
	}
	waitFor(t, func() bool { return unix.Kill(pid, 0) != nil })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestShutdown(t *testing.T) {
	got := make(chan agentproto.ShutdownMode, 1)
	c := startAgent(t, agent.Config{Shutdown: func(m agentproto.ShutdownMode) { got <- m }})
	if err := c.Shutdown(testCtx(t), agentproto.ShutdownReboot); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != agentproto.ShutdownReboot {
			t.Fatalf("mode %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown hook not called")
	}
	c2 := startAgent(t, agent.Config{})
	if err := c2.Shutdown(testCtx(t), agentproto.ShutdownPoweroff); !errors.Is(err, errkind.Unavailable) {
		t.Fatalf("shutdown without hook: %v", err)
	}
}

func TestExecLoginShell(t *testing.T) {
	c := startAgent(t, agent.Config{})
	var out bytes.Buffer
	// No argv: the user's login shell, reading commands from stdin.
	code, err := c.Exec(testCtx(t), agentproto.ExecRequest{Cwd: "/"}, strings.NewReader("echo \"shell=$0 home=$HOME\"; exit 3\n"), &out, nil)
	if err != nil || code != 3 {
		t.Fatalf("code %d err %v", code, err)
	}
	if !strings.Contains(out.String(), "shell=-") || !strings.Contains(out.String(), "home=") {
		t.Fatalf("output %q", out.String())
	}
}
