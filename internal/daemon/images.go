package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/fsatomic"
	"github.com/bangerdev/banger/internal/imagebuild"
	"github.com/bangerdev/banger/internal/imagepull"
	"github.com/bangerdev/banger/internal/model"
)

// Boot artifact names inside a managed image dir.
const (
	imageKernelName  = "vmlinux"
	imageInitrdName  = "initrd.img"
	imageModulesName = "modules"
)

// nameLocks reserves names for in-flight operations.
type nameLocks struct {
	mu    sync.Mutex
	names map[string]bool
}

func (n *nameLocks) reserve(name string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.names == nil {
		n.names = map[string]bool{}
	}
	if n.names[name] {
		return false
	}
	n.names[name] = true
	return true
}

func (n *nameLocks) unreserve(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.names, name)
}

// kernelInputs are the kernel flags of pull and register: a kernel from the
// store (Ref) or explicit host paths, never both.
type kernelInputs struct {
	Ref, Kernel, Initrd, Modules string
}

// resolveKernelInputs is the one place the kernel policy of image pull and
// register lives: --kernel-ref and explicit paths are mutually exclusive;
// explicit paths are validated; with neither, the configured default kernel
// is used when it is installed; otherwise the image is refused.
func (d *Daemon) resolveKernelInputs(ctx context.Context, in kernelInputs) (kernelInputs, error) {
	explicit := in.Kernel != "" || in.Initrd != "" || in.Modules != ""
	switch {
	case in.Ref != "" && explicit:
		return in, errkind.New(errkind.InvalidArgument, "--kernel-ref excludes --kernel, --initrd and --modules")
	case in.Ref != "":
		if _, err := d.store.GetKernel(ctx, in.Ref); err != nil {
			return in, errkind.WithHint(err, "see `banger kernel list`, or fetch one with `banger kernel pull`")
		}
		return in, nil
	case explicit:
		return in, ValidateKernelPaths(in.Kernel, in.Initrd, in.Modules)
	}
	if def := d.cfg.DefaultKernel; def != "" {
		if _, err := d.store.GetKernel(ctx, def); err == nil {
			return kernelInputs{Ref: def}, nil
		}
	}
	return in, errkind.WithHint(errkind.New(errkind.InvalidArgument, "no kernel for the image"),
		"pass --kernel-ref NAME (see `banger kernel list`) or --kernel PATH [--initrd PATH] [--modules DIR], or run `banger kernel pull`")
}

// ValidateKernelPaths checks the kernel triple alone: an existing kernel
// file, and an initrd file and modules directory when given. Paths must be
// absolute.
func ValidateKernelPaths(kernel, initrd, modules string) error {
	if kernel == "" {
		return errkind.New(errkind.InvalidArgument, "--kernel is required with --initrd or --modules")
	}
	if err := checkPath("kernel", kernel, false); err != nil {
		return err
	}
	if initrd != "" {
		if err := checkPath("initrd", initrd, false); err != nil {
			return err
		}
	}
	if modules != "" {
		if err := checkPath("modules", modules, true); err != nil {
			return err
		}
	}
	return nil
}

// ValidateRegisterPaths adds the rootfs check to ValidateKernelPaths.
func ValidateRegisterPaths(rootfs, kernel, initrd, modules string) error {
	if err := checkPath("rootfs", rootfs, false); err != nil {
		return err
	}
	if kernel == "" && initrd == "" && modules == "" {
		return nil
	}
	return ValidateKernelPaths(kernel, initrd, modules)
}

func checkPath(what, p string, dir bool) error {
	if !filepath.IsAbs(p) {
		return errkind.New(errkind.InvalidArgument, "%s path %q must be absolute", what, p)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return errkind.New(errkind.InvalidArgument, "%s %s: %v", what, p, err)
	}
	if dir != fi.IsDir() {
		kind := "a regular file"
		if dir {
			kind = "a directory"
		}
		return errkind.New(errkind.InvalidArgument, "%s %s is not %s", what, p, kind)
	}
	return nil
}

// stageBootArtifacts records the kernel of an image: a kernel-store ref as
// is, or explicit files copied into the staging dir (they are published
// with it, so the recorded paths point into the final dir).
func stageBootArtifacts(staging, final string, kin kernelInputs, im *model.Image) error {
	if kin.Ref != "" {
		im.KernelRef = kin.Ref
		return nil
	}
	if kin.Kernel == "" {
		return nil
	}
	if err := fsatomic.CopyFile(kin.Kernel, filepath.Join(staging, imageKernelName)); err != nil {
		return fmt.Errorf("staging kernel: %w", err)
	}
	im.KernelPath = filepath.Join(final, imageKernelName)
	if kin.Initrd != "" {
		if err := fsatomic.CopyFile(kin.Initrd, filepath.Join(staging, imageInitrdName)); err != nil {
			return fmt.Errorf("staging initrd: %w", err)
		}
		im.InitrdPath = filepath.Join(final, imageInitrdName)
	}
	if kin.Modules != "" {
		if err := copyTree(kin.Modules, filepath.Join(staging, imageModulesName)); err != nil {
			return fmt.Errorf("staging modules: %w", err)
		}
		im.ModulesDir = filepath.Join(final, imageModulesName)
	}
	return nil
}

