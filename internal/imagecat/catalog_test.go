package imagecat

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/kernel"
)

const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestEmbeddedCatalog(t *testing.T) {
	c, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != FormatVersion || c.Default == "" || len(c.Images) == 0 {
		t.Fatalf("catalog = %+v", c)
	}
	if _, err := c.Lookup(c.Default); err != nil {
		t.Fatalf("default %s: %v", c.Default, err)
	}
	// Every kernel_ref names a kernel of the kernel catalog.
	for _, im := range c.Images {
		if _, err := kernel.Lookup(im.KernelRef); err != nil {
			t.Errorf("%s: kernel_ref %q: %v", im.Name, im.KernelRef, err)
		}
	}
	ks, err := Kernels()
	if err != nil || len(ks) == 0 {
		t.Fatalf("kernels: %v %v", ks, err)
	}
}

func TestParseValidation(t *testing.T) {
	good := BundleName("tool", "amd64", sha)
	tests := []struct{ name, json, want string }{
		{"version", `{"version":2,"images":[]}`, "format version 2"},
		{"syntax", `{"version":1,`, "reading image catalog"},
		{"no source", `{"version":1,"images":[{"name":"a","arch":"amd64"}]}`, "needs a bundle or an oci_ref"},
		{"arch", `{"version":1,"images":[{"name":"a","arch":"arm64","oci_ref":"x"}]}`, "arch \"arm64\""},
		{"bad name", `{"version":1,"images":[{"name":"Bad Name","arch":"amd64","oci_ref":"x"}]}`, "is invalid"},
		{"dup", `{"version":1,"images":[{"name":"a","arch":"amd64","oci_ref":"x"},{"name":"a","arch":"amd64","oci_ref":"y"}]}`, "twice"},
		{"default", `{"version":1,"default":"zz","images":[]}`, "default \"zz\""},
		{"base url", `{"version":1,"base_url":"ftp://x","images":[]}`, "want an http(s) URL"},
		{"short sha", `{"version":1,"images":[{"name":"tool","arch":"amd64","bundle":"` + good + `","sha256":"abc","size":1}]}`, "not 64"},
		{"no size", `{"version":1,"images":[{"name":"tool","arch":"amd64","bundle":"` + good + `","sha256":"` + sha + `"}]}`, "needs its size"},
		{"not addressed", `{"version":1,"images":[{"name":"tool","arch":"amd64","bundle":"tool.tar.zst","sha256":"` + sha + `","size":1}]}`, "not content-addressed"},
		{"wrong prefix", `{"version":1,"images":[{"name":"tool","arch":"amd64","bundle":"tool-amd64-000000000000.tar.zst","sha256":"` + sha + `","size":1}]}`, "not content-addressed"},
		{"subdir", `{"version":1,"images":[{"name":"tool","arch":"amd64","bundle":"x/` + good + `","sha256":"` + sha + `","size":1}]}`, "plain file name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.json))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if !errors.Is(err, errkind.InvalidArgument) {
				t.Errorf("not InvalidArgument: %v", err)
			}
		})
	}
	ok := `{"version":1,"images":[{"name":"tool","arch":"amd64","bundle":"https://cdn.example/b/` + good + `","sha256":"` + sha + `","size":9}]}`
	if _, err := Parse([]byte(ok)); err != nil {
		t.Fatalf("absolute bundle URL: %v", err)
	}
}

