package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/bytesize"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/ext4"
	"github.com/bangerdev/banger/internal/imagecat"
	"github.com/bangerdev/banger/internal/kernel"
	"github.com/bangerdev/banger/internal/model"
)

// imageCatalog is the embedded image catalog with the configured catalog
// file merged in and the configured base URL applied. It is read per
// request: it is small, and config changes need only a daemon restart.
func (d *Daemon) imageCatalog() (*imagecat.Catalog, error) {
	return imagecat.Load(imagecat.Options{File: d.cfg.ImageCatalog, BaseURL: d.cfg.CatalogURL})
}

// imageRef is the image a VM request boots: the requested one, else the
// configured default_image, else the image catalog's default.
func (d *Daemon) imageRef(requested string) (string, error) {
	if requested != "" {
		return requested, nil
	}
	if d.cfg.DefaultImage != "" {
		return d.cfg.DefaultImage, nil
	}
	c, err := d.imageCatalog()
	if err != nil {
		return "", err
	}
	if c.Default == "" {
		return "", errkind.WithHint(errkind.New(errkind.InvalidArgument, "no image given and the image catalog names no default"),
			"pass --image NAME, or set default_image in banger's config.toml")
	}
	return c.Default, nil
}

// ImageCatalog lists the catalog images, marking the installed ones.
func (d *Daemon) ImageCatalog(ctx context.Context) ([]imagecat.Available, error) {
	c, err := d.imageCatalog()
	if err != nil {
		return nil, err
	}
	out := make([]imagecat.Available, 0, len(c.Images))
	for _, im := range c.Images {
		a := imagecat.Available{Image: im, Default: im.Name == c.Default, Source: im.OCIRef}
		if im.Bundle != "" {
			if u, err := c.BundleURL(im); err == nil {
				a.Source = u
			} else if im.OCIRef != "" {
				a.Source = im.OCIRef + " (bundle " + im.Bundle + " once catalog_url is set)"
			} else {
				a.Source = im.Bundle + " (no catalog_url)"
			}
		}
		_, gerr := d.store.GetImage(ctx, im.Name)
		a.Installed = gerr == nil
		out = append(out, a)
	}
	return out, nil
}

// pullFromCatalog runs first in PullImage: a catalog name with a bundle is
// fetched here (handled is true and the result final); a catalog name
// backed by an OCI reference rewrites req (ref, default name, default
// kernel) for the OCI flow; anything else leaves req alone.
func (d *Daemon) pullFromCatalog(ctx context.Context, req *api.ImagePullRequest, emit func(api.Event)) (*model.Image, bool, error) {
	c, err := d.imageCatalog()
	if err != nil {
		return nil, true, err
	}
	res, err := c.Resolve(req.Ref)
	if err != nil {
		return nil, true, err
	}
	if res.Image == nil {
		return nil, false, nil
	}
	kin, err := d.catalogKernel(ctx, *req, *res.Image, emit)
	if err != nil {
		return nil, true, err
	}
	if res.BundleURL == "" {
		emit(api.Event{Stage: "resolving", Message: fmt.Sprintf("catalog image %s is %s", req.Ref, res.OCIRef)})
		if req.Name == "" {
			req.Name = res.Image.Name
		}
		req.Ref = res.OCIRef
		req.KernelRef, req.KernelPath, req.InitrdPath, req.ModulesDir = kin.Ref, kin.Kernel, kin.Initrd, kin.Modules
		return nil, false, nil
	}
	im, err := d.pullBundle(ctx, *req, *res.Image, res.BundleURL, kin, emit)
	return im, true, err
}

// catalogKernel picks the kernel of a catalog pull: --kernel-ref, else
// explicit kernel paths, else the catalog entry's kernel_ref, which is
// pulled from the kernel catalog when it is not installed yet.
func (d *Daemon) catalogKernel(ctx context.Context, req api.ImagePullRequest, im imagecat.Image, emit func(api.Event)) (kernelInputs, error) {
	in := kernelInputs{Ref: req.KernelRef, Kernel: req.KernelPath, Initrd: req.InitrdPath, Modules: req.ModulesDir}
	if in.Ref == "" && in.Kernel == "" && in.Initrd == "" && in.Modules == "" && im.KernelRef != "" {
		if err := d.ensureKernel(ctx, im.KernelRef, emit); err != nil {
			return in, err
		}
		in.Ref = im.KernelRef
	}
	return d.resolveKernelInputs(ctx, in)
}

// ensureKernel makes sure the kernel called name is installed, pulling it
// from the kernel catalog when it is not.
func (d *Daemon) ensureKernel(ctx context.Context, name string, emit func(api.Event)) error {
	if _, err := d.store.GetKernel(ctx, name); err == nil {
		return nil
	}
	if _, err := kernel.Lookup(name); err != nil {
		return errkind.WithHint(errkind.New(errkind.NotFound, "kernel %q (named by the image catalog) is not installed and not in the kernel catalog", name),
			"import it with `banger kernel import "+name+"`, or pass --kernel-ref")
	}
	emit(api.Event{Stage: "kernel", Message: "pulling kernel " + name})
	if _, err := d.PullKernel(ctx, name, emit); err != nil && !errors.Is(err, errkind.AlreadyExists) {
		return fmt.Errorf("pulling kernel %s: %w", name, err)
	}
	return nil
}

