package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/bytesize"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/fsatomic"
	"github.com/bangerdev/banger/internal/kernel"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/namegen"
	"github.com/bangerdev/banger/internal/revert"
	"github.com/bangerdev/banger/internal/vmdisk"
	"github.com/bangerdev/banger/internal/vmm"
)

// Per-VM disk files inside vms/<id>/.
const (
	overlayDiskName = "overlay.ext4"
	workDiskName    = "work.ext4"
)

// Sizing floors and defaults.
const (
	minMemoryMiB      = 128
	defaultDiskBytes  = 8 << 30
	overlayDiskBytes  = 16 << 30 // sparse: costs only what the guest writes
	maxDefaultCPUs    = 4
	maxDefaultMemMiB  = 8192
	floorDefaultMemMB = 1024
)

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// vmSizing resolves cpus/memory/disk: request → config → host heuristic → floor.
func (d *Daemon) vmSizing(req api.VMCreateRequest) (cpus, memMiB int, disk int64, err error) {
	cpus, memMiB = req.CPUs, req.MemoryMiB
	if cpus == 0 {
		cpus = d.cfg.VMDefaults.CPUs
	}
	if cpus == 0 {
		cpus = min(max(runtime.NumCPU()/2, 1), maxDefaultCPUs)
	}
	if memMiB == 0 {
		memMiB = d.cfg.VMDefaults.MemoryMiB
	}
	if memMiB == 0 {
		memMiB = floorDefaultMemMB
		if host, err := vmm.HostMemoryMiB(vmm.DefaultHostPaths()); err == nil {
			memMiB = min(max(host/8, floorDefaultMemMB), maxDefaultMemMiB)
		}
	}
	if cpus < 1 || cpus > vmm.MaxCPUs {
		return 0, 0, 0, errkind.New(errkind.InvalidArgument, "cpus must be between 1 and %d, got %d", vmm.MaxCPUs, cpus)
	}
	if memMiB < minMemoryMiB {
		return 0, 0, 0, errkind.New(errkind.InvalidArgument, "memory must be at least %d MiB, got %d", minMemoryMiB, memMiB)
	}
	if err := vmm.CheckMemory(vmm.DefaultHostPaths(), memMiB); err != nil {
		return 0, 0, 0, err
	}
	diskSpec := req.Disk
	if diskSpec == "" {
		diskSpec = d.cfg.VMDefaults.DiskSize
	}
	disk = defaultDiskBytes
	if diskSpec != "" {
		disk, err = bytesize.Parse(diskSpec)
		if err != nil {
			return 0, 0, 0, errkind.Wrap(errkind.InvalidArgument, err, "--disk")
		}
	}
	return cpus, memMiB, disk, nil
}