func testCatalog(t *testing.T) *Catalog {
	t.Helper()
	c, err := Parse([]byte(`{"version":1,"base_url":"http://127.0.0.1:1/bundles/","default":"debian-bookworm","images":[
		{"name":"debian-bookworm","distro":"debian-12","arch":"amd64","kernel_ref":"debian-cloud","bundle":"` + BundleName("debian-bookworm", "amd64", sha) + `","sha256":"` + sha + `","size":10},
		{"name":"alpine-3.20","distro":"alpine","arch":"amd64","kernel_ref":"debian-cloud","oci_ref":"docker.io/library/alpine:3.20"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestResolve(t *testing.T) {
	c := testCatalog(t)
	r, err := c.Resolve("debian-bookworm")
	if err != nil {
		t.Fatal(err)
	}
	if r.Image == nil || r.OCIRef != "" || r.BundleURL != "http://127.0.0.1:1/bundles/debian-bookworm-amd64-0123456789ab.tar.zst" {
		t.Fatalf("bundle resolution = %+v", r)
	}
	r, err = c.Resolve("alpine-3.20")
	if err != nil || r.Image == nil || r.OCIRef != "docker.io/library/alpine:3.20" || r.BundleURL != "" {
		t.Fatalf("oci catalog resolution = %+v, %v", r, err)
	}
	for _, ref := range []string{"127.0.0.1:5000/busybox:latest", "debian:bookworm", "alpine", "ghcr.io/org/tool@sha256:" + sha} {
		r, err := c.Resolve(ref)
		if err != nil || r.Image != nil || r.OCIRef != ref {
			t.Errorf("Resolve(%q) = %+v, %v; want the OCI path", ref, r, err)
		}
	}
	// A near miss of a catalog name is refused with a suggestion.
	_, err = c.Resolve("debian-bookwrom")
	if !errors.Is(err, errkind.NotFound) || !strings.Contains(errkind.Hint(err), "did you mean debian-bookworm?") {
		t.Fatalf("typo: err = %v, hint %q", err, errkind.Hint(err))
	}
	_, err = c.Lookup("alpine-3.2")
	if !errors.Is(err, errkind.NotFound) || !strings.Contains(errkind.Hint(err), "alpine-3.20") {
		t.Fatalf("lookup typo: %v / %q", err, errkind.Hint(err))
	}
	// No base URL: the bundle cannot be located.
	c.BaseURL = ""
	if _, err := c.Resolve("debian-bookworm"); !errors.Is(err, errkind.Unavailable) || !strings.Contains(errkind.Hint(err), "catalog_url") {
		t.Fatalf("no base URL: %v", err)
	}
	// ... unless the entry also names an OCI reference to fall back to;
	// a base URL makes the pinned bundle win again.
	for i := range c.Images {
		if c.Images[i].Name == "debian-bookworm" {
			c.Images[i].OCIRef = "docker.io/library/debian:bookworm"
		}
	}
	if r, err := c.Resolve("debian-bookworm"); err != nil || r.OCIRef != "docker.io/library/debian:bookworm" || r.BundleURL != "" {
		t.Fatalf("fallback to the OCI ref: %+v, %v", r, err)
	}
	c.BaseURL = "http://127.0.0.1:1/b/"
	if r, err := c.Resolve("debian-bookworm"); err != nil || r.OCIRef != "" || r.BundleURL != "http://127.0.0.1:1/b/debian-bookworm-amd64-0123456789ab.tar.zst" {
		t.Fatalf("bundle over the OCI ref: %+v, %v", r, err)
	}
}

func TestClosest(t *testing.T) {
	names := []string{"debian-bookworm", "debian-trixie", "ubuntu-noble", "alpine-3.20"}
	tests := map[string]string{
		"debian-bookwrm":  "debian-bookworm",
		"debain-bookworm": "debian-bookworm",
		"debian-trixi":    "debian-trixie",
		"ubuntu-nobel":    "ubuntu-noble",
		"alpine":          "",
		"fedora":          "",
		"debian":          "",
	}
	for in, want := range tests {
		if got := Closest(in, names); got != want {
			t.Errorf("Closest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoadMergesFileAndBaseURL(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "catalog.json")
	body := `{"version":1,"base_url":"http://127.0.0.1:8/x","default":"tool","images":[
		{"name":"tool","distro":"busybox","arch":"amd64","kernel_ref":"debian-cloud","bundle":"` + BundleName("tool", "amd64", sha) + `","sha256":"` + sha + `","size":3},
		{"name":"debian-bookworm","distro":"debian-12","arch":"amd64","kernel_ref":"debian-cloud","oci_ref":"registry.local/debian:bookworm"}]}`
	if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(Options{File: file})
	if err != nil {
		t.Fatal(err)
	}
	if c.Default != "tool" || c.BaseURL != "http://127.0.0.1:8/x" {
		t.Fatalf("merged = %+v", c)
	}
	deb, _ := c.Lookup("debian-bookworm")
	if deb.OCIRef != "registry.local/debian:bookworm" {
		t.Errorf("override not applied: %+v", deb)
	}
	if _, err := c.Lookup("ubuntu-noble"); err != nil {
		t.Errorf("embedded entries lost: %v", err)
	}
	c, err = Load(Options{File: file, BaseURL: "http://127.0.0.1:9/"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve("tool")
	if err != nil || r.BundleURL != "http://127.0.0.1:9/"+BundleName("tool", "amd64", sha) {
		t.Fatalf("resolve = %+v, %v", r, err)
	}
	if _, err := Load(Options{BaseURL: "not a url"}); err == nil {
		t.Error("bad base URL accepted")
	}
	if _, err := Load(Options{File: filepath.Join(dir, "missing.json")}); err == nil {
		t.Error("missing catalog file accepted")
	}
}
