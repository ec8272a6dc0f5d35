package daemon

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/kernel"
	"github.com/bangerdev/banger/internal/model"
)

// ImportKernel stores a kernel from a .deb or from files and records it.
func (d *Daemon) ImportKernel(ctx context.Context, req api.KernelImportRequest, emit func(api.Event)) (model.Kernel, error) {
	if err := kernel.ValidateName(req.Name); err != nil {
		return model.Kernel{}, err
	}
	for _, p := range []string{req.FromDeb, req.Vmlinuz, req.Vmlinux, req.Initrd, req.ModulesDir} {
		if p != "" && !filepath.IsAbs(p) {
			return model.Kernel{}, errkind.New(errkind.InvalidArgument, "path %q must be absolute", p)
		}
	}
	if req.FromDeb != "" && (req.Vmlinuz != "" || req.Vmlinux != "" || req.Initrd != "" || req.ModulesDir != "") {
		return model.Kernel{}, errkind.New(errkind.InvalidArgument, "--from-deb excludes --vmlinuz, --vmlinux, --initrd and --modules")
	}
	d.kernelMu.Lock()
	defer d.kernelMu.Unlock()
	if _, err := d.store.GetKernel(ctx, req.Name); err == nil || d.kernels.Exists(req.Name) {
		return model.Kernel{}, errkind.New(errkind.AlreadyExists, "kernel %q already exists", req.Name)
	}
	emit(api.Event{Stage: "import", Message: "importing kernel " + req.Name})
	var k kernel.Kernel
	var err error
	if req.FromDeb != "" {
		k, err = d.kernels.ImportDeb(ctx, req.Name, req.FromDeb)
	} else {
		k, err = d.kernels.ImportFiles(ctx, req.Name, kernel.Files{
			Vmlinuz: req.Vmlinuz, Vmlinux: req.Vmlinux, Initrd: req.Initrd, ModulesDir: req.ModulesDir,
		})
	}
	if err != nil {
		return model.Kernel{}, err
	}
	return d.recordKernel(ctx, k)
}

// PullKernel fetches a catalog kernel and records it.
func (d *Daemon) PullKernel(ctx context.Context, name string, emit func(api.Event)) (model.Kernel, error) {
	if name == "" {
		name = d.cfg.DefaultKernel
	}
	if _, err := kernel.Lookup(name); err != nil {
		return model.Kernel{}, err
	}
	d.kernelMu.Lock()
	defer d.kernelMu.Unlock()
	if _, err := d.store.GetKernel(ctx, name); err == nil || d.kernels.Exists(name) {
		return model.Kernel{}, errkind.New(errkind.AlreadyExists, "kernel %q already exists", name)
	}
	emit(api.Event{Stage: "download", Message: "fetching kernel " + name})
	k, err := d.kernels.Pull(ctx, name)
	if err != nil {
		return model.Kernel{}, err
	}
	return d.recordKernel(ctx, k)
}

func (d *Daemon) recordKernel(ctx context.Context, k kernel.Kernel) (model.Kernel, error) {
	m := k.Model()
	if err := d.store.CreateKernel(context.WithoutCancel(ctx), &m); err != nil {
		_ = d.kernels.Remove(context.WithoutCancel(ctx), k.Name)
		return model.Kernel{}, err
	}
	return m, nil
}

// ListKernels returns the stored kernels.
func (d *Daemon) ListKernels(ctx context.Context) ([]model.Kernel, error) {
	ks, err := d.store.ListKernels(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]model.Kernel, 0, len(ks))
	for _, k := range ks {
		out = append(out, *k)
	}
	return out, nil
}

// ShowKernel returns one kernel with its files.
func (d *Daemon) ShowKernel(ctx context.Context, name string) (kernel.Kernel, error) {
	if _, err := d.store.GetKernel(ctx, name); err != nil {
		return kernel.Kernel{}, err
	}
	return d.kernels.Get(ctx, name)
}

// RemoveKernel deletes a kernel unless an image uses it.
func (d *Daemon) RemoveKernel(ctx context.Context, name string) error {
	d.kernelMu.Lock()
	defer d.kernelMu.Unlock()
	if _, err := d.store.GetKernel(ctx, name); err != nil {
		return err
	}
	ims, err := d.store.ListImages(ctx)
	if err != nil {
		return err
	}
	for _, im := range ims {
		if im.KernelRef == name {
			return errkind.WithHint(errkind.New(errkind.Conflict, "kernel %q is used by image %q", name, im.Name),
				"delete the image first")
		}
	}
	if err := d.kernels.Remove(ctx, name); err != nil && !errors.Is(err, errkind.NotFound) {
		return err
	}
	return d.store.DeleteKernel(ctx, name)
}

// KernelCatalog lists the embedded catalog, marking what is installed.
func (d *Daemon) KernelCatalog(ctx context.Context) ([]api.CatalogKernel, error) {
	cat, err := kernel.Catalog()
	if err != nil {
		return nil, err
	}
	out := make([]api.CatalogKernel, 0, len(cat))
	for _, e := range cat {
		_, gerr := d.store.GetKernel(ctx, e.Name)
		out = append(out, api.CatalogKernel{Name: e.Name, Version: e.Version, Source: e.Source.String(),
			Description: e.Description, Installed: gerr == nil})
	}
	return out, nil
}

// reconcileKernels makes the kernels table match the kernel store on disk.
func (d *Daemon) reconcileKernels(ctx context.Context) error {
	onDisk, err := d.kernels.List(ctx)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, k := range onDisk {
		seen[k.Name] = true
		if _, err := d.store.GetKernel(ctx, k.Name); errors.Is(err, errkind.NotFound) {
			m := k.Model()
			if err := d.store.CreateKernel(ctx, &m); err != nil {
				return err
			}
		}
	}
	rows, err := d.store.ListKernels(ctx)
	if err != nil {
		return err
	}
	for _, r := range rows {
		if !seen[r.Name] {
			d.log.Info("dropping kernel row without files", "kernel", r.Name)
			if err := d.store.DeleteKernel(ctx, r.Name); err != nil {
				return fmt.Errorf("dropping kernel %s: %w", r.Name, err)
			}
		}
	}
	return nil
}
