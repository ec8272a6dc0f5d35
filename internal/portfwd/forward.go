package portfwd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
)

// DialFunc opens a connection to a guest port: "tcp" gives a stream,
// "udp" a connection whose Reads and Writes are whole datagrams
// (agentclient.Client.Dial).
type DialFunc func(ctx context.Context, network string, port int) (net.Conn, error)

// Timeouts.
const (
	dialTimeout    = 15 * time.Second
	udpIdleTimeout = 2 * time.Minute
)

// Forwarder is one active forward.
type Forwarder struct {
	spec Spec
	dial DialFunc
	log  *slog.Logger

	ln net.Listener   // tcp
	pc net.PacketConn // udp

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[io.Closer]struct{}
	flows map[string]*udpFlow

	accepted atomic.Int64
}

// Start binds the host side of spec and serves it until Close.
func Start(spec Spec, dial DialFunc, log *slog.Logger) (*Forwarder, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Forwarder{spec: spec, dial: dial, log: log, ctx: ctx, cancel: cancel,
		conns: map[io.Closer]struct{}{}, flows: map[string]*udpFlow{}}
	var err error
	switch spec.Proto {
	case "tcp":
		f.ln, err = net.Listen("tcp", spec.HostEndpoint())
	case "udp":
		f.pc, err = net.ListenPacket("udp", spec.HostEndpoint())
	default:
		err = errkind.New(errkind.InvalidArgument, "unknown protocol %q", spec.Proto)
	}
	if err != nil {
		cancel()
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, errkind.WithHint(errkind.New(errkind.Conflict, "host port %s/%s is already in use", spec.HostEndpoint(), spec.Proto),
				"pick another host port, e.g. "+altSpec(spec))
		}
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			return nil, errkind.New(errkind.InvalidArgument, "host address %s is not an address of this host", spec.HostAddr)
		}
		return nil, errkind.Wrap(errkind.Unavailable, err, "listening on %s/%s", spec.HostEndpoint(), spec.Proto)
	}
	f.wg.Add(1)
	if f.ln != nil {
		go f.serveTCP()
	} else {
		go f.serveUDP()
	}
	return f, nil
}

func altSpec(s Spec) string {
	alt := s
	alt.HostPort = s.HostPort + 10000
	if alt.HostPort > 65535 {
		alt.HostPort = s.HostPort - 1
	}
	return alt.String()
}

// Spec returns the forward's spec.
func (f *Forwarder) Spec() Spec { return f.spec }

// Addr is the bound host address.
func (f *Forwarder) Addr() net.Addr {
	if f.ln != nil {
		return f.ln.Addr()
	}
	return f.pc.LocalAddr()
}

// Accepted counts TCP connections or UDP peers served so far.
func (f *Forwarder) Accepted() int64 { return f.accepted.Load() }

// Close stops listening and ends every connection.
func (f *Forwarder) Close() error {
	f.cancel()
	var err error
	if f.ln != nil {
		err = f.ln.Close()
	} else {
		err = f.pc.Close()
	}
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	for _, fl := range f.flows {
		fl.close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	return err
}

func (f *Forwarder) track(c io.Closer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ctx.Err() != nil {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Forwarder) untrack(c io.Closer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.conns, c)
}

func (f *Forwarder) serveTCP() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if f.ctx.Err() == nil {
				f.log.Warn("forward stopped accepting", "forward", f.spec.String(), "err", err)
			}
			return
		}
		f.accepted.Add(1)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.handleTCP(c)
		}()
	}
}

type closeWriter interface{ CloseWrite() error }

func (f *Forwarder) handleTCP(hc net.Conn) {
	if !f.track(hc) {
		hc.Close()
		return
	}
	defer f.untrack(hc)
	defer hc.Close()
	ctx, cancel := context.WithTimeout(f.ctx, dialTimeout)
	gc, err := f.dial(ctx, "tcp", f.spec.GuestPort)
	cancel()
	if err != nil {
		f.log.Info("forward: guest dial failed", "forward", f.spec.String(), "err", err)
		return
	}
	if !f.track(gc) {
		gc.Close()
		return
	}
	defer f.untrack(gc)
	defer gc.Close()
	Splice(hc, gc)
}

