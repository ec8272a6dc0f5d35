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
	p := newPump(port)
	stop := context.AfterFunc(ctx, func() { port.Close() })
	defer stop()
	defer p.stop()
	go p.run()
	for {
		sc := p.newSession()
		if sc == nil {
			return p.failure()
		}
		if err := s.ServeConn(ctx, sc); err != nil && ctx.Err() == nil && !errors.Is(err, io.EOF) {
			s.logf("session ended: %v", err)
		}
		sc.Close()
		if d, ok := port.(writeDeadliner); ok {
			// Once the session's last write (interrupted by Close) has
			// returned, writes may block again.
			p.writeMu.Lock()
			_ = d.SetWriteDeadline(time.Time{})
			p.writeMu.Unlock()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// portReadAhead bounds the bytes the pump reads ahead of the session.
const portReadAhead = 1 << 20

// portChunk is the size of the pump's buffers; a read goes into the free
// end of the last one when at least portMinRead bytes are free there.
const (
	portChunk   = 64 << 10
	portMinRead = 4 << 10
)

// pump is the only reader of the port. It reads ahead into a queue that
// the current session reads from; bytes a finished session did not take
// stay for the next one, so no goroutine of an old session can steal data
// from a new one. Reading ahead lets one session read take everything that
// arrived meanwhile: a virtio-serial read returns at most one 4 KiB buffer.
type pump struct {
	port    io.ReadWriteCloser
	mu      sync.Mutex
	cond    sync.Cond // queue changed, or stopped
	queue   []segment
	free    [][]byte // recycled chunks
	queued  int      // unread data bytes in queue
	err     error    // the read error that ended run
	dead    bool     // run returned
	quit    bool     // servePort returned
	writeMu sync.Mutex
}

// segment is a chunk of bytes (read from off to len; the pump reads into
// its spare capacity while it is last), or the end of a host connection
// (io.EOF) or of the port (another error).
type segment struct {
	data []byte
	off  int
	end  error
}

func newPump(port io.ReadWriteCloser) *pump {
	p := &pump{port: port}
	p.cond.L = &p.mu
	return p
}

// newSession starts the next session, or returns nil when reading the port
// failed.
func (p *pump) newSession() *portSession {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead {
		return nil
	}
	return &portSession{p: p}
}

func (p *pump) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *pump) stop() {
	p.mu.Lock()
	p.quit = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

// tail returns the last segment when it is a chunk with room for a read,
// appending a new chunk otherwise. The caller holds p.mu.
func (p *pump) tail() *segment {
	if n := len(p.queue); n > 0 {
		if t := &p.queue[n-1]; t.end == nil && cap(t.data)-len(t.data) >= portMinRead {
			return t
		}
	}
	var buf []byte
	if n := len(p.free); n > 0 {
		buf, p.free = p.free[n-1], p.free[:n-1]
	} else {
		buf = make([]byte, 0, portChunk)
	}
	p.queue = append(p.queue, segment{data: buf})
	return &p.queue[len(p.queue)-1]
}

// pop drops the first segment, recycling its chunk. The caller holds p.mu.
func (p *pump) pop() {
	if d := p.queue[0].data; d != nil && len(p.free) < 4 {
		p.free = append(p.free, d[:0])
	}
	p.queue = append(p.queue[:0], p.queue[1:]...)
}

// end queues the end of a host connection or of the port. The caller holds
// p.mu.
func (p *pump) end(err error) {
	p.queue = append(p.queue, segment{end: err})
	p.cond.Broadcast()
}

func (p *pump) run() {
	defer func() {
		p.mu.Lock()
		p.dead = true
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	for {
		p.mu.Lock()
		for p.queued >= portReadAhead && !p.quit {
			p.cond.Wait()
		}
		if p.quit {
			p.mu.Unlock()
			return
		}
		t := p.tail()
		data := t.data
		p.mu.Unlock()
		// Only the pump touches the spare capacity of the last chunk, and
		// the reader does not drop the last chunk while it has room.
		n, err := p.port.Read(data[len(data):cap(data)])
		p.mu.Lock()
		if n > 0 {
			t := &p.queue[len(p.queue)-1]
			t.data = t.data[:len(t.data)+n]
			p.queued += n
			p.cond.Broadcast()
		}
		switch {
		case err == nil:
			p.mu.Unlock()
		case errors.Is(err, io.EOF):
			// No host connected: end the session, if any, and poll again.
			if k := len(p.queue); k == 0 || p.queue[k-1].end != io.EOF {
				p.end(io.EOF)
			}
			p.mu.Unlock()
			time.Sleep(portEOFPause)
		default:
			p.err = fmt.Errorf("reading host channel: %w", err)
			p.end(p.err)
			p.mu.Unlock()
			return
		}
	}
}

// portSession is one session's view of the port.
type portSession struct {
	p      *pump
	got    bool  // has read data (guarded by p.mu)
	end    error // the end it read (guarded by p.mu)
	closed atomic.Bool
}

// writeDeadliner is implemented by ports (pollable *os.File) whose writes
// can be interrupted.
type writeDeadliner interface {
	SetWriteDeadline(time.Time) error
}

// Read returns what the pump has queued, up to the end of the host
// connection.
func (c *portSession) Read(b []byte) (int, error) {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		switch {
		case c.closed.Load():
			return 0, net.ErrClosed
		case c.end != nil:
			return 0, c.end
		case len(p.queue) > 0:
		case p.dead || p.quit:
			return 0, net.ErrClosed
		default:
			p.cond.Wait()
			continue
		}
		seg := &p.queue[0]
		if seg.end == nil {
			if seg.off < len(seg.data) {
				break
			}
			if len(p.queue) == 1 && cap(seg.data)-len(seg.data) >= portMinRead {
				// The pump may be reading into it.
				p.cond.Wait()
				continue
			}
			p.pop()
			continue
		}
		end := seg.end
		p.pop()
		if end == io.EOF && !c.got {
			continue // the end of an earlier host connection
		}
		c.end = end
		return 0, end
	}
	n := 0
	for n < len(b) && len(p.queue) > 0 && p.queue[0].end == nil {
		seg := &p.queue[0]
		k := copy(b[n:], seg.data[seg.off:])
		n += k
		seg.off += k
		if seg.off < len(seg.data) || (len(p.queue) == 1 && cap(seg.data)-len(seg.data) >= portMinRead) {
			break
		}
		p.pop()
	}
	p.queued -= n
	c.got = true
	p.cond.Broadcast()
	return n, nil
}

func (c *portSession) Write(b []byte) (int, error) {
	c.p.writeMu.Lock()
	defer c.p.writeMu.Unlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	return c.p.port.Write(b)
}

// Close ends the session. A write blocked because the host went away
// (virtio-serial writes wait for a host) is interrupted, so that the
// session, and the processes it started, end now rather than when a host
// connects again.
func (c *portSession) Close() error {
	if !c.closed.Swap(true) {
		if d, ok := c.p.port.(writeDeadliner); ok {
			_ = d.SetWriteDeadline(time.Unix(1, 0))
		}
		c.p.mu.Lock()
		c.p.cond.Broadcast()
		c.p.mu.Unlock()
	}
	return nil
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