// CreateVM makes a VM from an image (per-VM overlay and work disks, a row
// in the store) and starts it unless NoStart. Every step is undone in
// reverse if a later one fails, or if the request is cancelled, up to the
// VM's row; once the row exists the start runs to its end even when the
// client goes away. A VM whose boot fails stays in state error with its
// console log kept for `vm logs`.
func (d *Daemon) CreateVM(ctx context.Context, req api.VMCreateRequest, emit func(api.Event)) (api.VMInfo, error) {
	reqStart := time.Now()
	if req.Name != "" {
		if err := model.ValidateName("vm", req.Name); err != nil {
			return api.VMInfo{}, err
		}
	}
	cpus, memMiB, disk, err := d.vmSizing(req)
	if err != nil {
		return api.VMInfo{}, err
	}
	vmmName := req.VMM
	if vmmName == "" {
		vmmName = d.cfg.DefaultVMM
	}
	drv, err := d.driver(vmmName)
	if err != nil {
		return api.VMInfo{}, err
	}
	netw, err := d.net.validate(ctx, req)
	if err != nil {
		return api.VMInfo{}, err
	}
	imageRef, err := d.imageRef(req.Image)
	if err != nil {
		return api.VMInfo{}, err
	}
	im, err := d.imageForVM(ctx, imageRef, emit)
	if err != nil {
		if req.Image == "" && d.cfg.DefaultImage == "" && !errors.Is(err, errkind.NotFound) {
			// The user named no image: say where the default came from.
			err = errkind.WithHint(err, fmt.Sprintf("without --image, VMs boot the image catalog's default %s; "+
				"pass --image NAME (see `banger image list`), set default_image in config.toml, "+
				"or set catalog_url to a server holding its bundle", imageRef))
		}
		return api.VMInfo{}, err
	}
	if req.Kernel != "" || im.KernelRef != "" {
		// A kernel from the kernel catalog is pulled on first use.
		k := req.Kernel
		if k == "" {
			k = im.KernelRef
		}
		if _, err := d.store.GetKernel(ctx, k); err != nil {
			if _, cerr := kernel.Lookup(k); cerr != nil {
				return api.VMInfo{}, errkind.WithHint(err, "see `banger kernel list`, or import one with `banger kernel import`")
			}
			if err := d.ensureKernel(ctx, k, emit); err != nil {
				return api.VMInfo{}, err
			}
		}
	}
	if _, err := d.bootArtifacts(ctx, im, req.Kernel, false); err != nil {
		return api.VMInfo{}, err
	}

	name := req.Name
	if name == "" {
		name = namegen.Unique(func(n string) bool {
			_, err := d.store.GetVM(ctx, n)
			return err == nil || d.vms.isReserved(n)
		})
	}
	if !d.vms.reserve(name) {
		return api.VMInfo{}, errkind.New(errkind.AlreadyExists, "vm %q already exists (it is being created)", name)
	}
	defer d.vms.unreserve(name)
	if _, err := d.store.GetVM(ctx, name); err == nil {
		return api.VMInfo{}, errkind.New(errkind.AlreadyExists, "vm %q already exists", name)
	}

	var undo revert.Stack
	defer undo.Unwind(d.log)

	id := newID()
	emit(api.Event{Stage: "disks", Message: "creating overlay and work disks"})
	final := filepath.Join(d.layout.VMsDir(), id)
	staging := final + fsatomic.StagingSuffix
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return api.VMInfo{}, fmt.Errorf("creating %s: %w", staging, err)
	}
	undo.Push("staging dir", func() error { return os.RemoveAll(staging) })
	if err := createDisks(ctx, staging, disk); err != nil {
		return api.VMInfo{}, err
	}
	if err := os.Rename(staging, final); err != nil {
		return api.VMInfo{}, fmt.Errorf("publishing %s: %w", final, err)
	}
	undo.Push("vm dir", func() error { return os.RemoveAll(final) })

	vm := &model.VM{
		ID: id, Name: name, ImageID: im.ID, ImageName: im.Name, KernelRef: req.Kernel,
		State: model.StateCreated, CPUs: cpus, MemoryMiB: memMiB, DiskBytes: disk,
		VMM: drv.Name(), Dir: final, RunDir: final, Network: netw,
	}
	// Hold the VM's lock from before its row exists until it is started,
	// so no other operation (prune, delete) sees it half made.
	unlock := d.vms.lock(id)
	defer unlock()
	if err := d.store.CreateVM(ctx, vm); err != nil {
		return api.VMInfo{}, err
	}
	undo.Push("vm row", func() error { return d.store.DeleteVM(context.WithoutCancel(ctx), id) })
	undo.Release()

	if req.NoStart {
		return d.vmInfo(vm), nil
	}
	// From here the VM exists: its start is the daemon's, whatever
	// becomes of the request (see startDetached).
	if err := d.startDetached(ctx, vm, emit, reqStart); err != nil {
		return api.VMInfo{}, err
	}
	return d.vmInfo(vm), nil
}

// createDisks makes the overlay and work disks of a VM in dir. The two
// mkfs runs are independent, so they run at once (they are most of the
// daemon's own time in a create).
func createDisks(ctx context.Context, dir string, workBytes int64) error {
	var overlayErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		overlayErr = vmdisk.CreateOverlay(ctx, filepath.Join(dir, overlayDiskName), overlayDiskBytes)
	}()
	workErr := vmdisk.CreateWork(ctx, filepath.Join(dir, workDiskName), workBytes)
	wg.Wait()
	if overlayErr != nil {
		return fmt.Errorf("creating overlay disk: %w", overlayErr)
	}
	if workErr != nil {
		return fmt.Errorf("creating work disk: %w", workErr)
	}
	return nil
}

func (r *vmRegistry) isReserved(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.creating[name]
}

// driver returns the VMM driver called name.
func (d *Daemon) driver(name string) (vmm.Driver, error) {
	drv, ok := d.drivers[name]
	if !ok {
		return nil, errkind.New(errkind.InvalidArgument, "unknown vmm %q (available: %s)", name, d.driverNames())
	}
	return drv, nil
}

func (d *Daemon) driverNames() string {
	var s string
	for n := range d.drivers {
		if s != "" {
			s += ", "
		}
		s += n
	}
	return s
}

var errNoKernel = errors.New("image has no kernel")

// imageForVM returns the image called ref, pulling it first when it is
// missing and names an entry of the image catalog (so `vm run` works on a
// fresh host with a catalog default image).
func (d *Daemon) imageForVM(ctx context.Context, ref string, emit func(api.Event)) (*model.Image, error) {
	im, err := d.store.GetImage(ctx, ref)
	if err == nil || !errors.Is(err, errkind.NotFound) {
		return im, err
	}
	hint := errkind.WithHint(err, "list images with `banger image list` or pull one with `banger image pull`")
	c, cerr := d.imageCatalog()
	if cerr != nil {
		return nil, hint
	}
	if res, rerr := c.Resolve(ref); rerr != nil || res.Image == nil || res.Image.Name != ref {
		return nil, hint
	}
	emit(api.Event{Stage: "pull", Message: "image " + ref + " is not here yet: pulling it from the catalog"})
	if _, err := d.PullImage(ctx, api.ImagePullRequest{Ref: ref}, emit); err != nil && !errors.Is(err, errkind.AlreadyExists) {
		return nil, fmt.Errorf("pulling catalog image %s: %w", ref, err)
	}
	return d.store.GetImage(ctx, ref)
}
