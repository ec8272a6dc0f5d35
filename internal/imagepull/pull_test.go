package imagepull

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/bangerdev/banger/internal/errkind"
)

func imageDigest(t testing.TB, img v1.Image) string {
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func TestPullImage(t *testing.T) {
	reg := newTestRegistry(t)
	layers := fixtureLayers(t)
	img := makeImage(t, "amd64", layers...)
	ref := reg.push(t, "fixture/img:v1", img)
	opts := testOptions(t)
	var stages []Stage
	opts.Progress = func(p Progress) {
		if len(stages) == 0 || stages[len(stages)-1] != p.Stage {
			stages = append(stages, p.Stage)
		}
	}
	got, err := Pull(bg(), ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != imageDigest(t, img) {
		t.Errorf("Digest = %s, want %s", got.Digest, imageDigest(t, img))
	}
	if got.Ref != ref {
		t.Errorf("Ref = %s, want %s", got.Ref, ref)
	}
	c := got.Config
	if strings.Join(c.Env, ",") != "PATH=/usr/bin:/bin,LANG=C.UTF-8" || c.WorkingDir != "/root" || c.User != "0:0" ||
		strings.Join(c.Entrypoint, " ") != "/bin/sh -c" || strings.Join(c.Cmd, " ") != "echo hi" || c.Labels["org.example"] != "fixture" {
		t.Errorf("Config = %+v", c)
	}
	var total int64
	for i, l := range layers {
		sz, _ := l.Size()
		mt, _ := l.MediaType()
		total += sz
		if got.Layers[i].Digest != digestOf(t, l) || got.Layers[i].Size != sz || got.Layers[i].MediaType != string(mt) {
			t.Errorf("layer %d = %+v", i, got.Layers[i])
		}
		h, _ := l.Digest()
		if st, err := os.Stat(filepath.Join(opts.CacheDir, "blobs", "sha256", h.Hex)); err != nil || st.Size() != sz {
			t.Errorf("layer %d not cached: %v", i, err)
		}
	}
	if got.CompressedSize != total {
		t.Errorf("CompressedSize = %d, want %d", got.CompressedSize, total)
	}
	if strings.Join(stagesStrings(stages), ",") != "resolving,downloading" {
		t.Errorf("stages = %v", stages)
	}
	idx, err := os.ReadFile(filepath.Join(opts.CacheDir, "index.json"))
	if err != nil || !strings.Contains(string(idx), got.Digest) || !strings.Contains(string(idx), ref) {
		t.Errorf("index.json does not list the image: %s %v", idx, err)
	}
	// The cache is a valid OCI image layout: ggcr's reader finds the image
	// and its layers in it.
	lp, err := layout.FromPath(opts.CacheDir)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := v1.NewHash(got.Digest)
	limg, err := lp.Image(h)
	if err != nil {
		t.Fatalf("reading the cache as an OCI layout: %v", err)
	}
	ll, err := limg.Layers()
	if err != nil || len(ll) != 3 {
		t.Fatalf("layout image layers: %d, %v", len(ll), err)
	}
	if d, _ := ll[1].Digest(); d.String() != got.Layers[1].Digest {
		t.Errorf("layout layer 1 = %s", d)
	}
}

func stagesStrings(s []Stage) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = string(x)
	}
	return out
}

