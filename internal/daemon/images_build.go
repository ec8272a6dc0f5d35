package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/bytesize"
	"github.com/bangerdev/banger/internal/dockerfile"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/ext4"
	"github.com/bangerdev/banger/internal/imagebuild"
	"github.com/bangerdev/banger/internal/imagepull"
	"github.com/bangerdev/banger/internal/model"
)

// buildLogName is the build log kept in a built image's directory.
const buildLogName = "build.log"

// BuildCacheDir is where image builds keep their step cache.
func (d *Daemon) buildCacheDir() string { return d.layout.BuildCacheDir() }

// BuildImage builds a Dockerfile into a new managed image: the FROM image
// (a local image, else pulled), its steps in build VMs (see
// internal/imagebuild), the result staged, sized, given its kernel,
// renamed into place and recorded, with the build log beside it.
func (d *Daemon) BuildImage(ctx context.Context, req imagebuild.APIRequest, emit func(api.Event)) (*model.Image, error) {
	if req.Context == "" || !filepath.IsAbs(req.Context) {
		return nil, errkind.New(errkind.InvalidArgument, "the build context %q must be an absolute path", req.Context)
	}
	df, err := dockerfile.Parse(strings.NewReader(req.Dockerfile))
	if err != nil {
		if req.DockerfilePath != "" {
			return nil, errkind.Wrap(errkind.InvalidArgument, err, "%s", req.DockerfilePath)
		}
		return nil, err
	}
	name := req.Name
	if name == "" {
		name = defaultBuildName(req.Context)
	}
	if err := model.ValidateImageName("image", name); err != nil {
		return nil, errkind.WithHint(err, "pass --name") // the name may come from the context dir
	}
	size, err := d.checkNewImage(ctx, name, req.Size)
	if err != nil {
		return nil, err
	}
	ref, err := df.BaseRef(req.BuildArgs)
	if err != nil {
		return nil, err
	}
	base, err := d.buildBase(ctx, ref, req.KernelRef, emit)
	if err != nil {
		return nil, err
	}
	plan, err := df.Plan(dockerfile.Config{Env: base.Config.Env, WorkingDir: base.Config.WorkingDir, User: base.Config.User,
		Entrypoint: base.Config.Entrypoint, Cmd: base.Config.Cmd, Labels: base.Config.Labels}, req.BuildArgs)
	if err != nil {
		return nil, err
	}
	if len(plan.UnusedArgs) > 0 {
		emit(api.Event{Stage: "warning", Message: fmt.Sprintf("build args not consumed by any ARG: %s", strings.Join(plan.UnusedArgs, ", "))})
	}
	bf, err := d.bootArtifacts(ctx, base, req.KernelRef, true)
	if err != nil {
		return nil, err
	}
	drv, err := d.driver(d.cfg.DefaultVMM)
	if err != nil {
		return nil, err
	}

	st, err := d.stageImage(name, "built")
	if err != nil {
		return nil, err
	}
	defer st.done()
	staging := st.dir
	logf, err := os.Create(filepath.Join(staging, buildLogName))
	if err != nil {
		return nil, fmt.Errorf("creating the build log: %w", err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "banger image build %s (FROM %s, image %s)\n", req.Context, ref, base.Name)
	lw := &lineEmitter{w: logf, emit: emit}
	runner := &imagebuild.VMRunner{
		Driver: drv, Kernel: bf.Kernel, Initrd: bf.Initrd,
		CPUs: max(d.cfg.VMDefaults.CPUs, 2), MemoryMiB: max(d.cfg.VMDefaults.MemoryMiB, 1024),
		RunDir: d.layout.BuildRunDir(),
	}
	b := &imagebuild.Builder{CacheDir: d.buildCacheDir(), Runner: runner}
	rootfs := st.rootfs()
	t0 := time.Now()
	res, err := b.Build(ctx, imagebuild.Request{
		Plan: plan, Context: req.Context, Network: req.Network, Output: rootfs, Log: lw, NoCache: req.NoCache,
		Base: imagebuild.Base{Rootfs: base.RootfsPath, Digest: baseDigest(base)},
		Progress: func(e imagebuild.Event) {
			if e.Step == 0 {
				emit(api.Event{Stage: "build", Message: e.Message})
				return
			}
			msg := e.Text
			if e.Cached {
				msg += " (cached)"
			}
			emit(api.Event{Stage: "step", Message: msg, Current: int64(e.Step), Total: int64(e.Steps), Unit: "steps"})
		},
	})
	lw.flush()
	if err != nil {
		var se *imagebuild.StepError
		if errors.As(err, &se) {
			return nil, errkind.WithHint(fmt.Errorf("building %s: %w", name, err), "the step's output ends with:\n"+strings.TrimRight(se.Output, "\n"))
		}
		return nil, fmt.Errorf("building %s: %w", name, err)
	}
	if size == 0 {
		size = max(res.Bytes*5/4, minImageSize)
	}
	if size < res.Bytes {
		return nil, errkind.New(errkind.InvalidArgument, "--size %s is smaller than the image content (%s)",
			bytesize.Format(size), bytesize.Format(res.Bytes))
	}
	if err := ext4.Grow(ctx, rootfs, size, false); err != nil {
		return nil, fmt.Errorf("sizing rootfs: %w", err)
	}
	fmt.Fprintf(logf, "built in %s, %d steps (%d cached), key %s\n", time.Since(t0).Round(time.Millisecond), len(res.Steps), cachedSteps(res), res.Key)
	c := plan.Config
	im := &model.Image{
		SourceRef: "dockerfile:" + req.Context, ManifestDigest: "sha256:" + res.Key,
		Config:    model.ImageConfig{Env: c.Env, WorkingDir: c.WorkingDir, User: c.User, Entrypoint: c.Entrypoint, Cmd: c.Cmd, Labels: c.Labels},
		SizeBytes: size, CreatedAt: time.Now().UTC(), InitMode: base.InitMode,
	}
	kin := kernelInputs{Ref: req.KernelRef}
	if kin.Ref == "" {
		kin = kernelInputs{Ref: base.KernelRef, Kernel: base.KernelPath, Initrd: base.InitrdPath, Modules: base.ModulesDir}
	}
	if err := st.publish(ctx, kin, im); err != nil {
		return nil, err
	}
	emit(api.Event{Stage: "done", Message: fmt.Sprintf("image %s built in %s (log: %s)", name,
		time.Since(t0).Round(time.Millisecond), filepath.Join(st.final, buildLogName))})
	return im, nil
}

func cachedSteps(res *imagebuild.Result) int {
	n := 0
	for _, s := range res.Steps {
		if s.Cached {
			n++
		}
	}
	return n
}

// buildBase resolves a FROM reference: a local image of that name, or of
// the name a pull would give it, else a pull (catalog names first).
func (d *Daemon) buildBase(ctx context.Context, ref, kernelRef string, emit func(api.Event)) (*model.Image, error) {
	if im, err := d.store.GetImage(ctx, ref); err == nil {
		return im, nil
	}
	if n, err := imagepull.DefaultName(ref); err == nil {
		if im, err := d.store.GetImage(ctx, n); err == nil {
			return im, nil
		}
	}
	emit(api.Event{Stage: "base", Message: "pulling " + ref})
	im, err := d.PullImage(ctx, api.ImagePullRequest{Ref: ref, KernelRef: kernelRef}, emit)
	if err != nil {
		return nil, fmt.Errorf("pulling the base image %s: %w", ref, err)
	}
	return im, nil
}

// baseDigest identifies a base image's content for the step cache.
func baseDigest(im *model.Image) string {
	if im.ManifestDigest != "" {
		return im.ManifestDigest
	}
	return "image:" + im.ID + "@" + im.CreatedAt.UTC().Format(time.RFC3339Nano)
}

var nonName = regexp.MustCompile(`[^a-z0-9._-]+`)

// defaultBuildName derives an image name from the context directory.
func defaultBuildName(contextDir string) string {
	n := nonName.ReplaceAllString(strings.ToLower(filepath.Base(contextDir)), "-")
	return strings.Trim(n, "-._")
}

// lineEmitter writes the build log to w and emits each line as an event.
type lineEmitter struct {
	mu   sync.Mutex
	w    io.Writer
	emit func(api.Event)
	buf  []byte
}

func (l *lineEmitter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.w.Write(p); err != nil {
		return 0, err
	}
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(api.Event{Stage: "log", Message: string(l.buf[:i])})
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 {
		l.emit(api.Event{Stage: "log", Message: string(l.buf)})
		l.buf = nil
	}
	return len(p), nil
}

func (l *lineEmitter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(api.Event{Stage: "log", Message: string(l.buf)})
		l.buf = nil
	}
}
