package agentclient

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/errkind"
)

// ExecConn is a started exec stream, positioned after the response line:
// what remains is the frame format of agentproto (write stdin, stdin-close,
// resize and signal frames; read stdout, stderr and exit frames). The
// daemon splices it to the CLI; agentproto.NewExecStream speaks it.
type ExecConn struct {
	net.Conn
	// PID is the guest process id.
	PID int
}

// OpenExec starts a process and returns its raw frame stream. ctx bounds
// only the start; closing the returned connection before the exit frame
// makes the agent kill the process.
func (c *Client) OpenExec(ctx context.Context, req agentproto.ExecRequest) (*ExecConn, error) {
	st, stop, err := c.open(ctx, &agentproto.Request{Op: agentproto.OpExec, Exec: &req})
	if err != nil {
		return nil, err
	}
	resp, err := c.response(ctx, st, agentproto.OpExec)
	if !stop() || err != nil {
		st.Close()
		if err == nil {
			err = c.wrap(ctx, ctx.Err(), agentproto.OpExec)
		}
		return nil, err
	}
	pid := 0
	if resp.Exec != nil {
		pid = resp.Exec.PID
	}
	return &ExecConn{Conn: st, PID: pid}, nil
}

// Exec runs a process to completion: stdin (nil for none) is copied to it,
// its output to stdout and stderr (nil discards), and its exit code is
// returned (128+N when killed by signal N). Cancelling ctx kills it. When
// the process could not be started, the error says why and the code is -1.
func (c *Client) Exec(ctx context.Context, req agentproto.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	ec, err := c.OpenExec(ctx, req)
	if err != nil {
		return -1, err
	}
	defer ec.Close()
	stop := context.AfterFunc(ctx, func() {
		_ = ec.SetDeadline(time.Unix(1, 0))
		_ = ec.Close()
	})
	defer stop()
	es := agentproto.NewExecStream(ec)
	go func() { _ = es.SendStdin(stdin) }()
	st, err := es.Wait(stdout, stderr)
	if err != nil {
		return -1, c.wrap(ctx, err, agentproto.OpExec)
	}
	if st.Message != "" {
		return st.Code, fmt.Errorf("guest exec: %s", st.Message)
	}
	return st.Code, nil
}

// PutTar extracts the tar stream r into the guest directory dir (created
// if missing).
func (c *Client) PutTar(ctx context.Context, dir string, r io.Reader, opts agentproto.PutOptions) (agentproto.PutResult, error) {
	req := &agentproto.Request{Op: agentproto.OpPut, Put: &agentproto.PutRequest{
		Dir: dir, PreserveOwners: opts.PreserveOwners, UID: opts.UID, GID: opts.GID,
	}}
	st, stop, err := c.open(ctx, req)
	if err != nil {
		return agentproto.PutResult{}, err
	}
	defer stop()
	if _, err := io.Copy(st, r); err != nil {
		st.Close()
		return agentproto.PutResult{}, c.wrap(ctx, fmt.Errorf("sending archive: %w", err), agentproto.OpPut)
	}
	st.Close() // half-close: end of archive
	resp, err := c.response(ctx, st, agentproto.OpPut)
	if err != nil {
		return agentproto.PutResult{}, err
	}
	if resp.Put == nil {
		return agentproto.PutResult{}, nil
	}
	return *resp.Put, nil
}

// GetTar writes a tar stream of the guest path (file or directory, named
// from its base name) to w.
func (c *Client) GetTar(ctx context.Context, path string, w io.Writer) error {
	st, stop, err := c.open(ctx, &agentproto.Request{Op: agentproto.OpGet, Get: &agentproto.GetRequest{Path: path}})
	if err != nil {
		return err
	}
	defer stop()
	defer st.Close()
	if _, err := c.response(ctx, st, agentproto.OpGet); err != nil {
		return err
	}
	fr := agentproto.NewFrameReader(st)
	for {
		f, err := fr.Next()
		if err != nil {
			return c.wrap(ctx, fmt.Errorf("reading archive: %w", err), agentproto.OpGet)
		}
		switch f.Type {
		case agentproto.FrameData:
			if _, err := w.Write(f.Payload); err != nil {
				return fmt.Errorf("writing archive: %w", err)
			}
		case agentproto.FrameEnd:
			if len(f.Payload) > 0 {
				return fmt.Errorf("guest get %s: %s", path, f.Payload)
			}
			return nil
		}
	}
}

// Dial connects to a port on the guest's localhost ("tcp" or "udp"). A UDP
// connection keeps datagram boundaries: each Write is one datagram and each
// Read returns one. ctx bounds only the connection set-up.
func (c *Client) Dial(ctx context.Context, network string, port int) (net.Conn, error) {
	if network != "tcp" && network != "udp" {
		return nil, errkind.New(errkind.InvalidArgument, "dial: unknown network %q", network)
	}
	st, stop, err := c.open(ctx, &agentproto.Request{Op: agentproto.OpDial, Dial: &agentproto.DialRequest{Network: network, Port: port}})
	if err != nil {
		return nil, err
	}
	_, err = c.response(ctx, st, agentproto.OpDial)
	if !stop() || err != nil {
		st.Close()
		if err == nil {
			err = c.wrap(ctx, ctx.Err(), agentproto.OpDial)
		}
		return nil, err
	}
	if network == "udp" {
		return &udpConn{Conn: st}, nil
	}
	return &streamConn{Conn: st}, nil
}

// streamConn is a forwarded TCP connection. CloseWrite half-closes; Close
// also stops reads.
type streamConn struct{ net.Conn }

func (s *streamConn) CloseWrite() error { return s.Conn.Close() }

func (s *streamConn) Close() error {
	_ = s.Conn.SetReadDeadline(time.Unix(1, 0))
	return s.Conn.Close()
}

// udpConn is a forwarded UDP flow carried as length-prefixed datagrams.
type udpConn struct {
	net.Conn
	rmu sync.Mutex
}

func (u *udpConn) Read(p []byte) (int, error) {
	u.rmu.Lock()
	defer u.rmu.Unlock()
	return agentproto.ReadDatagram(u.Conn, p)
}

func (u *udpConn) Write(p []byte) (int, error) {
	if err := agentproto.WriteDatagram(u.Conn, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (u *udpConn) Close() error {
	_ = u.Conn.SetReadDeadline(time.Unix(1, 0))
	return u.Conn.Close()
}
