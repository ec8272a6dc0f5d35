// Package agent is the guest side of banger: the server for the host's
// requests (exec, files, ports, dial, shutdown) and, in init.go and
// friends, the PID 1 boot sequence run from the initrd.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/errkind"
)

// Init modes reported by health.
const (
	ModeAgent      = "agent"      // banger-agent is PID 1
	ModeSystemd    = "systemd"    // banger-agent runs as a systemd unit
	ModeStandalone = "standalone" // started by hand (tests, debugging)
)

// Config configures a Server.
type Config struct {
	// Version is the agent version reported in the handshake and health.
	Version string
	// InitMode is reported by health (ModeAgent, ModeSystemd, ModeStandalone).
	InitMode string
	// Shutdown stops the guest. It is called after the reply has been
	// sent. Nil makes shutdown requests fail as unavailable.
	Shutdown func(agentproto.ShutdownMode)
	// Reaper, when set, starts and waits for processes (the agent is PID 1).
	Reaper *Reaper
	// Logf logs a line; nil discards.
	Logf func(format string, args ...any)
}

// Server answers host requests.
type Server struct {
	cfg   Config
	ready *sysReady // nil unless the guest runs systemd
}

// NewServer returns a Server.
func NewServer(cfg Config) *Server {
	if cfg.InitMode == "" {
		cfg.InitMode = ModeStandalone
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	s := &Server{cfg: cfg}
	if cfg.InitMode == ModeSystemd {
		s.ready = newSysReady(s.logf)
	}
	return s
}

func (s *Server) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

// YamuxConfig is the session configuration both ends use.
func yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard
	c.KeepAliveInterval = 15 * time.Second
	c.MaxStreamWindowSize = 1 << 20
	return c
}

type splitConn struct {
	io.Reader
	io.Writer
	io.Closer
}

// closeBoth closes a BatchWriter and the connection it writes to.
type closeBoth struct {
	bw   *agentproto.BatchWriter
	conn io.Closer
}

func (c closeBoth) Close() error {
	c.bw.Close()
	return c.conn.Close()
}

// ServeConn runs one session on conn: the handshake, then yamux until the
// connection fails or ctx ends. conn is closed on return.
func (s *Server) ServeConn(ctx context.Context, conn io.ReadWriteCloser) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	rest, err := agentproto.ServerHandshake(conn, s.cfg.Version)
	if err != nil {
		conn.Close()
		return fmt.Errorf("agent handshake: %w", err)
	}
	bw := agentproto.NewBatchWriter(conn)
	sess, err := yamux.Server(splitConn{rest, bw, closeBoth{bw, conn}}, yamuxConfig())
	if err != nil {
		bw.Close()
		conn.Close()
		return fmt.Errorf("starting yamux session: %w", err)
	}
	defer sess.Close()
	stopSess := context.AfterFunc(ctx, func() { sess.Close() })
	defer stopSess()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil
		}
		go s.handleStream(st)
	}
}

// ServeListener serves every connection accepted on ln (vsock), each as its
// own session, until ctx ends.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accepting host connection: %w", err)
		}
		go func() {
			if err := s.ServeConn(ctx, c); err != nil && ctx.Err() == nil {
				s.logf("session ended: %v", err)
			}
		}()
	}
}

func (s *Server) handleStream(st *yamux.Stream) {
	defer st.Close()
	var req agentproto.Request
	if err := agentproto.ReadJSONLine(st, &req); err != nil {
		return
	}
	// A bug in one operation must not take the agent down: as PID 1 that
	// would panic the kernel.
	defer func() {
		if r := recover(); r != nil {
			s.logf("panic in %s: %v", req.Op, r)
		}
	}()
	switch req.Op {
	case agentproto.OpHealth:
		h := s.health()
		writeResponse(st, &agentproto.Response{Health: &h})
	case agentproto.OpExec:
		s.handleExec(st, req.Exec)
	case agentproto.OpPut:
		s.handlePut(st, req.Put)
	case agentproto.OpGet:
		s.handleGet(st, req.Get)
	case agentproto.OpPorts:
		ports, err := ListPorts("/proc")
		if err != nil {
			writeResponse(st, errResponse(err))
			return
		}
		writeResponse(st, &agentproto.Response{Ports: ports})
	case agentproto.OpDial:
		s.handleDial(st, req.Dial)
	case agentproto.OpShutdown:
		s.handleShutdown(st, req.Shutdown)
	default:
		writeResponse(st, errResponse(errkind.New(errkind.InvalidArgument, "unknown operation %q", req.Op)))
	}
}

func (s *Server) handleShutdown(st *yamux.Stream, req *agentproto.ShutdownRequest) {
	if s.cfg.Shutdown == nil {
		writeResponse(st, errResponse(errkind.New(errkind.Unavailable, "shutdown is not supported by this agent (%s mode)", s.cfg.InitMode)))
		return
	}
	mode := agentproto.ShutdownPoweroff
	if req != nil && req.Mode != "" {
		mode = req.Mode
	}
	if mode != agentproto.ShutdownPoweroff && mode != agentproto.ShutdownReboot {
		writeResponse(st, errResponse(errkind.New(errkind.InvalidArgument, "unknown shutdown mode %q", mode)))
		return
	}
	s.logf("shutdown (%s) requested by the host", mode)
	writeResponse(st, &agentproto.Response{})
	st.Close()
	go s.cfg.Shutdown(mode)
}

func (s *Server) health() agentproto.Health {
	h := agentproto.Health{
		InitMode:        s.cfg.InitMode,
		AgentVersion:    s.cfg.Version,
		ProtocolVersion: agentproto.ProtocolVersion,
	}
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		h.BootID = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			h.UptimeSeconds, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.KernelRelease = strings.TrimSpace(string(b))
	}
	h.Hostname, _ = os.Hostname()
	return h
}

func writeResponse(w io.Writer, r *agentproto.Response) {
	_ = agentproto.WriteJSONLine(w, r)
}

// errResponse turns err into a response line with an error kind.
func errResponse(err error) *agentproto.Response {
	kind := agentproto.KindInternal
	switch errkind.Of(err) {
	case errkind.NotFound:
		kind = agentproto.KindNotFound
	case errkind.InvalidArgument:
		kind = agentproto.KindInvalidArgument
	case errkind.AlreadyExists:
		kind = agentproto.KindAlreadyExists
	case errkind.Conflict:
		kind = agentproto.KindConflict
	case errkind.Unavailable:
		kind = agentproto.KindUnavailable
	default:
		if errors.Is(err, os.ErrNotExist) {
			kind = agentproto.KindNotFound
		}
	}
	return &agentproto.Response{Error: err.Error(), Kind: kind}
}
