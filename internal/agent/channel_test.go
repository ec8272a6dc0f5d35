package agent_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent"
	"github.com/bangerdev/banger/internal/agentclient"
	"github.com/bangerdev/banger/internal/agentproto"
)

// fakePort stands in for a guest virtio-serial port (which cannot exist on
// the host): it stays open across host connections, reads return EOF
// while no host is attached, and writes are dropped then.
type fakePort struct {
	mu     sync.Mutex
	conn   net.Conn
	closed bool
}

// attach connects a new host and returns the host's end.
func (p *fakePort) attach(t *testing.T) net.Conn {
	host, guest := socketPair(t)
	p.mu.Lock()
	p.conn = guest
	p.mu.Unlock()
	return host
}

func (p *fakePort) current() (net.Conn, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conn, p.closed
}

func (p *fakePort) Read(b []byte) (int, error) {
	c, closed := p.current()
	if closed {
		return 0, os.ErrClosed
	}
	if c == nil {
		return 0, io.EOF
	}
	n, err := c.Read(b)
	if err != nil {
		p.mu.Lock()
		if p.conn == c {
			p.conn = nil
		}
		p.mu.Unlock()
		c.Close()
		if n > 0 {
			return n, nil
		}
		return 0, io.EOF
	}
	return n, nil
}

func (p *fakePort) Write(b []byte) (int, error) {
	c, closed := p.current()
	if closed {
		return 0, os.ErrClosed
	}
	if c == nil {
		return len(b), nil
	}
	return c.Write(b)
}

func (p *fakePort) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.conn != nil {
		p.conn.Close()
	}
	return nil
}

func servePort(t *testing.T, cfg agent.Config) *fakePort {
	port := &fakePort{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agent.NewServer(cfg).ServePort(ctx, func() (io.ReadWriteCloser, error) { return port, nil })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return port
}

func echoOnce(t *testing.T, c *agentclient.Client, word string) {
	t.Helper()
	var out bytes.Buffer
	code, err := c.Exec(testCtx(t), agentproto.ExecRequest{Argv: []string{"echo", word}}, nil, &out, nil)
	if err != nil || code != 0 || out.String() != word+"\n" {
		t.Fatalf("exec: code %d err %v out %q", code, err, out.String())
	}
}

func TestPortReconnectAfterHostDrops(t *testing.T) {
	port := servePort(t, agent.Config{})
	for i := range 3 {
		host := port.attach(t)
		c, err := agentclient.NewContext(testCtx(t), host)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		echoOnce(t, c, "hello-"+strconv.Itoa(i))
		c.Close()
	}
}

// nopCloseConn keeps the underlying connection open when yamux closes it.
type nopCloseConn struct{ net.Conn }

func (nopCloseConn) Close() error { return nil }

func TestPortStaleSessionIsReset(t *testing.T) {
	port := servePort(t, agent.Config{})
	host := port.attach(t)
	old, err := agentclient.NewContext(testCtx(t), nopCloseConn{host})
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, old, "first")
	// Leave an exec running in the old session, then drop the host side
	// without the guest seeing EOF, as when the daemon restarts and
	// reconnects to the same QEMU socket.
	running, err := old.OpenExec(testCtx(t), agentproto.ExecRequest{Argv: []string{"sleep", "30"}})
	if err != nil {
		t.Fatal(err)
	}
	_ = running
	host.SetReadDeadline(time.Unix(1, 0))
	old.Close()
	host.SetReadDeadline(time.Time{})

	start := time.Now()
	c, err := agentclient.NewContext(testCtx(t), host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoOnce(t, c, "second")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("reset took %v", d)
	}
	// The abandoned exec was killed with its session.
	waitFor(t, func() bool { return unix.Kill(running.PID, 0) != nil })
}

func TestReaperMode(t *testing.T) {
	// Become a subreaper so that orphans land on this process, as they
	// would on PID 1 in the guest.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a subreaper: %v", err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	r := agent.NewReaper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	c := startAgent(t, agent.Config{Reaper: r})
	var out bytes.Buffer
	code, err := c.Exec(testCtx(t), agentproto.ExecRequest{Argv: []string{"sh", "-c", "sleep 0.2 & echo $!; exit 3"}}, nil, &out, nil)
	if err != nil || code != 3 {
		t.Fatalf("code %d err %v", code, err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	code, err = c.Exec(testCtx(t), agentproto.ExecRequest{Argv: []string{"sh", "-c", "kill -KILL $$"}}, nil, nil, nil)
	if err != nil || code != 137 {
		t.Fatalf("killed: code %d err %v", code, err)
	}
	code, err = c.Exec(testCtx(t), agentproto.ExecRequest{Argv: []string{"true"}, TTY: true}, nil, nil, nil)
	if err != nil || code != 0 {
		t.Fatalf("tty: code %d err %v", code, err)
	}
	// The orphaned sleep was reaped, not left as a zombie.
	waitFor(t, func() bool {
		_, err := os.Stat("/proc/" + strconv.Itoa(orphan))
		return os.IsNotExist(err)
	})
}