func TestPullSecondPullDownloadsNothing(t *testing.T) {
	reg := newTestRegistry(t)
	img := makeImage(t, "amd64", fixtureLayers(t)...)
	ref := reg.push(t, "fixture/img:v1", img)
	opts := testOptions(t)
	if _, err := Pull(bg(), ref, opts); err != nil {
		t.Fatal(err)
	}
	_, gets := reg.counts()
	if len(gets) != 4 { // config + 3 layers
		t.Errorf("first pull fetched %d blobs, want 4: %v", len(gets), gets)
	}
	reg.reset()
	if _, err := Pull(bg(), ref, opts); err != nil {
		t.Fatal(err)
	}
	if _, gets := reg.counts(); len(gets) != 0 {
		t.Errorf("second pull by tag fetched blobs: %v", gets)
	}
	// A torn cached blob (same size, wrong content) is noticed and
	// downloaded again.
	top := fixtureLayers(t)[2]
	th, _ := top.Digest()
	blob := filepath.Join(opts.CacheDir, "blobs", "sha256", th.Hex)
	b, _ := os.ReadFile(blob)
	b[len(b)/2] ^= 0xff
	os.WriteFile(blob, b, 0o644)
	reg.reset()
	if _, err := Pull(bg(), ref, opts); err != nil {
		t.Fatal(err)
	}
	if _, gets := reg.counts(); len(gets) != 1 || gets[th.String()] != 1 {
		t.Errorf("pull over a corrupt cached blob fetched %v, want just %s", gets, th)
	}
	reg.reset()
	byDigest := reg.host + "/fixture/img@" + imageDigest(t, img)
	got, err := Pull(bg(), byDigest, opts)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := reg.counts(); n != 0 {
		t.Errorf("pull of a cached digest made %d registry requests, want 0", n)
	}
	if got.Digest != imageDigest(t, img) || len(got.Layers) != 3 {
		t.Errorf("cached pull = %+v", got)
	}
}

func TestPullMultiArch(t *testing.T) {
	reg := newTestRegistry(t)
	amd := makeImage(t, "amd64", gzipLayer(t, []ent{{name: "arch", mode: 0o644, data: "amd64"}}))
	arm := makeImage(t, "arm64", gzipLayer(t, []ent{{name: "arch", mode: 0o644, data: "arm64"}}))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	ref := reg.pushIndex(t, "multi/img:latest", idx)
	got, err := Pull(bg(), ref, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != imageDigest(t, amd) {
		t.Errorf("picked %s, want the amd64 manifest %s", got.Digest, imageDigest(t, amd))
	}

	armOnly := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	ref = reg.pushIndex(t, "multi/arm:latest", armOnly)
	_, err = Pull(bg(), ref, testOptions(t))
	if !errors.Is(err, errkind.NotFound) || !strings.Contains(err.Error(), "linux/amd64") {
		t.Errorf("arm64-only index: %v, want NotFound naming linux/amd64", err)
	}
	// A single-arch arm64 image is refused too.
	ref = reg.push(t, "single/arm:latest", arm)
	if _, err := Pull(bg(), ref, testOptions(t)); !errors.Is(err, errkind.InvalidArgument) {
		t.Errorf("arm64 image: %v, want InvalidArgument", err)
	}
}

func TestPullErrors(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "there/img:v1", makeImage(t, "amd64", gzipLayer(t, []ent{{name: "f", mode: 0o644, data: "x"}})))

	ref := reg.host + "/there/img:nope"
	_, err := Pull(bg(), ref, testOptions(t))
	if !errors.Is(err, errkind.NotFound) || !strings.Contains(err.Error(), ref) {
		t.Errorf("missing tag: %v, want NotFound naming %s", err, ref)
	}
	ref = reg.host + "/nothere/img:v1"
	if _, err = Pull(bg(), ref, testOptions(t)); !errors.Is(err, errkind.NotFound) {
		t.Errorf("missing repo: %v, want NotFound", err)
	}

	// A loopback port nobody listens on.
	closed := newTestRegistry(t)
	host := closed.host
	closed.srv.Close()
	_, err = Pull(bg(), host+"/x/y:z", testOptions(t))
	if !errors.Is(err, errkind.Unavailable) || !strings.Contains(err.Error(), host) {
		t.Errorf("unreachable registry: %v, want Unavailable naming %s", err, host)
	}

	reg.deny = true
	_, err = Pull(bg(), reg.host+"/there/img:v1", testOptions(t))
	if err == nil || !strings.Contains(err.Error(), "unauthorized") || !strings.Contains(err.Error(), "docker login "+reg.host) ||
		!strings.Contains(err.Error(), "credential helper") {
		t.Errorf("401: %v, want an unauthorized error pointing at docker login and credential helpers", err)
	}

	if _, err := Pull(bg(), "Bad Ref", testOptions(t)); !errors.Is(err, errkind.InvalidArgument) {
		t.Errorf("bad ref: %v", err)
	}
}

