// Package daemon is bangerd's composition root: it owns the store, the
// configuration and the services behind every API operation. VMs belong to
// the daemon, not to the request that created them.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/fsatomic"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/store"
)

// Options configure a Daemon.
type Options struct {
	Layout paths.Layout
	Config config.Config
	Logger *slog.Logger
}

// Daemon holds banger's state and implements the API operations.
type Daemon struct {
	layout    paths.Layout
	cfg       config.Config
	log       *slog.Logger
	store     *store.Store
	startedAt time.Time
}

// New opens the store (running migrations), removes leftovers of
// interrupted operations, and returns a ready daemon.
func New(ctx context.Context, opts Options) (*Daemon, error) {
	if err := opts.Layout.Ensure(); err != nil {
		return nil, err
	}
	for _, dir := range opts.Layout.PublishedDirs() {
		removed, err := fsatomic.RemoveStaging(dir)
		if err != nil {
			return nil, err
		}
		for _, p := range removed {
			opts.Logger.Info("removed leftover staging entry", "path", p)
		}
	}
	st, err := store.Open(ctx, opts.Layout.DBPath())
	if err != nil {
		return nil, err
	}
	d := &Daemon{
		layout:    opts.Layout,
		cfg:       opts.Config,
		log:       opts.Logger,
		store:     st,
		startedAt: time.Now(),
	}
	return d, nil
}

// Close releases the daemon's resources. Running VMs keep running.
func (d *Daemon) Close() error {
	return d.store.Close()
}

// StartedAt is when the daemon started.
func (d *Daemon) StartedAt() time.Time { return d.startedAt }

// Layout returns the daemon's directory layout.
func (d *Daemon) Layout() paths.Layout { return d.layout }

// Health checks the store answers.
func (d *Daemon) Health(ctx context.Context) error {
	if err := d.store.Ping(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if _, err := os.Stat(d.layout.StateDir); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	return nil
}