// Splice copies both ways between a and b, passing half-closes on, until
// both directions end. If one side fails, both are closed.
func Splice(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	one := func(dst, src net.Conn) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		if err != nil && !errors.Is(err, net.ErrClosed) {
			a.Close()
			b.Close()
			return
		}
		if cw, ok := dst.(closeWriter); ok {
			if cw.CloseWrite() == nil {
				return
			}
		}
		dst.Close()
	}
	go one(b, a)
	go one(a, b)
	wg.Wait()
}

// udpFlow is one host peer of a UDP forward.
type udpFlow struct {
	peer net.Addr
	in   chan []byte
	last atomic.Int64 // unix nanoseconds of the last datagram either way

	mu     sync.Mutex
	conn   net.Conn
	closed bool
}

func (fl *udpFlow) close() {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.closed {
		return
	}
	fl.closed = true
	close(fl.in)
	if fl.conn != nil {
		fl.conn.Close()
	}
}

func (f *Forwarder) serveUDP() {
	defer f.wg.Done()
	f.wg.Add(1)
	go f.reapFlows()
	buf := make([]byte, 65535)
	for {
		n, peer, err := f.pc.ReadFrom(buf)
		if err != nil {
			if f.ctx.Err() == nil {
				f.log.Warn("forward stopped reading", "forward", f.spec.String(), "err", err)
			}
			return
		}
		pkt := append([]byte(nil), buf[:n]...)
		f.mu.Lock()
		fl, ok := f.flows[peer.String()]
		if !ok {
			fl = &udpFlow{peer: peer, in: make(chan []byte, 64)}
			f.flows[peer.String()] = fl
			f.accepted.Add(1)
			f.wg.Add(1)
			go f.runFlow(fl)
		}
		fl.last.Store(time.Now().UnixNano())
		fl.mu.Lock()
		if !fl.closed {
			select {
			case fl.in <- pkt:
			default: // the guest is not keeping up: drop, as UDP would
			}
		}
		fl.mu.Unlock()
		f.mu.Unlock()
	}
}

// runFlow dials the guest for one peer, then relays datagrams both ways
// until the flow is closed (idle, forward closed, or guest gone).
func (f *Forwarder) runFlow(fl *udpFlow) {
	defer f.wg.Done()
	defer f.dropFlow(fl)
	ctx, cancel := context.WithTimeout(f.ctx, dialTimeout)
	gc, err := f.dial(ctx, "udp", f.spec.GuestPort)
	cancel()
	if err != nil {
		f.log.Info("forward: guest dial failed", "forward", f.spec.String(), "err", err)
		return
	}
	fl.mu.Lock()
	if fl.closed {
		fl.mu.Unlock()
		gc.Close()
		return
	}
	fl.conn = gc
	fl.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, err := gc.Read(buf)
			if err != nil {
				return
			}
			fl.last.Store(time.Now().UnixNano())
			if _, err := f.pc.WriteTo(buf[:n], fl.peer); err != nil {
				return
			}
		}
	}()
	for {
		select {
		case pkt, ok := <-fl.in:
			if !ok {
				gc.Close()
				<-done
				return
			}
			if _, err := gc.Write(pkt); err != nil {
				gc.Close()
				<-done
				return
			}
		case <-done:
			return
		}
	}
}

func (f *Forwarder) dropFlow(fl *udpFlow) {
	f.mu.Lock()
	if f.flows[fl.peer.String()] == fl {
		delete(f.flows, fl.peer.String())
	}
	f.mu.Unlock()
	fl.close()
}

func (f *Forwarder) reapFlows() {
	defer f.wg.Done()
	t := time.NewTicker(udpIdleTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
		}
		cutoff := time.Now().Add(-udpIdleTimeout).UnixNano()
		f.mu.Lock()
		for k, fl := range f.flows {
			if fl.last.Load() < cutoff {
				delete(f.flows, k)
				fl.close()
			}
		}
		f.mu.Unlock()
	}
}
