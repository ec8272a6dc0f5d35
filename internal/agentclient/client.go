// Package agentclient is the host side of the banger agent protocol: it
// speaks to banger-agent in a guest over a virtio-serial port (QEMU) or a
// vsock connection (Firecracker).
package agentclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/errkind"
)

// DefaultHandshakeTimeout bounds New's wait for the guest agent.
const DefaultHandshakeTimeout = 60 * time.Second

// Client is a session with one guest agent. It is safe for concurrent use;
// every operation runs on its own stream.
type Client struct {
	sess  *yamux.Session
	hello agentproto.Hello
}

// New runs the handshake on conn (waiting up to DefaultHandshakeTimeout for
// the agent) and starts a session. The client owns conn from then on.
func New(conn net.Conn) (*Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultHandshakeTimeout)
	defer cancel()
	return NewContext(ctx, conn)
}

// NewContext is New with the wait for the agent bounded by ctx. A guest
// still holding a session from an earlier host connection is reset by the
// handshake.
func NewContext(ctx context.Context, conn net.Conn) (*Client, error) {
	hello, c, err := agentproto.ClientHandshake(ctx, conn)
	if err != nil {
		conn.Close()
		if errors.Is(err, agentproto.ErrProtocolVersion) {
			return nil, errkind.Wrap(errkind.Conflict, err, "connecting to the guest agent")
		}
		return nil, errkind.Wrap(errkind.Unavailable, err, "connecting to the guest agent")
	}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	cfg.KeepAliveInterval = 15 * time.Second
	cfg.MaxStreamWindowSize = 1 << 20
	bw := agentproto.NewBatchWriter(c)
	sess, err := yamux.Client(batchConn{c, bw}, cfg)
	if err != nil {
		bw.Close()
		conn.Close()
		return nil, fmt.Errorf("starting agent session: %w", err)
	}
	return &Client{sess: sess, hello: hello}, nil
}

// batchConn is the session's connection: writes go through a
// BatchWriter, so that yamux's many small writes reach the channel as few
// large ones.
type batchConn struct {
	net.Conn
	bw *agentproto.BatchWriter
}

func (c batchConn) Write(p []byte) (int, error) { return c.bw.Write(p) }

func (c batchConn) Close() error {
	c.bw.Close()
	return c.Conn.Close()
}

// AgentVersion is the version the agent reported in the handshake.
func (c *Client) AgentVersion() string { return c.hello.AgentVersion }

// Done is closed when the session ends (the guest went away or Close).
func (c *Client) Done() <-chan struct{} { return c.sess.CloseChan() }

// Close ends the session and closes the connection.
func (c *Client) Close() error { return c.sess.Close() }

// open opens a stream, writes the request line, and arranges for the
// stream to be closed when ctx ends while the caller is still using it.
// The returned stop function detaches ctx.
func (c *Client) open(ctx context.Context, req *agentproto.Request) (*yamux.Stream, func() bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	st, err := c.sess.OpenStream()
	if err != nil {
		return nil, nil, errkind.Wrap(errkind.Unavailable, err, "opening agent stream")
	}
	stop := context.AfterFunc(ctx, func() {
		_ = st.SetDeadline(time.Unix(1, 0))
		_ = st.Close()
	})
	if err := agentproto.WriteJSONLine(st, req); err != nil {
		stop()
		st.Close()
		return nil, nil, c.wrap(ctx, err, req.Op)
	}
	return st, stop, nil
}

// response reads a response line and converts a remote error.
func (c *Client) response(ctx context.Context, st *yamux.Stream, op string) (*agentproto.Response, error) {
	var resp agentproto.Response
	if err := agentproto.ReadJSONLine(st, &resp); err != nil {
		return nil, c.wrap(ctx, err, op)
	}
	if err := resp.Err(); err != nil {
		return &resp, remoteErr(err, op)
	}
	return &resp, nil
}

// wrap classifies a transport error.
func (c *Client) wrap(ctx context.Context, err error, op string) error {
	if ctx.Err() != nil {
		return errkind.Wrap(errkind.Canceled, ctx.Err(), "agent %s", op)
	}
	return errkind.Wrap(errkind.Unavailable, err, "agent %s", op)
}

func remoteErr(err error, op string) error {
	var re *agentproto.RemoteError
	if !errors.As(err, &re) {
		return err
	}
	kinds := map[string]*errkind.Kind{
		agentproto.KindNotFound:        errkind.NotFound,
		agentproto.KindInvalidArgument: errkind.InvalidArgument,
		agentproto.KindAlreadyExists:   errkind.AlreadyExists,
		agentproto.KindConflict:        errkind.Conflict,
		agentproto.KindUnavailable:     errkind.Unavailable,
	}
	if k, ok := kinds[re.Kind]; ok {
		return errkind.New(k, "guest %s: %s", op, re.Msg)
	}
	return fmt.Errorf("guest %s: %s", op, re.Msg)
}

// simple runs an operation whose whole answer is one response line.
func (c *Client) simple(ctx context.Context, req *agentproto.Request) (*agentproto.Response, error) {
	st, stop, err := c.open(ctx, req)
	if err != nil {
		return nil, err
	}
	defer stop()
	defer st.Close()
	return c.response(ctx, st, req.Op)
}

// Health asks the agent about the guest.
func (c *Client) Health(ctx context.Context) (*agentproto.Health, error) {
	resp, err := c.simple(ctx, &agentproto.Request{Op: agentproto.OpHealth})
	if err != nil {
		return nil, err
	}
	if resp.Health == nil {
		return nil, errkind.New(errkind.Unavailable, "agent health: empty answer")
	}
	return resp.Health, nil
}

// Ports lists the guest's listening TCP and bound UDP sockets.
func (c *Client) Ports(ctx context.Context) ([]agentproto.Port, error) {
	resp, err := c.simple(ctx, &agentproto.Request{Op: agentproto.OpPorts})
	if err != nil {
		return nil, err
	}
	return resp.Ports, nil
}

// Shutdown asks the guest to sync and stop. It returns once the agent has
// accepted the request; the VMM process exits shortly after.
func (c *Client) Shutdown(ctx context.Context, mode agentproto.ShutdownMode) error {
	_, err := c.simple(ctx, &agentproto.Request{Op: agentproto.OpShutdown, Shutdown: &agentproto.ShutdownRequest{Mode: mode}})
	return err
}
