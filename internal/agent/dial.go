package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/errkind"
)

const dialTimeout = 10 * time.Second

func (s *Server) handleDial(st io.ReadWriteCloser, req *agentproto.DialRequest) {
	if req == nil || req.Port <= 0 || req.Port > 65535 {
		writeResponse(st, errResponse(errkind.New(errkind.InvalidArgument, "dial: bad port")))
		return
	}
	host := req.Host
	if host == "" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	var d net.Dialer
	addr := net.JoinHostPort(host, strconv.Itoa(req.Port))
	switch req.Network {
	case "tcp":
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil && req.Host == "" && errors.Is(err, syscall.ECONNREFUSED) {
			c, err = d.DialContext(ctx, "tcp", net.JoinHostPort("::1", strconv.Itoa(req.Port)))
		}
		if err != nil {
			writeResponse(st, errResponse(errkind.Wrap(errkind.Unavailable, err, "connecting to guest port tcp/%d", req.Port)))
			return
		}
		writeResponse(st, &agentproto.Response{})
		spliceTCP(st, c.(*net.TCPConn))
	case "udp":
		c, err := d.DialContext(ctx, "udp", addr)
		if err != nil {
			writeResponse(st, errResponse(errkind.Wrap(errkind.Unavailable, err, "connecting to guest port udp/%d", req.Port)))
			return
		}
		writeResponse(st, &agentproto.Response{})
		spliceUDP(st, c)
	default:
		writeResponse(st, errResponse(errkind.New(errkind.InvalidArgument, "dial: unknown network %q", req.Network)))
	}
}

// spliceBuf is the copy buffer of each direction of a forwarded TCP stream.
const spliceBuf = 256 << 10

// onlyWriter and onlyReader hide ReadFrom/WriteTo so that io.CopyBuffer
// uses its buffer instead of the connection's own 32 KiB copy loop.
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }

// spliceTCP copies both ways, propagating half-closes, until both
// directions are done.
func spliceTCP(st io.ReadWriteCloser, c *net.TCPConn) {
	defer c.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		// Big buffers: every write into the guest socket and every frame
		// on the channel costs guest CPU, which bounds forward throughput.
		_, _ = io.CopyBuffer(onlyWriter{c}, st, make([]byte, spliceBuf))
		_ = c.CloseWrite()
	}()
	go func() {
		defer wg.Done()
		_, err := io.CopyBuffer(st, onlyReader{c}, make([]byte, spliceBuf))
		_ = st.Close()
		if err != nil {
			// The guest side failed: make the other direction stop too.
			_ = c.SetReadDeadline(time.Unix(1, 0))
		}
	}()
	wg.Wait()
}

// spliceUDP relays length-prefixed datagrams from the stream to a
// connected UDP socket and back, until the host closes the stream.
func spliceUDP(st io.ReadWriteCloser, c net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, agentproto.MaxDatagram)
		for {
			n, err := c.Read(buf)
			if errors.Is(err, syscall.ECONNREFUSED) {
				continue // nobody listened to an earlier datagram: keep going
			}
			if err != nil {
				return
			}
			if err := agentproto.WriteDatagram(st, buf[:n]); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, agentproto.MaxDatagram)
	for {
		n, err := agentproto.ReadDatagram(st, buf)
		if err != nil {
			break
		}
		_, _ = c.Write(buf[:n])
	}
	c.Close()
	<-done
	_ = st.Close()
}
