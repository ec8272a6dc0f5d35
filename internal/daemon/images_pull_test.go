package daemon

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/ext4"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/paths"
)

func newTestDaemon(t *testing.T) *Daemon {
	t.Helper()
	home := t.TempDir()
	l := paths.Layout{
		ConfigDir: filepath.Join(home, "config"), StateDir: filepath.Join(home, "state"),
		CacheDir: filepath.Join(home, "cache"), RuntimeDir: filepath.Join(home, "run"),
	}
	cfg := config.Default()
	cfg.Network.Disabled = true // unit tests never touch host networking
	d, err := New(context.Background(), Options{Layout: l, Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// fixturePull is a pullAndFlatten stub that writes a small real ext4.
func fixturePull(calls *atomic.Int32) pullAndFlattenFunc {
	return func(ctx context.Context, ref, rootfs string, emit func(api.Event)) (pulledImage, error) {
		calls.Add(1)
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		_ = tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755})
		_ = tw.WriteHeader(&tar.Header{Name: "bin/hello", Typeflag: tar.TypeReg, Mode: 0o755, Size: 5})
		_, _ = tw.Write([]byte("hello"))
		_ = tw.Close()
		info, err := ext4.FromTar(ctx, &buf, rootfs, ext4.Options{})
		if err != nil {
			return pulledImage{}, err
		}
		return pulledImage{Ref: ref, Digest: "sha256:abc", TreeBytes: info.Bytes,
			Config: model.ImageConfig{Env: []string{"PATH=/bin"}, Cmd: []string{"/bin/sh"}}}, nil
	}
}

func fakeKernel(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(p, []byte("\x7fELF fake kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func stagingLeft(t *testing.T, d *Daemon) []string {
	m, _ := filepath.Glob(filepath.Join(d.layout.ImagesDir(), "*.staging"))
	return m
}

func TestPullImageHappyPath(t *testing.T) {
	d := newTestDaemon(t)
	var calls atomic.Int32
	d.pullAndFlatten = fixturePull(&calls)
	k := fakeKernel(t)
	im, err := d.PullImage(context.Background(), api.ImagePullRequest{Ref: "debian:bookworm", KernelPath: k}, func(api.Event) {})
	if err != nil {
		t.Fatal(err)
	}
	if im.Name != "debian-bookworm" || !im.Managed || im.ManifestDigest != "sha256:abc" || im.SizeBytes != 1<<30 {
		t.Fatalf("image = %+v", im)
	}
	for _, p := range []string{im.RootfsPath, im.KernelPath} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("artifact missing: %v", err)
		}
	}
	if filepath.Dir(im.KernelPath) != filepath.Dir(im.RootfsPath) {
		t.Fatalf("kernel not staged beside rootfs: %s", im.KernelPath)
	}
	if left := stagingLeft(t, d); len(left) > 0 {
		t.Fatalf("staging left: %v", left)
	}
	got, err := d.store.GetImage(context.Background(), "debian-bookworm")
	if err != nil || got.Config.Cmd[0] != "/bin/sh" {
		t.Fatalf("stored image %+v %v", got, err)
	}
}

func TestPullImageRejectsExistingNameBeforeDownload(t *testing.T) {
	d := newTestDaemon(t)
	var calls atomic.Int32
	d.pullAndFlatten = fixturePull(&calls)
	k := fakeKernel(t)
	req := api.ImagePullRequest{Ref: "busybox:latest", KernelPath: k}
	if _, err := d.PullImage(context.Background(), req, func(api.Event) {}); err != nil {
		t.Fatal(err)
	}
	_, err := d.PullImage(context.Background(), req, func(api.Event) {})
	if !errors.Is(err, errkind.AlreadyExists) {
		t.Fatalf("err = %v", err)
	}
	if calls.Load() != 1 {
		t.Fatalf("second pull downloaded (calls = %d)", calls.Load())
	}
}

func TestPullImageMissingKernel(t *testing.T) {
	d := newTestDaemon(t)
	var calls atomic.Int32
	d.pullAndFlatten = fixturePull(&calls)
	_, err := d.PullImage(context.Background(), api.ImagePullRequest{Ref: "busybox"}, func(api.Event) {})
	if !errors.Is(err, errkind.InvalidArgument) || errkind.Hint(err) == "" {
		t.Fatalf("err = %v (hint %q)", err, errkind.Hint(err))
	}
	if calls.Load() != 0 {
		t.Fatal("pulled without a kernel")
	}
	_, err = d.PullImage(context.Background(), api.ImagePullRequest{Ref: "busybox", KernelRef: "k", KernelPath: "/x"}, func(api.Event) {})
	if !errors.Is(err, errkind.InvalidArgument) {
		t.Fatalf("kernel ref + path: %v", err)
	}
	_, err = d.PullImage(context.Background(), api.ImagePullRequest{Ref: "busybox", KernelPath: "relative/vmlinux"}, func(api.Event) {})
	if !errors.Is(err, errkind.InvalidArgument) {
		t.Fatalf("relative kernel path: %v", err)
	}
}

func TestPullImageFailureCleansStaging(t *testing.T) {
	d := newTestDaemon(t)
	d.pullAndFlatten = func(ctx context.Context, ref, rootfs string, emit func(api.Event)) (pulledImage, error) {
		if err := os.WriteFile(rootfs, []byte("partial"), 0o644); err != nil {
			return pulledImage{}, err
		}
		return pulledImage{}, errors.New("registry went away")
	}
	_, err := d.PullImage(context.Background(), api.ImagePullRequest{Ref: "busybox", KernelPath: fakeKernel(t)}, func(api.Event) {})
	if err == nil {
		t.Fatal("pull succeeded")
	}
	if left := stagingLeft(t, d); len(left) > 0 {
		t.Fatalf("staging left: %v", left)
	}
	if ims, _ := d.store.ListImages(context.Background()); len(ims) != 0 {
		t.Fatalf("row left: %d", len(ims))
	}
	entries, _ := os.ReadDir(d.layout.ImagesDir())
	if len(entries) != 0 {
		t.Fatalf("images dir not empty: %v", entries)
	}
}

func TestPullImageSizeFlag(t *testing.T) {
	d := newTestDaemon(t)
	var calls atomic.Int32
	d.pullAndFlatten = fixturePull(&calls)
	im, err := d.PullImage(context.Background(), api.ImagePullRequest{Ref: "busybox", Size: "2G", KernelPath: fakeKernel(t)}, func(api.Event) {})
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(im.RootfsPath)
	if im.SizeBytes != 2<<30 || fi.Size() != 2<<30 {
		t.Fatalf("size = %d, file %d", im.SizeBytes, fi.Size())
	}
	if _, err := d.PullImage(context.Background(), api.ImagePullRequest{Ref: "other", Size: "lots", KernelPath: fakeKernel(t)}, func(api.Event) {}); !errors.Is(err, errkind.InvalidArgument) {
		t.Fatalf("bad size: %v", err)
	}
}

func TestStartupRemovesStaging(t *testing.T) {
	d := newTestDaemon(t)
	junk := filepath.Join(d.layout.ImagesDir(), "dead.staging")
	if err := os.MkdirAll(filepath.Join(junk, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	d.Close()
	d2, err := New(context.Background(), Options{Layout: d.layout, Config: d.cfg, Logger: d.log})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if _, err := os.Stat(junk); !os.IsNotExist(err) {
		t.Fatalf("staging survived restart: %v", err)
	}
}

func TestStartupRemovesPublishedDirWithoutRow(t *testing.T) {
	d := newTestDaemon(t)
	var calls atomic.Int32
	d.pullAndFlatten = fixturePull(&calls)
	im, err := d.PullImage(context.Background(), api.ImagePullRequest{Ref: "busybox", KernelPath: fakeKernel(t)}, func(api.Event) {})
	if err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(d.layout.ImagesDir(), "0123456789ab")
	if err := os.MkdirAll(orphan, 0o755); err != nil {
		t.Fatal(err)
	}
	d.Close()
	d2, err := New(context.Background(), Options{Layout: d.layout, Config: d.cfg, Logger: d.log})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Fatalf("orphan survived: %v", err)
	}
	if _, err := os.Stat(im.RootfsPath); err != nil {
		t.Fatalf("recorded image removed: %v", err)
	}
}

// TestConcurrentPullsSameName: two pulls of one name at once — one wins,
// the other gets already_exists, and nothing leaks.
func TestConcurrentPullsSameName(t *testing.T) {
	d := newTestDaemon(t)
	var calls atomic.Int32
	inner := fixturePull(&calls)
	release := make(chan struct{})
	d.pullAndFlatten = func(ctx context.Context, ref, rootfs string, emit func(api.Event)) (pulledImage, error) {
		<-release
		return inner(ctx, ref, rootfs, emit)
	}
	k := fakeKernel(t)
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			_, err := d.PullImage(context.Background(), api.ImagePullRequest{Ref: "busybox", KernelPath: k}, func(api.Event) {})
			errs <- err
		}()
	}
	// Let both reach the seam (or be refused), then let the download finish.
	time.Sleep(200 * time.Millisecond)
	close(release)
	var ok, exists int
	for i := 0; i < 2; i++ {
		err := <-errs
		switch {
		case err == nil:
			ok++
		case errors.Is(err, errkind.AlreadyExists):
			exists++
		default:
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if ok != 1 || exists != 1 {
		t.Fatalf("ok=%d exists=%d", ok, exists)
	}
	if left := stagingLeft(t, d); len(left) > 0 {
		t.Fatalf("staging left: %v", left)
	}
	entries, _ := os.ReadDir(d.layout.ImagesDir())
	if len(entries) != 1 {
		t.Fatalf("images dir has %d entries, want 1", len(entries))
	}
}