// pullBundle is the catalog fast path of PullImage: the bundle is
// streamed into a staging dir (verified against the pinned sha256 while it
// arrives), sized, given its kernel, renamed into place and recorded.
func (d *Daemon) pullBundle(ctx context.Context, req api.ImagePullRequest, entry imagecat.Image, url string, kin kernelInputs, emit func(api.Event)) (*model.Image, error) {
	name := req.Name
	if name == "" {
		name = entry.Name
	}
	size, err := d.checkNewImage(ctx, name, req.Size)
	if err != nil {
		return nil, err
	}
	st, err := d.stageImage(name, "pulled")
	if err != nil {
		return nil, err
	}
	defer st.done()
	emit(api.Event{Stage: "downloading", Message: url, Total: entry.Size, Unit: "bytes"})
	last := time.Time{}
	m, err := imagecat.Fetch(ctx, url, entry, st.dir, imagecat.FetchOptions{Progress: func(done, total int64) {
		if time.Since(last) > 200*time.Millisecond || done == total {
			last = time.Now()
			emit(api.Event{Stage: "downloading", Current: done, Total: total, Unit: "bytes"})
		}
	}})
	if err != nil {
		return nil, fmt.Errorf("pulling %s from the catalog: %w", entry.Name, err)
	}
	rootfs := st.rootfs()
	if size > 0 {
		if size < m.RootfsSize {
			return nil, errkind.New(errkind.InvalidArgument, "--size %s is smaller than the bundled rootfs (%s)",
				bytesize.Format(size), bytesize.Format(m.RootfsSize))
		}
		if err := ext4.Grow(ctx, rootfs, size, false); err != nil {
			return nil, fmt.Errorf("sizing rootfs: %w", err)
		}
	} else {
		size = m.RootfsSize
	}
	im := &model.Image{
		SourceRef:      "catalog:" + entry.Name,
		ManifestDigest: "sha256:" + entry.SHA256,
		Config:         m.Config, SizeBytes: size, CreatedAt: time.Now().UTC(),
	}
	if err := st.publish(ctx, kin, im); err != nil {
		return nil, err
	}
	emit(api.Event{Stage: "done", Message: fmt.Sprintf("image %s ready (bundle %s verified)", name, entry.SHA256[:imagecat.PrefixLen])})
	return im, nil
}

// BundleImage writes the catalog bundle of a local image into
// req.OutDir and returns the catalog entry that pins it.
func (d *Daemon) BundleImage(ctx context.Context, ref string, req imagecat.BundleRequest, emit func(api.Event)) (imagecat.BundleInfo, error) {
	if req.OutDir == "" || !filepath.IsAbs(req.OutDir) {
		return imagecat.BundleInfo{}, errkind.New(errkind.InvalidArgument, "the output directory %q must be an absolute path", req.OutDir)
	}
	im, err := d.store.GetImage(ctx, ref)
	if err != nil {
		return imagecat.BundleInfo{}, err
	}
	if im.KernelRef == "" {
		return imagecat.BundleInfo{}, errkind.WithHint(errkind.New(errkind.InvalidArgument, "image %q has no kernel ref: a bundle names its kernel by catalog name", im.Name),
			"register or pull the image with --kernel-ref")
	}
	distro := req.Distro
	if distro == "" {
		distro = osReleaseDistro(ctx, im.RootfsPath)
	}
	emit(api.Event{Stage: "bundling", Message: fmt.Sprintf("%s (%s) into %s", im.Name, bytesize.Format(im.SizeBytes), req.OutDir)})
	info, err := imagecat.Bundle(ctx, im.RootfsPath, imagecat.Manifest{
		Name: im.Name, Distro: distro, KernelRef: im.KernelRef, Config: im.Config, SourceRef: im.SourceRef,
		CreatedAt: im.CreatedAt, // the same image always makes the same bundle
	}, req.OutDir)
	if err != nil {
		return imagecat.BundleInfo{}, fmt.Errorf("bundling image %s: %w", im.Name, err)
	}
	emit(api.Event{Stage: "done", Message: fmt.Sprintf("%s (%s)", info.Path, bytesize.Format(info.Size))})
	return info, nil
}

// osReleaseDistro reads ID and VERSION_ID from the image's os-release
// (without mounting it) and returns "id-version", or "unknown".
func osReleaseDistro(ctx context.Context, rootfs string) string {
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		out, err := exec.CommandContext(ctx, "debugfs", "-R", "cat "+p, rootfs).Output()
		if err != nil || len(out) == 0 {
			continue
		}
		vals := map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), "=")
			if ok {
				vals[k] = strings.Trim(v, `"'`)
			}
		}
		if id := vals["ID"]; id != "" {
			if v := vals["VERSION_ID"]; v != "" {
				return id + "-" + v
			}
			return id
		}
	}
	return "unknown"
}
