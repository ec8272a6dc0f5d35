package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bangerdev/banger/internal/imagecat"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/testenv"
)

// serveDir serves dir over HTTP on 127.0.0.1 and counts the requests.
func serveDir(t *testing.T, dir string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int64
	fs := http.FileServer(http.Dir(dir))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fs.ServeHTTP(w, r)
	}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &hits
}

func writeCatalog(t *testing.T, path string, c imagecat.Catalog) {
	t.Helper()
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCatalogBundlePull bundles the busybox test image, serves the bundle
// from a local HTTP server, points catalog_url and a test catalog at it,
// and pulls it back by catalog name, verified; then boots a VM from it.
func TestCatalogBundlePull(t *testing.T) {
	e := newEnv(t)
	e.importKernel(t)
	reg := testenv.StartRegistry(t)
	e.must("image", "pull", testenv.PushBusybox(t, reg), "--kernel-ref", "cloud")

	pub := t.TempDir()
	var info imagecat.BundleInfo
	out := e.must("image", "bundle", "busybox", "--out", pub, "-o", "json")
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if filepath.Dir(info.Path) != pub || filepath.Base(info.Path) != imagecat.BundleName("busybox", "amd64", info.SHA256) {
		t.Fatalf("bundle = %+v", info)
	}
	if info.Entry.KernelRef != "cloud" || info.Entry.Distro != "busybox" || info.Entry.Size != info.Size {
		t.Fatalf("entry = %+v", info.Entry)
	}
	// The human output names the file and prints the entry.
	human := e.must("image", "bundle", "busybox", "--out", t.TempDir())
	if !strings.Contains(human, "catalog entry:") || !strings.Contains(human, info.SHA256) {
		t.Fatalf("bundle output: %s", human)
	}

	srv, hits := serveDir(t, pub)
	catFile := filepath.Join(e.home, "catalog.json")
	writeCatalog(t, catFile, imagecat.Catalog{Version: 1, Images: []imagecat.Image{info.Entry}})
	cfg := "catalog_url = \"" + srv.URL + "/\"\nimage_catalog = \"" + catFile + "\"\n"
	if err := os.MkdirAll(filepath.Join(e.home, "config"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.home, "config", "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.stopDaemon() // the next command starts a daemon with the new config

	avail := e.must("image", "list", "--available")
	if !strings.Contains(avail, "busybox") || !strings.Contains(avail, srv.URL) || !strings.Contains(avail, "debian-bookworm") {
		t.Fatalf("list --available:\n%s", avail)
	}

	out = e.must("image", "pull", "busybox", "--name", "bb-catalog", "-o", "json")
	var im model.Image
	if err := json.Unmarshal([]byte(out), &im); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !im.Managed || im.SourceRef != "catalog:busybox" || im.ManifestDigest != "sha256:"+info.SHA256 || im.KernelRef != "cloud" {
		t.Fatalf("pulled image = %+v", im)
	}
	if hits.Load() != 1 {
		t.Fatalf("%d requests to the catalog server, want 1", hits.Load())
	}
	if o, err := exec.Command("e2fsck", "-fn", im.RootfsPath).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck: %v\n%s", err, o)
	}
	got := ext4Files(t, im.RootfsPath)
	for _, want := range testenv.BusyboxFiles(t) {
		if !got[want] {
			t.Errorf("missing %s in the pulled rootfs", want)
		}
	}
	if len(im.Config.Env) == 0 || !strings.HasPrefix(im.Config.Env[0], "PATH=") {
		t.Errorf("image config not carried by the manifest: %+v", im.Config)
	}
	var avl []imagecat.Available
	if err := json.Unmarshal([]byte(e.must("image", "list", "--available", "-o", "json")), &avl); err != nil {
		t.Fatal(err)
	}
	for _, a := range avl {
		if a.Name == "busybox" && (!a.Installed || a.Source != srv.URL+"/"+info.Entry.Bundle) {
			t.Errorf("available entry = %+v", a)
		}
	}

	// Bad input. A catalog whose pin does not match the served bytes.
	bad := info.Entry
	bad.SHA256 = strings.Repeat("0", 64)
	bad.Bundle = imagecat.BundleName("busybox", "amd64", bad.SHA256)
	data, err := os.ReadFile(info.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pub, bad.Bundle), data, 0o644); err != nil {
		t.Fatal(err)
	}
	writeCatalog(t, catFile, imagecat.Catalog{Version: 1, Images: []imagecat.Image{bad}})
	r := e.run("image", "pull", "busybox", "--name", "bb-bad")
	if r.code == 0 || !strings.Contains(r.stderr, "sha256 mismatch") {
		t.Fatalf("tampered bundle: %+v", r)
	}
	// A near miss of a catalog name suggests the closest.
	r = e.run("image", "pull", "busybx")
	if r.code == 0 || !strings.Contains(r.stderr, "not in the catalog") || !strings.Contains(r.stderr, "did you mean busybox?") {
		t.Fatalf("typo: %+v", r)
	}
	// The existing name is refused before any download.
	writeCatalog(t, catFile, imagecat.Catalog{Version: 1, Images: []imagecat.Image{info.Entry}})
	before := hits.Load()
	if r := e.run("image", "pull", "busybox", "--name", "bb-catalog"); r.code == 0 || !strings.Contains(r.stderr, "already exists") || hits.Load() != before {
		t.Fatalf("name collision: %+v (hits %d -> %d)", r, before, hits.Load())
	}
	if left, _ := filepath.Glob(filepath.Join(e.home, "state", "images", "*.staging")); len(left) != 0 {
		t.Fatalf("staging left: %v", left)
	}
	// vm run with neither --image nor default_image boots the catalog's
	// default, debian-bookworm (here the busybox bundle under that name,
	// overriding the embedded entry), pulled on first use with its kernel:
	// debian-cloud, from the kernel catalog (apt, the host's Debian mirror).
	testenv.BuildBinaries(t, testenv.PkgAgent) // beside bangerd, where the daemon finds it
	e.must("image", "pull", testenv.PushBusybox(t, reg), "--name", "debian-bookworm", "--kernel-ref", "cloud")
	var def imagecat.BundleInfo
	if err := json.Unmarshal([]byte(e.must("image", "bundle", "debian-bookworm", "--out", pub, "-o", "json")), &def); err != nil {
		t.Fatal(err)
	}
	e.must("image", "delete", "debian-bookworm")
	def.Entry.KernelRef = "debian-cloud"
	writeCatalog(t, catFile, imagecat.Catalog{Version: 1, Images: []imagecat.Image{def.Entry}})
	cfg += "[network]\ndisabled = true\n"
	if err := os.WriteFile(filepath.Join(e.home, "config", "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.stopDaemon()
	if r := e.run("kernel", "show", "debian-cloud"); r.code == 0 {
		t.Fatal("kernel debian-cloud is installed before the first vm run")
	}
	before = hits.Load()
	out = e.must("vm", "run", "--rm", "--net", "none", "--memory", vmMemMiB, "--", "cat", "/etc/hostname")
	if strings.TrimSpace(out) == "" || hits.Load() != before+1 {
		t.Fatalf("vm run with the catalog's default image: %q (hits %d -> %d)", out, before, hits.Load())
	}
	if im := e.must("image", "show", "debian-bookworm", "-o", "json"); !strings.Contains(im, "catalog:debian-bookworm") || !strings.Contains(im, `"debian-cloud"`) {
		t.Fatalf("default image not pulled from the catalog with its kernel: %s", im)
	}
	e.must("kernel", "show", "debian-cloud")
	if r := e.run("image", "bundle", "busybox"); r.code == 0 || !strings.Contains(r.stderr, "--out") {
		t.Fatalf("bundle without --out: %+v", r)
	}
	if r := e.run("image", "bundle", "nope", "--out", t.TempDir()); r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("bundle of a missing image: %+v", r)
	}
}
