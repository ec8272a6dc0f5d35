// Package daemon is bangerd's composition root: it owns the store, the
// configuration and the services behind every API operation. VMs belong to
// the daemon, not to the request that created them.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/fsatomic"
	"github.com/bangerdev/banger/internal/kernel"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/firecracker"
	"github.com/bangerdev/banger/internal/vmm/qemu"
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
	kernels   *kernel.Store
	drivers   map[string]vmm.Driver
	vms       *vmRegistry
	net       vmNetwork
	images    nameLocks  // names of in-flight pulls
	kernelMu  sync.Mutex // kernel imports, pulls and removals
	imageMu   sync.Mutex // image publishes and deletes (the seed's imageOpsMu)
	startedAt time.Time

	// pullAndFlatten is the registry seam of PullImage (tests stub it).
	pullAndFlatten pullAndFlattenFunc

	// ctx lives as long as the daemon; VM watchers use it, not requests.
	ctx    context.Context
	cancel context.CancelFunc
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
	ks, err := kernel.NewStore(opts.Layout.KernelsDir())
	if err != nil {
		st.Close()
		return nil, err
	}
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d := &Daemon{
		layout:    opts.Layout,
		cfg:       opts.Config,
		log:       opts.Logger,
		store:     st,
		kernels:   ks,
		drivers:   map[string]vmm.Driver{},
		vms:       newVMRegistry(),
		net:       noNetwork{},
		startedAt: time.Now(),
		ctx:       dctx,
		cancel:    cancel,
	}
	d.pullAndFlatten = d.realPullAndFlatten
	d.net = d.setupNetwork(ctx)
	q := qemu.New(qemu.Options{Binary: opts.Config.QEMUBin})
	d.drivers[q.Name()] = q
	firecracker.Register(d.drivers, opts.Config.FirecrackerBin, opts.Config.JailerBin)
	d.reapBuildVMs()
	if err := d.removeOrphanDirs(ctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("removing orphan directories: %w", err)
	}
	if err := d.reconcileKernels(ctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("reconciling kernels: %w", err)
	}
	if err := d.reconcile(ctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("reconciling vms: %w", err)
	}
	if err := d.reconcileNetwork(ctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("reconciling vms: %w", err)
	}
	return d, nil
}

// Close releases the daemon's resources. Running VMs keep running.
func (d *Daemon) Close() error {
	d.cancel()
	_ = d.net.close()
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
