package agent

import (
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// vsockAddr is an AF_VSOCK address.
type vsockAddr struct{ cid, port uint32 }

func (a vsockAddr) Network() string { return "vsock" }
func (a vsockAddr) String() string  { return fmt.Sprintf("%d:%d", a.cid, a.port) }

// ListenVsock listens on an AF_VSOCK stream port (any CID).
func ListenVsock(port uint32) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("creating vsock socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding vsock port %d: %w", port, err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listening on vsock port %d: %w", port, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("setting vsock listener non-blocking: %w", err)
	}
	return &vsockListener{f: os.NewFile(uintptr(fd), "vsock-listener"), port: port}, nil
}

type vsockListener struct {
	f    *os.File
	port uint32
}

func (l *vsockListener) Accept() (net.Conn, error) {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var sa unix.Sockaddr
	var aerr error
	err = rc.Read(func(fd uintptr) bool {
		nfd, sa, aerr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		return aerr != unix.EAGAIN
	})
	if err != nil {
		return nil, err
	}
	if aerr != nil {
		return nil, fmt.Errorf("accepting vsock connection: %w", aerr)
	}
	remote := vsockAddr{}
	if vm, ok := sa.(*unix.SockaddrVM); ok {
		remote = vsockAddr{vm.CID, vm.Port}
	}
	return &fileConn{File: os.NewFile(uintptr(nfd), "vsock"), local: vsockAddr{unix.VMADDR_CID_ANY, l.port}, remote: remote}, nil
}

func (l *vsockListener) Close() error   { return l.f.Close() }
func (l *vsockListener) Addr() net.Addr { return vsockAddr{unix.VMADDR_CID_ANY, l.port} }

// fileConn is a net.Conn on a pollable socket descriptor.
type fileConn struct {
	*os.File
	local, remote net.Addr
}

func (c *fileConn) LocalAddr() net.Addr  { return c.local }
func (c *fileConn) RemoteAddr() net.Addr { return c.remote }
func (c *fileConn) SetDeadline(t time.Time) error {
	return c.File.SetDeadline(t)
}

// mknodFromSys creates the device node dev from a sysfs "dev" file (major:minor).
func mknodFromSys(dev, sysDev string, kind uint32) error {
	b, err := os.ReadFile(sysDev)
	if err != nil {
		return fmt.Errorf("reading %s: %w", sysDev, err)
	}
	var major, minor uint32
	if _, err := fmt.Sscanf(string(b), "%d:%d", &major, &minor); err != nil {
		return fmt.Errorf("parsing %s: %w", sysDev, err)
	}
	if err := unix.Mknod(dev, kind|0o600, int(unix.Mkdev(major, minor))); err != nil && err != unix.EEXIST {
		return fmt.Errorf("creating %s: %w", dev, err)
	}
	return nil
}