// RegisterImage records an unmanaged image by absolute host paths.
func (d *Daemon) RegisterImage(ctx context.Context, req api.ImageRegisterRequest) (*model.Image, error) {
	if err := model.ValidateImageName("image", req.Name); err != nil {
		return nil, err
	}
	if err := checkPath("rootfs", req.RootfsPath, false); err != nil {
		return nil, err
	}
	kin, err := d.resolveKernelInputs(ctx, kernelInputs{Ref: req.KernelRef, Kernel: req.KernelPath, Initrd: req.InitrdPath, Modules: req.ModulesDir})
	if err != nil {
		return nil, err
	}
	fi, _ := os.Stat(req.RootfsPath)
	im := &model.Image{
		ID: newID(), Name: req.Name, Managed: false, RootfsPath: req.RootfsPath,
		KernelRef: kin.Ref, KernelPath: kin.Kernel, InitrdPath: kin.Initrd, ModulesDir: kin.Modules,
		SizeBytes: fi.Size(), CreatedAt: time.Now().UTC(),
		Config: model.ImageConfig{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
	}
	d.imageMu.Lock()
	defer d.imageMu.Unlock()
	if err := d.store.CreateImage(ctx, im); err != nil {
		return nil, err
	}
	return im, nil
}

// PromoteImage copies an unmanaged image into managed storage.
func (d *Daemon) PromoteImage(ctx context.Context, ref string, emit func(api.Event)) (*model.Image, error) {
	im, err := d.store.GetImage(ctx, ref)
	if err != nil {
		return nil, err
	}
	if im.Managed {
		return nil, errkind.New(errkind.Conflict, "image %q is already managed", im.Name)
	}
	if n, err := d.store.CountVMsUsingImage(ctx, im.ID); err != nil {
		return nil, err
	} else if n > 0 {
		return nil, errkind.New(errkind.Conflict, "image %q is used by %d vm(s); delete them first", im.Name, n)
	}
	final := filepath.Join(d.layout.ImagesDir(), im.ID)
	staging := final + fsatomic.StagingSuffix
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return nil, err
	}
	published := false
	defer func() {
		if !published {
			os.RemoveAll(staging)
		}
	}()
	emit(api.Event{Stage: "copy", Message: "copying " + im.RootfsPath})
	if err := fsatomic.CopyFile(im.RootfsPath, filepath.Join(staging, rootfsName)); err != nil {
		return nil, fmt.Errorf("copying rootfs: %w", err)
	}
	out := *im
	out.Managed = true
	out.RootfsPath = filepath.Join(final, rootfsName)
	out.KernelPath, out.InitrdPath, out.ModulesDir = "", "", ""
	if err := stageBootArtifacts(staging, final, kernelInputs{Ref: im.KernelRef, Kernel: im.KernelPath, Initrd: im.InitrdPath, Modules: im.ModulesDir}, &out); err != nil {
		return nil, err
	}
	d.imageMu.Lock()
	defer d.imageMu.Unlock()
	if err := os.Rename(staging, final); err != nil {
		return nil, fmt.Errorf("publishing %s: %w", final, err)
	}
	published = true
	if err := d.store.UpdateImage(ctx, &out); err != nil {
		os.RemoveAll(final)
		return nil, err
	}
	return &out, nil
}

// ListImages returns every image.
func (d *Daemon) ListImages(ctx context.Context) ([]*model.Image, error) {
	return d.store.ListImages(ctx)
}

// ShowImage returns one image.
func (d *Daemon) ShowImage(ctx context.Context, ref string) (*model.Image, error) {
	im, err := d.store.GetImage(ctx, ref)
	if err != nil {
		return nil, err
	}
	if im.Managed {
		if p := filepath.Join(d.layout.ImagesDir(), im.ID, buildLogName); fileExists(p) {
			im.BuildLog = p
		}
	}
	return im, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// DeleteImage removes an image (files only for managed images). VMs using
// it make this fail unless force, which deletes those VMs first.
func (d *Daemon) DeleteImage(ctx context.Context, ref string, force bool) error {
	im, err := d.store.GetImage(ctx, ref)
	if err != nil {
		return err
	}
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	var users []string
	for _, vm := range vms {
		if vm.ImageID == im.ID {
			users = append(users, vm.Name)
		}
	}
	if len(users) > 0 && !force {
		return errkind.WithHint(errkind.New(errkind.Conflict, "image %q is used by vm(s) %v", im.Name, users),
			"delete those VMs first, or pass --force to delete them too")
	}
	for _, n := range users {
		if err := d.DeleteVM(ctx, n, true); err != nil {
			return fmt.Errorf("deleting vm %s: %w", n, err)
		}
	}
	d.imageMu.Lock()
	defer d.imageMu.Unlock()
	if err := d.store.DeleteImage(ctx, im.ID); err != nil {
		return err
	}
	if im.Managed {
		if err := os.RemoveAll(filepath.Join(d.layout.ImagesDir(), im.ID)); err != nil {
			return fmt.Errorf("removing image files: %w", err)
		}
	}
	return nil
}

// PruneImageCache empties the OCI blob cache (images are already
// flattened; the cache only speeds up re-pulls).
func (d *Daemon) PruneImageCache(ctx context.Context, dryRun bool) (api.CachePruneResult, error) {
	freed, n, err := imagepull.PruneCache(d.layout.OCICacheDir(), nil, dryRun)
	if err != nil {
		return api.CachePruneResult{}, err
	}
	bfreed, states, err := imagebuild.Prune(d.layout.BuildCacheDir(), dryRun)
	if err != nil {
		return api.CachePruneResult{}, err
	}
	return api.CachePruneResult{Dir: d.layout.OCICacheDir(), Blobs: n, FreedBytes: freed + bfreed,
		BuildCacheDir: d.layout.BuildCacheDir(), BuildStates: states, BuildFreedBytes: bfreed, DryRun: dryRun}, nil
}

func copyTree(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case fi.IsDir():
			return os.MkdirAll(target, fi.Mode().Perm()|0o700)
		case fi.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		case fi.Mode().IsRegular():
			return fsatomic.CopyFile(p, target)
		}
		return nil
	})
}
