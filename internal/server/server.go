// Package server runs bangerd: it serves the API over HTTP/JSON on a unix
// socket (mode 0600) and maps routes 1:1 onto daemon operations.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/buildinfo"
	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/daemon"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/store"
)

// Server is the HTTP front of a daemon.
type Server struct {
	d        *daemon.Daemon
	log      *slog.Logger
	layout   paths.Layout
	exe      string
	exeMod   time.Time
	shutdown func()
	// busy counts the requests in flight that change state or hold a
	// session (every method but GET): a CLI does not restart a busy daemon.
	busy atomic.Int64
}

// Options configure Run.
type Options struct {
	Layout paths.Layout
	// LogOutput receives the daemon log (stderr by default).
	LogOutput io.Writer
}

// Run starts bangerd and serves until ctx is done, SIGINT/SIGTERM arrive, or
// a client asks it to shut down. Bad configuration, a second daemon on the
// same socket or a database from a newer binary fail before anything on
// disk changes.
func Run(ctx context.Context, opts Options) error {
	l := opts.Layout
	out := opts.LogOutput
	if out == nil {
		out = os.Stderr
	}
	cfg, err := config.Load(l.ConfigFile())
	if err != nil {
		return err
	}
	if lv := os.Getenv("BANGER_LOG_LEVEL"); lv != "" {
		cfg.LogLevel = lv
	}
	log := newLogger(out, cfg.LogLevel)

	st, err := store.Status(ctx, l.DBPath())
	if err != nil {
		return err
	}
	if st.Current > st.Latest {
		return fmt.Errorf("database %s has schema version %d but this bangerd knows only %d: %w; upgrade banger",
			l.DBPath(), st.Current, st.Latest, store.ErrNewerDatabase)
	}
	if err := l.Ensure(); err != nil {
		return err
	}
	unlock, err := lock(l.LockFile())
	if err != nil {
		return err
	}
	defer unlock()

	ln, err := listen(l.Socket())
	if err != nil {
		return err
	}
	defer os.Remove(l.Socket())

	d, err := daemon.New(ctx, daemon.Options{Layout: l, Config: cfg, Logger: log})
	if err != nil {
		ln.Close()
		return err
	}
	defer d.Close()

	ctx, cancel := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	s := &Server{d: d, log: log, layout: l, shutdown: cancel}
	s.exe, s.exeMod = executable()
	hs := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("bangerd listening", "socket", l.Socket(), "version", buildinfo.Version, "pid", os.Getpid())

	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving %s: %w", l.Socket(), err)
		}
	}
	log.Info("bangerd shutting down")
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	_ = hs.Shutdown(sctx)
	return nil
}

// route is one API operation: METHOD and path under /v1.
type route struct {
	method, path string
	h            http.HandlerFunc
}

// routeTable lists every API route; docs/openapi.yaml documents exactly
// these (checked by a test).
func (s *Server) routeTable() []route {
	rs := []route{
		{"GET", "/version", s.version},
		{"GET", "/health", s.health},
		{"POST", "/daemon/shutdown", s.shutdownHandler},
	}
	rs = append(rs, s.imageRoutes()...)
	rs = append(rs, s.kernelRoutes()...)
	rs = append(rs, s.vmRoutes()...)
	rs = append(rs, s.netRoutes()...)
	rs = append(rs, s.catalogRoutes()...)
	rs = append(rs, s.fileRoutes()...)
	return rs
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for _, r := range s.routeTable() {
		h := r.h
		if r.method != http.MethodGet && r.path != "/daemon/shutdown" {
			h = s.counted(h)
		}
		mux.HandleFunc(r.method+" "+api.Prefix+r.path, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, errkind.New(errkind.NotFound, "no route %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// counted wraps h so that s.busy counts it while it runs (for an upgraded
// exec or forward stream: until the stream ends).
func (s *Server) counted(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.busy.Add(1)
		defer s.busy.Add(-1)
		h(w, r)
	}
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.VersionInfo{
		Version:    buildinfo.Version,
		API:        api.Version,
		PID:        os.Getpid(),
		Executable: s.exe,
		ExeModTime: s.exeMod,
		StartedAt:  s.d.StartedAt(),
		Socket:     s.layout.Socket(),
		StateDir:   s.layout.StateDir,
		LogFile:    s.layout.DaemonLog(),
		Busy:       int(s.busy.Load()),
	})
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if err := s.d.Health(r.Context()); err != nil {
		s.writeError(w, r, errkind.Wrap(errkind.Unavailable, err, "unhealthy"))
		return
	}
	writeJSON(w, http.StatusOK, api.Health{Status: "ok"})
}

func (s *Server) shutdownHandler(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.Health{Status: "shutting down"})
	go s.shutdown()
}

func executable() (string, time.Time) {
	exe, err := os.Executable()
	if err != nil {
		return "", time.Time{}
	}
	fi, err := os.Stat(exe)
	if err != nil {
		return exe, time.Time{}
	}
	return exe, fi.ModTime()
}

// lock takes an exclusive flock on path so only one daemon serves a layout.
func lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := io.ReadAll(f)
		f.Close()
		pid := strings.TrimSpace(string(b))
		if pid == "" {
			pid = "unknown"
		}
		return nil, errkind.WithHint(
			errkind.New(errkind.Conflict, "another bangerd (pid %s) already serves %s", pid, socketFor(path)),
			"stop it with `banger daemon stop`")
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { _ = f.Truncate(0); f.Close() }, nil
}

func socketFor(lockPath string) string { return strings.TrimSuffix(lockPath, ".lock") + ".sock" }

// listen binds the unix socket with mode 0600, replacing a stale socket
// file (the lock proves no live daemon owns it).
func listen(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, errkind.New(errkind.Conflict, "%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
		}
	}
	old := unix.Umask(0o177)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}
