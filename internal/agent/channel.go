package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// portEOFPause is how long to wait after a virtio-serial read returned EOF
// (no host connected) before reading again.
const portEOFPause = 100 * time.Millisecond

// ServePort serves the host over a byte stream with virtio-serial
// semantics: it stays open across host connections, reads return EOF while
// no host is connected, and bytes from an earlier host session may still
// be queued. open is called to (re)open the port after a read error.
// Sessions are served one after another; a new host connection resets any
// stale session through the handshake. It returns when ctx ends.
func (s *Server) ServePort(ctx context.Context, open func() (io.ReadWriteCloser, error)) error {
	failures := 0
	for ctx.Err() == nil {
		port, err := open()
		if err != nil {
			if failures == 0 {
				s.logf("opening host channel: %v (retrying)", err)
			}
			failures++
			sleepCtx(ctx, time.Second)
			continue
		}
		failures = 0
		err = s.servePort(ctx, port)
		port.Close()
		if err != nil && ctx.Err() == nil {
			s.logf("host channel: %v (reopening)", err)
			sleepCtx(ctx, time.Second)
		}
	}
	return ctx.Err()
}

// servePort runs sessions on port until reading it fails.
func (s *Server) servePort(ctx context.Context, port io.ReadWriteCloser) error {
	p := &pump{port: port, next: make(chan *io.PipeWriter, 1), dead: make(chan struct{}), quit: make(chan struct{})}
	stop := context.AfterFunc(ctx, func() { port.Close() })
	defer stop()
	defer close(p.quit)
	go p.run()
	for {
		pr, pw := io.Pipe()
		select {
		case p.next <- pw:
		case <-p.dead:
			return p.err
		}
		sc := &portSession{r: pr, port: port, mu: &p.writeMu}
		if err := s.ServeConn(ctx, sc); err != nil && ctx.Err() == nil && !errors.Is(err, io.EOF) {
			s.logf("session ended: %v", err)
		}
		sc.Close()
		if d, ok := port.(writeDeadliner); ok {
			_ = d.SetWriteDeadline(time.Time{}) // no writer of that session is left
		}
		select {
		case <-p.dead:
			return p.err
		default:
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// pump is the only reader of the port. It feeds the current session's pipe
// and hands bytes a finished session did not take to the next one, so that
// no goroutine of an old session can steal data from a new one.
type pump struct {
	port    io.ReadWriteCloser
	next    chan *io.PipeWriter
	dead    chan struct{} // closed when run returns
	quit    chan struct{} // closed when servePort returns
	err     error
	writeMu sync.Mutex
}

func (p *pump) run() {
	defer close(p.dead)
	var cur *io.PipeWriter
	buf := make([]byte, 64<<10)
	for {
		n, err := p.port.Read(buf)
		if n > 0 {
			data := buf[:n]
			for len(data) > 0 {
				if cur == nil {
					select {
					case cur = <-p.next:
					case <-p.quit:
						return
					}
				}
				w, werr := cur.Write(data)
				data = data[w:]
				if werr != nil {
					cur = nil // that session is over; give the rest to the next
				}
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			// No host connected: end the session, if any, and poll again.
			if cur != nil {
				cur.Close()
				cur = nil
			}
			time.Sleep(portEOFPause)
		default:
			if cur != nil {
				cur.CloseWithError(err)
			}
			p.err = fmt.Errorf("reading host channel: %w", err)
			return
		}
	}
}

// portSession is one session's view of the port.
type portSession struct {
	r      *io.PipeReader
	port   io.Writer
	mu     *sync.Mutex // serialises writes to the port
	closed atomic.Bool
}

// writeDeadliner is implemented by ports (pollable *os.File) whose writes
// can be interrupted.
type writeDeadliner interface {
	SetWriteDeadline(time.Time) error
}

func (c *portSession) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *portSession) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	return c.port.Write(b)
}

// Close ends the session. A write blocked because the host went away
// (virtio-serial writes wait for a host) is interrupted, so that the
// session, and the processes it started, end now rather than when a host
// connects again.
func (c *portSession) Close() error {
	if !c.closed.Swap(true) {
		if d, ok := c.port.(writeDeadliner); ok {
			_ = d.SetWriteDeadline(time.Unix(1, 0))
		}
	}
	return c.r.Close()
}

// FindVirtioPort returns the /dev path of the virtio-serial port called
// name, looking under sysRoot (normally /sys).
func FindVirtioPort(sysRoot, name string) (string, error) {
	dirs, err := filepath.Glob(filepath.Join(sysRoot, "class/virtio-ports/*/name"))
	if err != nil {
		return "", err
	}
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(b)) == name {
			return "/dev/" + filepath.Base(filepath.Dir(f)), nil
		}
	}
	return "", fmt.Errorf("virtio-serial port %q not found", name)
}

// OpenVirtioPort waits for the named port to appear and opens it.
func OpenVirtioPort(ctx context.Context, name string) (io.ReadWriteCloser, error) {
	start := time.Now()
	for {
		dev, err := FindVirtioPort("/sys", name)
		if err == nil {
			if _, serr := os.Stat(dev); serr != nil {
				if err := mknodFromSys(dev, filepath.Join("/sys/class/virtio-ports", filepath.Base(dev), "dev"), unix.S_IFCHR); err != nil {
					return nil, err
				}
			}
			f, err := os.OpenFile(dev, os.O_RDWR|unix.O_NOCTTY, 0)
			if err != nil {
				return nil, fmt.Errorf("opening %s: %w", dev, err)
			}
			return f, nil
		}
		delay := 20 * time.Millisecond
		if time.Since(start) > 5*time.Second {
			delay = openRetryDelay // probably not a QEMU guest: look now and then
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for virtio-serial port %q: %w", name, ctx.Err())
		case <-time.After(delay):
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
