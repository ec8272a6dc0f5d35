package agentclient_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/agent"
	"github.com/bangerdev/banger/internal/agentclient"
	"github.com/bangerdev/banger/internal/errkind"
)

// fakeFirecracker imitates Firecracker's host-side vsock socket: it reads
// "CONNECT <port>\n", drops the first connections (as Firecracker does
// while the guest is not listening yet), then answers OK and hands the
// connection to a real agent.
func fakeFirecracker(t *testing.T, refuse int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "v.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); l.Close() })
	srv := agent.NewServer(agent.Config{Version: "fc-test"})
	go func() {
		for i := 0; ; i++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || line != "CONNECT 1024\n" || i < refuse {
				c.Close()
				continue
			}
			c.Write([]byte("OK 1073741878\n"))
			go srv.ServeConn(ctx, c)
		}
	}()
	return path
}

func TestDialVsock(t *testing.T) {
	path := fakeFirecracker(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := agentclient.DialVsock(ctx, path, 1024)
	if err != nil {
		t.Fatal(err)
	}
	c, err := agentclient.NewContext(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h, err := c.Health(ctx)
	if err != nil || h.AgentVersion != "fc-test" {
		t.Fatalf("health %+v %v", h, err)
	}
}

func TestDialVsockGivesUp(t *testing.T) {
	path := fakeFirecracker(t, 1<<30)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := agentclient.DialVsock(ctx, path, 1024); !errors.Is(err, errkind.Unavailable) {
		t.Fatalf("got %v", err)
	}
}

func TestClientSessionEnds(t *testing.T) {
	path := fakeFirecracker(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := agentclient.DialVsock(ctx, path, 1024)
	if err != nil {
		t.Fatal(err)
	}
	c, err := agentclient.NewContext(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close() // the VM went away
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed")
	}
	if _, err := c.Health(ctx); !errors.Is(err, errkind.Unavailable) {
		t.Fatalf("health after close: %v", err)
	}
}
