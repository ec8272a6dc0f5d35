package daemon

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/ext4"
	"github.com/bangerdev/banger/internal/imagecat"
	"github.com/bangerdev/banger/internal/model"
)

func writeTestCatalog(t *testing.T, d *Daemon, c imagecat.Catalog) {
	t.Helper()
	b, _ := json.Marshal(c)
	p := filepath.Join(t.TempDir(), "catalog.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	d.cfg.ImageCatalog = p
}

func TestPullCatalogOCIEntry(t *testing.T) {
	d := newTestDaemon(t)
	var calls atomic.Int32
	var pulled string
	inner := fixturePull(&calls)
	d.pullAndFlatten = func(ctx context.Context, ref, rootfs string, emit func(api.Event)) (pulledImage, error) {
		pulled = ref
		return inner(ctx, ref, rootfs, emit)
	}
	writeTestCatalog(t, d, imagecat.Catalog{Version: 1, Images: []imagecat.Image{
		{Name: "tool", Distro: "x", Arch: "amd64", OCIRef: "registry.local/team/tool:1.2"}}})
	im, err := d.PullImage(context.Background(), api.ImagePullRequest{Ref: "tool", KernelPath: fakeKernel(t)}, func(api.Event) {})
	if err != nil {
		t.Fatal(err)
	}
	if pulled != "registry.local/team/tool:1.2" || im.Name != "tool" || im.SourceRef != "registry.local/team/tool:1.2" {
		t.Fatalf("pulled %q, image %+v", pulled, im)
	}
	// A near miss is refused before any pull.
	_, err = d.PullImage(context.Background(), api.ImagePullRequest{Ref: "tol", KernelPath: fakeKernel(t)}, func(api.Event) {})
	if !errors.Is(err, errkind.NotFound) || !strings.Contains(errkind.Hint(err), "did you mean tool?") || calls.Load() != 1 {
		t.Fatalf("typo: %v (hint %q), %d pulls", err, errkind.Hint(err), calls.Load())
	}
	// Plain OCI refs still take the OCI path.
	if _, err := d.PullImage(context.Background(), api.ImagePullRequest{Ref: "example.org/other:1", KernelPath: fakeKernel(t)}, func(api.Event) {}); err != nil || pulled != "example.org/other:1" {
		t.Fatalf("oci ref: %v, pulled %q", err, pulled)
	}
}

func TestPullCatalogBundle(t *testing.T) {
	d := newTestDaemon(t)
	var calls atomic.Int32
	d.pullAndFlatten = fixturePull(&calls)
	// A real bundle of a small ext4.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "etc/os-release", Typeflag: tar.TypeReg, Mode: 0o644, Size: 8})
	tw.Write([]byte("ID=tiny\n"))
	tw.Close()
	rootfs := filepath.Join(t.TempDir(), "rootfs.ext4")
	if _, err := ext4.FromTar(context.Background(), &buf, rootfs, ext4.Options{Size: 32 << 20}); err != nil {
		t.Fatal(err)
	}
	pub := t.TempDir()
	info, err := imagecat.Bundle(context.Background(), rootfs, imagecat.Manifest{Name: "tiny", Distro: "tiny",
		Config: model.ImageConfig{Env: []string{"PATH=/bin"}, WorkingDir: "/srv"}}, pub)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.FileServer(http.Dir(pub)))
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	d.cfg.CatalogURL = srv.URL
	writeTestCatalog(t, d, imagecat.Catalog{Version: 1, Images: []imagecat.Image{info.Entry}})

	var events []api.Event
	im, err := d.PullImage(context.Background(), api.ImagePullRequest{Ref: "tiny", KernelPath: fakeKernel(t), Size: "64M"}, func(e api.Event) { events = append(events, e) })
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 0 || im.Name != "tiny" || im.SourceRef != "catalog:tiny" || im.ManifestDigest != "sha256:"+info.SHA256 ||
		im.Config.WorkingDir != "/srv" || im.SizeBytes != 64<<20 || im.KernelPath == "" {
		t.Fatalf("image = %+v (registry pulls %d)", im, calls.Load())
	}
	if fi, err := os.Stat(im.RootfsPath); err != nil || fi.Size() != 64<<20 {
		t.Fatalf("rootfs: %v", err)
	}
	if err := ext4.Check(context.Background(), im.RootfsPath); err != nil {
		t.Fatal(err)
	}
	if len(stagingLeft(t, d)) != 0 {
		t.Fatal("staging left")
	}
	if len(events) == 0 || events[len(events)-1].Stage != "done" {
		t.Errorf("events = %+v", events)
	}
	avail, err := d.ImageCatalog(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range avail {
		if a.Name == "tiny" {
			found = a.Installed && a.Source == srv.URL+"/"+info.Entry.Bundle
		}
	}
	if !found {
		t.Errorf("catalog listing: %+v", avail)
	}

	// Another image's bundle under this name publishes nothing.
	bad := info.Entry
	bad.Name = "tiny2"
	bad.Bundle = imagecat.BundleName("tiny2", "amd64", info.SHA256)
	data, _ := os.ReadFile(info.Path)
	os.WriteFile(filepath.Join(pub, bad.Bundle), data, 0o644)
	writeTestCatalog(t, d, imagecat.Catalog{Version: 1, Images: []imagecat.Image{bad}})
	if _, err := d.PullImage(context.Background(), api.ImagePullRequest{Ref: "tiny2", KernelPath: fakeKernel(t)}, func(api.Event) {}); err == nil || !strings.Contains(err.Error(), "holds tiny/amd64") {
		t.Fatalf("mismatched bundle: %v", err)
	}
	if _, err := d.store.GetImage(context.Background(), "tiny2"); err == nil || len(stagingLeft(t, d)) != 0 {
		t.Fatal("a refused bundle was published")
	}

	// Bundling a local image needs its kernel by name.
	if _, err := d.BundleImage(context.Background(), "tiny", imagecat.BundleRequest{OutDir: t.TempDir()}, func(api.Event) {}); !errors.Is(err, errkind.InvalidArgument) {
		t.Fatalf("bundle without kernel ref: %v", err)
	}
	if _, err := d.BundleImage(context.Background(), "tiny", imagecat.BundleRequest{OutDir: "relative"}, func(api.Event) {}); !errors.Is(err, errkind.InvalidArgument) {
		t.Fatalf("relative out dir: %v", err)
	}
}

func TestImageRefDefault(t *testing.T) {
	d := newTestDaemon(t)
	// An explicit image wins; then default_image; then the catalog's default.
	if ref, err := d.imageRef("mine"); err != nil || ref != "mine" {
		t.Fatalf("explicit: %q, %v", ref, err)
	}
	if ref, err := d.imageRef(""); err != nil || ref != "debian-bookworm" {
		t.Fatalf("embedded catalog default: %q, %v", ref, err)
	}
	writeTestCatalog(t, d, imagecat.Catalog{Version: 1, Default: "team-image", Images: []imagecat.Image{
		{Name: "team-image", Arch: "amd64", OCIRef: "127.0.0.1:5000/team:1"}}})
	if ref, err := d.imageRef(""); err != nil || ref != "team-image" {
		t.Fatalf("catalog file default: %q, %v", ref, err)
	}
	d.cfg.DefaultImage = "busybox"
	if ref, err := d.imageRef(""); err != nil || ref != "busybox" {
		t.Fatalf("default_image: %q, %v", ref, err)
	}
}