func TestPlainHTTPPolicy(t *testing.T) {
	tr := &policyTransport{base: http.DefaultTransport}
	req, _ := http.NewRequest(http.MethodGet, "http://10.1.2.3:5000/v2/", nil)
	if _, err := tr.RoundTrip(req); !errors.Is(err, errPlainHTTP) {
		t.Errorf("plain HTTP to a private address: %v, want refusal", err)
	}
	tr.insecure = []string{"10.1.2.3:5000"}
	req, _ = http.NewRequest(http.MethodGet, "http://10.1.2.3:5000/v2/", nil)
	req.Header.Set("X", "y")
	ctx, cancel := ctxWithCancel()
	cancel() // do not actually dial
	if _, err := tr.RoundTrip(req.WithContext(ctx)); errors.Is(err, errPlainHTTP) {
		t.Errorf("listed insecure registry refused: %v", err)
	}
}

func checkNoPartialBlob(t *testing.T, cacheDir, digest string) {
	t.Helper()
	h, _ := v1.NewHash(digest)
	if _, err := os.Stat(filepath.Join(cacheDir, "blobs", "sha256", h.Hex)); !os.IsNotExist(err) {
		t.Errorf("blob %s left in the cache after a failed download", digest)
	}
	ents, _ := os.ReadDir(filepath.Join(cacheDir, ingestDir))
	if len(ents) != 0 {
		t.Errorf("ingest files left behind: %v", ents)
	}
}

func TestPullCorruptOrTruncatedBlob(t *testing.T) {
	for _, mode := range []string{"corrupt", "truncated"} {
		t.Run(mode, func(t *testing.T) {
			reg := newTestRegistry(t)
			bad := gzipLayer(t, midLayer())
			img := makeImage(t, "amd64", gzipLayer(t, baseLayer()), bad)
			ref := reg.push(t, "bad/img:v1", img)
			badDigest := digestOf(t, bad)
			reg.tamper = func(d string, body []byte) []byte {
				if d != badDigest {
					return body
				}
				if mode == "truncated" {
					return body[:len(body)/2]
				}
				out := append([]byte(nil), body...)
				out[len(out)/2] ^= 0xff
				return out
			}
			opts := testOptions(t)
			_, err := Pull(bg(), ref, opts)
			if err == nil {
				t.Fatal("pull of a tampered blob succeeded")
			}
			if !strings.Contains(err.Error(), badDigest) {
				t.Errorf("error %q does not name the blob", err)
			}
			checkNoPartialBlob(t, opts.CacheDir, badDigest)

			for _, pureGo := range []bool{false, true} {
				out := filepath.Join(t.TempDir(), "rootfs.ext4")
				o := opts
				o.PureGo = pureGo
				_, err := PullToExt4(bg(), ref, out, Ext4Options{Options: o, Compact: true})
				if err == nil {
					t.Fatalf("PullToExt4 (pure Go %v) of a tampered blob succeeded", pureGo)
				}
				if !strings.Contains(err.Error(), badDigest) {
					t.Errorf("PullToExt4 (pure Go %v): error %q does not name the blob", pureGo, err)
				}
				checkNoPartialBlob(t, opts.CacheDir, badDigest)
				if _, err := os.Stat(out); !os.IsNotExist(err) {
					t.Error("failed PullToExt4 left its output behind")
				}
			}

			reg.tamper = nil
			if _, err := Pull(bg(), ref, opts); err != nil {
				t.Fatalf("pull after the registry recovered: %v", err)
			}
		})
	}
}

