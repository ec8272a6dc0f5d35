package agentclient

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
)

// vsockRetry is the pause between attempts while the guest is not yet
// listening on the vsock port.
const vsockRetry = 50 * time.Millisecond

// DialVsock connects to a guest vsock port through Firecracker's vsock unix
// socket: it sends "CONNECT <port>\n" and expects "OK <host-port>\n".
// Firecracker drops the connection while nothing listens in the guest, so
// DialVsock retries until ctx ends.
func DialVsock(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	var last error
	for {
		c, err := dialVsockOnce(ctx, udsPath, port)
		if err == nil {
			return c, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, errkind.Wrap(errkind.Unavailable, last, "connecting to guest vsock port %d via %s", port, udsPath)
		case <-time.After(vsockRetry):
		}
	}
}

func dialVsockOnce(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		c.Close()
		return nil, fmt.Errorf("sending CONNECT: %w", err)
	}
	var line []byte
	var b [1]byte
	for len(line) < 128 {
		if _, err := c.Read(b[:]); err != nil {
			c.Close()
			return nil, fmt.Errorf("reading CONNECT answer: %w", err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	if !strings.HasPrefix(string(line), "OK ") {
		c.Close()
		return nil, fmt.Errorf("unexpected CONNECT answer %q", line)
	}
	if !stop() {
		c.Close()
		return nil, ctx.Err()
	}
	return c, nil
}
