package agent_test

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent"
	"github.com/bangerdev/banger/internal/agentclient"
)

// TestVsockListener serves a session on an AF_VSOCK listener and connects
// to it through the local (loopback) transport, when the host has one.
func TestVsockListener(t *testing.T) {
	ln, err := agent.ListenVsock(52011)
	if err != nil {
		t.Skipf("no vsock here: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agent.NewServer(agent.Config{}).ServeListener(ctx, ln)
	}()
	t.Cleanup(func() { cancel(); <-done })

	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_LOCAL, Port: 52011}); err != nil {
		unix.Close(fd)
		t.Skipf("listening works, but no local vsock transport to connect through: %v", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	conn := fileConn{os.NewFile(uintptr(fd), "vsock")} // non-blocking: pollable
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	c, err := agentclient.NewContext(cctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoOnce(t, c, "over-vsock")
}

// fileConn adapts a connected socket file to net.Conn (net.FileConn does
// not know AF_VSOCK).
type fileConn struct{ *os.File }

func (fileConn) LocalAddr() net.Addr  { return vsockTestAddr{} }
func (fileConn) RemoteAddr() net.Addr { return vsockTestAddr{} }

type vsockTestAddr struct{}

func (vsockTestAddr) Network() string { return "vsock" }
func (vsockTestAddr) String() string  { return "vsock" }
