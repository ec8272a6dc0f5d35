package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/buildinfo"
	"github.com/bangerdev/banger/internal/client"
	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/errkind"
)

const daemonStartTimeout = 20 * time.Second

// client returns a client for a daemon that answers and matches this CLI's
// version, starting (or restarting) bangerd when needed.
func (a *App) client(ctx context.Context) (*client.Client, error) {
	c := client.New(a.Layout.Socket())
	v, err := probe(ctx, c)
	switch {
	case err == nil:
		if reason := a.staleDaemon(v); reason != "" {
			if v.Busy > 0 {
				// Restarting would cut the builds, pulls and sessions of
				// other clients: keep the old daemon while its API matches.
				if v.API != api.Version {
					return nil, errkind.WithHint(errkind.New(errkind.Conflict,
						"bangerd must be restarted (%s) but is busy with %d operation(s)", reason, v.Busy),
						"retry when they finish, or stop it with `banger daemon stop`")
				}
				fmt.Fprintf(a.Stderr, "banger: bangerd should restart (%s) but is busy with %d operation(s); using it as is\n", reason, v.Busy)
				return c, nil
			}
			fmt.Fprintf(a.Stderr, "banger: restarting bangerd (%s)\n", reason)
			if err := a.stopDaemon(ctx, c); err != nil {
				return nil, err
			}
			return c, a.startDaemon(ctx, c)
		}
		return c, nil
	case errors.Is(err, client.ErrNoDaemon):
		return c, a.startDaemon(ctx, c)
	default:
		return nil, err
	}
}

func probe(ctx context.Context, c *client.Client) (api.VersionInfo, error) {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for i := 0; ; i++ {
		v, err := c.Version(pctx)
		// A daemon that is dying (killed, exiting) may still accept and then
		// reset connections for a moment: ask again before concluding.
		if err == nil || i >= 20 || !(errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
			return v, err
		}
		select {
		case <-pctx.Done():
			return v, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// staleDaemon says why a running daemon must be replaced, or "".
func (a *App) staleDaemon(v api.VersionInfo) string {
	if v.Version != buildinfo.Version {
		return fmt.Sprintf("daemon %s, cli %s", v.Version, buildinfo.Version)
	}
	if v.Executable != "" {
		if _, err := os.Stat(v.Executable); err != nil {
			return "its binary " + v.Executable + " is gone"
		}
	}
	bin, err := a.daemonBin()
	if err != nil || v.Executable == "" {
		return ""
	}
	if filepath.Clean(bin) != filepath.Clean(v.Executable) {
		return ""
	}
	if fi, err := os.Stat(bin); err == nil && !fi.ModTime().Equal(v.ExeModTime) {
		return "bangerd binary was rebuilt"
	}
	return ""
}

func (a *App) daemonBin() (string, error) {
	if a.DaemonBin != "" {
		return a.DaemonBin, nil
	}
	if b := os.Getenv("BANGER_DAEMON_BIN"); b != "" {
		return b, nil
	}
	if exe, err := os.Executable(); err == nil {
		cand := filepath.Join(filepath.Dir(exe), "bangerd")
		if fi, err := os.Stat(cand); err == nil && !fi.IsDir() {
			return cand, nil
		}
	}
	p, err := exec.LookPath("bangerd")
	if err != nil {
		return "", errkind.WithHint(errkind.New(errkind.Unavailable, "bangerd not found next to banger or in PATH"),
			"build it with `make build` or set BANGER_DAEMON_BIN")
	}
	return p, nil
}

// startDaemon launches bangerd detached (own session, log to the state dir)
// and waits until it answers.
func (a *App) startDaemon(ctx context.Context, c *client.Client) error {
	// A malformed config is reported before anything is created on disk.
	if _, err := config.Load(a.Layout.ConfigFile()); err != nil {
		return errkind.WithHint(err, "fix or remove "+a.Layout.ConfigFile())
	}
	bin, err := a.daemonBin()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(a.Layout.StateDir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", a.Layout.StateDir, err)
	}
	logPath := a.Layout.DaemonLog()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening daemon log: %w", err)
	}
	defer logf.Close()
	info, _ := logf.Stat()
	offset := info.Size()
	cmd := exec.Command(bin)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	deadline := time.Now().Add(daemonStartTimeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			logged := logSince(logPath, offset)
			if strings.Contains(logged, "already serves") {
				// Another CLI started a daemon at the same time and won
				// the lock (both log to the same file): wait for that one.
				exited = nil
				continue
			}
			return errkind.WithHint(fmt.Errorf("bangerd exited during start-up (%v): %s", err, lastLine(logged)),
				"see "+logPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if _, err := probe(ctx, c); err == nil {
			return nil
		}
	}
	return errkind.WithHint(errkind.New(errkind.Unavailable, "bangerd did not answer on %s within %s", c.Socket(), daemonStartTimeout),
		"see "+logPath)
}

// logSince returns what was appended to the log at path after offset
// (at most 1 MiB).
func logSince(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	return string(b)
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// stopDaemon asks the daemon to exit and waits until the socket is gone.
func (a *App) stopDaemon(ctx context.Context, c *client.Client) error {
	v, err := probe(ctx, c)
	if errors.Is(err, client.ErrNoDaemon) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := c.Shutdown(ctx); err != nil && !errors.Is(err, client.ErrNoDaemon) {
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(v.PID, 0) != nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errkind.New(errkind.Unavailable, "bangerd (pid %d) did not exit", v.PID)
}
