package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/bytesize"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/ext4"
	"github.com/bangerdev/banger/internal/imagepull"
	"github.com/bangerdev/banger/internal/model"
)

// rootfsName is the image's root filesystem inside images/<id>/.
const rootfsName = "rootfs.ext4"

// pulledImage is what pullAndFlatten reports about the image it wrote.
type pulledImage struct {
	Ref       string
	Digest    string
	Config    model.ImageConfig
	TreeBytes int64 // size of the flattened tree (compact ext4 bytes)
}

// pullAndFlattenFunc pulls ref and writes its flattened root filesystem as
// a compact ext4 at rootfs. It is a field on Daemon so tests can skip the
// registry (as in the seed).
type pullAndFlattenFunc func(ctx context.Context, ref, rootfs string, emit func(api.Event)) (pulledImage, error)

// realPullAndFlatten streams registry → blob cache → flattener → ext4:
// layers download in parallel while the flattener already reads them, and
// the ext4 writer runs concurrently with the flattener.
func (d *Daemon) realPullAndFlatten(ctx context.Context, ref, rootfs string, emit func(api.Event)) (pulledImage, error) {
	res, err := imagepull.PullToExt4(ctx, ref, rootfs, imagepull.Ext4Options{
		Options: imagepull.Options{
			CacheDir: d.layout.OCICacheDir(),
			Insecure: d.cfg.InsecureRegistries,
			Progress: func(p imagepull.Progress) { emit(pullEvent(p)) },
		},
		Compact: true,
		Label:   "banger-rootfs",
	})
	if err != nil {
		return pulledImage{}, err
	}
	c := res.Image.Config
	return pulledImage{
		Ref: res.Image.Ref, Digest: res.Image.Digest, TreeBytes: max(res.Stats.EstimatedSize, res.Bytes),
		Config: model.ImageConfig{Env: c.Env, WorkingDir: c.WorkingDir, User: c.User,
			Entrypoint: c.Entrypoint, Cmd: c.Cmd, Labels: c.Labels},
	}, nil
}

// pullEvent turns pipeline progress into an API event.
func pullEvent(p imagepull.Progress) api.Event {
	e := api.Event{Stage: string(p.Stage)}
	switch p.Stage {
	case imagepull.StageDownloading:
		e.Message = fmt.Sprintf("%d layers", p.Layers)
		e.Current, e.Total, e.Unit = p.Bytes, p.Total, "bytes"
	case imagepull.StageFlattening:
		e.Message = fmt.Sprintf("layer %d/%d", p.Layer, p.Layers)
	case imagepull.StageWriting:
		e.Message = "writing ext4"
	}
	return e
}

// PullImage downloads an OCI image, flattens it into an ext4 root
// filesystem and registers it as a managed image, following the seed:
//  1. parse and validate the ref; 2. derive the default name; 3. reject an
//     existing name (before any download); 4. resolve kernel inputs;
//  5. take the image lock and stage at <images>/<id>.staging; 6. pull into
//     the blob cache and flatten; 7. size = max(tree×1.25, 1 GiB) unless
//     --size; 8. build rootfs.ext4 in the staging dir; 9. stage boot
//     artifacts; 10. publish by rename; 11. persist with Managed=true.
//
// Any failure removes the staging dir; a failure after the rename removes
// the final dir.
func (d *Daemon) PullImage(ctx context.Context, req api.ImagePullRequest, emit func(api.Event)) (*model.Image, error) {
	// Catalog names first (bundle fast path); otherwise the OCI flow.
	if im, handled, err := d.pullFromCatalog(ctx, &req, emit); handled {
		return im, err
	}
	// 1.
	if _, err := imagepull.ParseRef(req.Ref, d.cfg.InsecureRegistries); err != nil {
		return nil, err
	}
	// 2.
	name := req.Name
	if name == "" {
		n, err := imagepull.DefaultName(req.Ref)
		if err != nil {
			return nil, err
		}
		name = n
	}
	// 3.
	size, err := d.checkNewImage(ctx, name, req.Size)
	if err != nil {
		return nil, err
	}
	// 4.
	kin, err := d.resolveKernelInputs(ctx, kernelInputs{Ref: req.KernelRef, Kernel: req.KernelPath, Initrd: req.InitrdPath, Modules: req.ModulesDir})
	if err != nil {
		return nil, err
	}
	// 5.
	st, err := d.stageImage(name, "pulled")
	if err != nil {
		return nil, err
	}
	defer st.done()
	// 6–8.
	rootfs := st.rootfs()
	emit(api.Event{Stage: "resolving", Message: req.Ref})
	pulled, err := d.pullAndFlatten(ctx, req.Ref, rootfs, emit)
	if err != nil {
		return nil, fmt.Errorf("pulling %s: %w", req.Ref, err)
	}
	if size == 0 {
		size = imagepull.DefaultSize(pulled.TreeBytes)
	}
	if size < pulled.TreeBytes {
		return nil, errkind.New(errkind.InvalidArgument, "--size %s is smaller than the image content (%s)",
			bytesize.Format(size), bytesize.Format(pulled.TreeBytes))
	}
	if err := ext4.Grow(ctx, rootfs, size, false); err != nil {
		return nil, fmt.Errorf("sizing rootfs: %w", err)
	}
	// 9–11.
	im := &model.Image{
		SourceRef: pulled.Ref, ManifestDigest: pulled.Digest,
		Config: pulled.Config, SizeBytes: size, CreatedAt: time.Now().UTC(),
	}
	if err := st.publish(ctx, kin, im); err != nil {
		return nil, err
	}
	emit(api.Event{Stage: "done", Message: fmt.Sprintf("image %s ready (%s)", name, bytesize.Format(pulled.TreeBytes))})
	return im, nil
}

// minImageSize is the floor of the default image size rule.
const minImageSize = imagepull.MinImageSize