func TestConcurrentPullsShareLayers(t *testing.T) {
	reg := newTestRegistry(t)
	base, mid := gzipLayer(t, baseLayer()), zstdLayer(t, midLayer())
	a := makeImage(t, "amd64", base, mid, gzipLayer(t, []ent{{name: "a", mode: 0o644, data: "a"}}))
	b := makeImage(t, "amd64", base, mid, gzipLayer(t, []ent{{name: "b", mode: 0o644, data: "b"}}))
	refA, refB := reg.push(t, "share/a:v1", a), reg.push(t, "share/b:v1", b)
	cache := t.TempDir()
	for round := 0; round < 2; round++ {
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i, ref := range []string{refA, refB, refA, refB} {
			wg.Add(1)
			go func(i int, ref string) {
				defer wg.Done()
				opts := Options{CacheDir: cache, Keychain: anonymous{}}
				if i < 2 {
					_, errs[i] = Pull(bg(), ref, opts)
				} else {
					_, errs[i] = PullToExt4(bg(), ref, filepath.Join(t.TempDir(), "r.ext4"), Ext4Options{Options: opts, Compact: true})
				}
			}(i, ref)
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	_, gets := reg.counts()
	for d, n := range gets {
		if n != 1 {
			t.Errorf("blob %s downloaded %d times", d, n)
		}
	}
	if len(gets) != 6 { // 2 shared layers + 2 own layers + 2 configs
		t.Errorf("downloaded %d distinct blobs, want 6: %v", len(gets), gets)
	}
}

func TestPruneCache(t *testing.T) {
	reg := newTestRegistry(t)
	shared := gzipLayer(t, baseLayer())
	onlyB := gzipLayer(t, []ent{{name: "b", mode: 0o644, data: "b"}})
	a := makeImage(t, "amd64", shared, gzipLayer(t, []ent{{name: "a", mode: 0o644, data: "a"}}))
	b := makeImage(t, "amd64", shared, onlyB)
	opts := testOptions(t)
	for _, ref := range []string{reg.push(t, "p/a:v1", a), reg.push(t, "p/b:v1", b)} {
		if _, err := Pull(bg(), ref, opts); err != nil {
			t.Fatal(err)
		}
	}
	blobCount := func() int {
		ents, _ := os.ReadDir(filepath.Join(opts.CacheDir, "blobs", "sha256"))
		return len(ents)
	}
	if n := blobCount(); n != 7 { // 2 manifests, 2 configs, 3 distinct layers
		t.Fatalf("cache holds %d blobs, want 7", n)
	}
	before := blobCount()
	keep := []string{imageDigest(t, a)}
	freed, n, err := PruneCache(opts.CacheDir, keep, true)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || freed <= 0 || blobCount() != before { // b's manifest, config and own layer
		t.Errorf("dry run: %d blobs / %d bytes, cache %d→%d", n, freed, before, blobCount())
	}
	freed2, n2, err := PruneCache(opts.CacheDir, keep, false)
	if err != nil {
		t.Fatal(err)
	}
	if n2 != n || freed2 != freed || blobCount() != before-3 {
		t.Errorf("prune: %d blobs / %d bytes, cache now %d", n2, freed2, blobCount())
	}
	if h, _ := onlyB.Digest(); fileExists(filepath.Join(opts.CacheDir, "blobs", "sha256", h.Hex)) {
		t.Error("b's own layer survived the prune")
	}
	if h, _ := shared.Digest(); !fileExists(filepath.Join(opts.CacheDir, "blobs", "sha256", h.Hex)) {
		t.Error("shared layer of a kept image was pruned")
	}
	idx, _ := os.ReadFile(filepath.Join(opts.CacheDir, "index.json"))
	if strings.Contains(string(idx), imageDigest(t, b)) || !strings.Contains(string(idx), imageDigest(t, a)) {
		t.Errorf("index.json after prune: %s", idx)
	}
	// a still pulls from the cache alone.
	reg.reset()
	if _, err := Pull(bg(), reg.host+"/p/a@"+imageDigest(t, a), opts); err != nil {
		t.Fatal(err)
	}
	if n, _ := reg.counts(); n != 0 {
		t.Errorf("kept image needed %d requests after prune", n)
	}
	if _, n, err := PruneCache(opts.CacheDir, nil, false); err != nil || blobCount() != 0 || n == 0 {
		t.Errorf("prune all: %d blobs, %v, %d left", n, err, blobCount())
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
