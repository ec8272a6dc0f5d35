package imagepull

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// ent is one tar entry of a fixture layer.
type ent struct {
	typ      byte
	name     string
	mode     int64
	uid, gid int
	data     string
	link     string
	major    int64
	minor    int64
	xattrs   map[string]string
}

var fixtureTime = time.Unix(1700000000, 0)

func layerTar(t testing.TB, ents []ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Typeflag: typ, Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid, Linkname: e.link,
			Devmajor: e.major, Devminor: e.minor, ModTime: fixtureTime, Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("writing %s: %v", e.name, err)
		}
		if _, err := tw.Write([]byte(e.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipLayer(t testing.TB, ents []ent) v1.Layer {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(layerTar(t, ents))
	zw.Close()
	return static.NewLayer(buf.Bytes(), types.OCILayer)
}

func zstdLayer(t testing.TB, ents []ent) v1.Layer {
	var buf bytes.Buffer
	zw, _ := zstd.NewWriter(&buf)
	zw.Write(layerTar(t, ents))
	zw.Close()
	return static.NewLayer(buf.Bytes(), types.OCILayerZStd)
}

func makeImage(t testing.TB, arch string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layers...)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}
	cf.Config.WorkingDir = "/root"
	cf.Config.User = "0:0"
	cf.Config.Entrypoint = []string{"/bin/sh", "-c"}
	cf.Config.Cmd = []string{"echo hi"}
	cf.Config.Labels = map[string]string{"org.example": "fixture"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// testRegistry is ggcr's in-memory registry on loopback, counting requests
// and able to tamper with blobs.
type testRegistry struct {
	srv  *httptest.Server
	host string

	mu       sync.Mutex
	requests int
	blobGets map[string]int
	// tamper, when set, may rewrite a blob response (by digest).
	tamper func(digest string, body []byte) []byte
	// deny answers every request with 401.
	deny bool
}

func newTestRegistry(t testing.TB) *testRegistry {
	r := &testRegistry{blobGets: map[string]int{}}
	h := registry.New(registry.Logger(nullLogger()))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests++
		deny, tamper := r.deny, r.tamper
		isBlobGet := req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:")
		digest := ""
		if isBlobGet {
			digest = req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:]
			r.blobGets[digest]++
		}
		r.mu.Unlock()
		if deny {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		if isBlobGet && tamper != nil {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			body := tamper(digest, rec.Body.Bytes())
			for k, v := range rec.Header() {
				if k != "Content-Length" {
					w.Header()[k] = v
				}
			}
			w.WriteHeader(rec.Code)
			w.Write(body)
			return
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	r.host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

func (r *testRegistry) counts() (requests int, blobGets map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[string]int{}
	for k, v := range r.blobGets {
		m[k] = v
	}
	return r.requests, m
}

func (r *testRegistry) reset() {
	r.mu.Lock()
	r.requests, r.blobGets = 0, map[string]int{}
	r.mu.Unlock()
}

func (r *testRegistry) push(t testing.TB, repoTag string, img v1.Image) string {
	t.Helper()
	ref, err := name.ParseReference(r.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return ref.String()
}

func (r *testRegistry) pushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) string {
	t.Helper()
	ref, err := name.ParseReference(r.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return ref.String()
}

// anonymous never reads the host's docker config.
type anonymous struct{}

func (anonymous) Resolve(authn.Resource) (authn.Authenticator, error) { return authn.Anonymous, nil }

func testOptions(t testing.TB) Options {
	return Options{CacheDir: t.TempDir(), Keychain: anonymous{}}
}

func digestOf(t testing.TB, l v1.Layer) string {
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func bg() context.Context { return context.Background() }

func nullLogger() *log.Logger { return log.New(io.Discard, "", 0) }

// The §1 fixture: three layers, bottom to top.
var longDir = "fixture/" + strings.Repeat("d", 60) + "/" + strings.Repeat("e", 60) + "/" + strings.Repeat("f", 60)
var longLink = "/" + strings.Repeat("l", 200)

const capValue = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

func baseLayer() []ent {
	return []ent{
		{typ: tar.TypeDir, name: "./", mode: 0o755},
		{typ: tar.TypeDir, name: "bin/", mode: 0o755},
		{name: "bin/su", mode: 0o4755, data: "su"},
		{typ: tar.TypeDir, name: "etc/", mode: 0o755},
		{name: "etc/motd", mode: 0o644, data: "welcome"},
		{name: "etc/hostname", mode: 0o644, data: "base"},
		{typ: tar.TypeDir, name: "usr/", mode: 0o755},
		{typ: tar.TypeDir, name: "usr/bin/", mode: 0o755},
		{name: "usr/bin/gunzip", mode: 0o755, data: "gz-binary"},
		{typ: tar.TypeLink, name: "usr/bin/uncompress", link: "usr/bin/gunzip"},
		{typ: tar.TypeDir, name: "usr/share/", mode: 0o755},
		{typ: tar.TypeDir, name: "usr/share/doc/", mode: 0o755},
		{typ: tar.TypeDir, name: "usr/share/doc/pkg/", mode: 0o755},
		{name: "usr/share/doc/pkg/README", mode: 0o644, data: "old docs"},
		{typ: tar.TypeDir, name: "var/", mode: 0o755},
		{typ: tar.TypeDir, name: "var/cache/", mode: 0o755},
		{typ: tar.TypeDir, name: "var/cache/apt/", mode: 0o755},
		{name: "var/cache/apt/pkgcache.bin", mode: 0o644, data: "cache"},
		{typ: tar.TypeDir, name: "opt/", mode: 0o755},
		{name: "opt/old.txt", mode: 0o644, data: "old"},
		// Real metadata for a directory the mid layer only implies.
		{typ: tar.TypeDir, name: "implicit/", mode: 0o700, uid: 1000, gid: 1000},
		{typ: tar.TypeDir, name: "implicit/dir/", mode: 0o750, uid: 1000, gid: 1000},
	}
}

func midLayer() []ent {
	return []ent{
		{typ: tar.TypeDir, name: "dev/", mode: 0o755},
		{typ: tar.TypeChar, name: "dev/null", mode: 0o666, major: 1, minor: 3},
		{typ: tar.TypeBlock, name: "dev/loop0", mode: 0o660, major: 7, minor: 0, gid: 6},
		{typ: tar.TypeFifo, name: "dev/initctl", mode: 0o600},
		{typ: tar.TypeDir, name: "fixture/", mode: 0o1777},
		{name: "fixture/setuid", mode: 0o4755, data: "s"},
		{name: "fixture/m6750", mode: 0o6750, uid: 1000, gid: 1000, data: "u"},
		{name: "fixture/m0600", mode: 0o600, uid: 65534, gid: 65534, data: "n"},
		{name: "fixture/m0640", mode: 0o640, uid: 100000, gid: 100000, data: "x"},
		{name: "fixture/cap", mode: 0o755, data: "ping", xattrs: map[string]string{"security.capability": capValue, "user.fixture": "hello"}},
		{name: "fixture/data", mode: 0o640, uid: 1000, gid: 1000, data: "shared"},
		// Go producers write mode 0 in link headers.
		{typ: tar.TypeLink, name: "fixture/link1", link: "fixture/data"},
		{typ: tar.TypeLink, name: "fixture/link2", link: "/fixture/data"},
		{typ: tar.TypeSymlink, name: "fixture/rel", link: "data", mode: 0o777},
		{typ: tar.TypeSymlink, name: "fixture/abs", link: "/etc/hostname", mode: 0o777},
		{typ: tar.TypeSymlink, name: "fixture/dangling", link: "nothere", mode: 0o777},
		{typ: tar.TypeSymlink, name: "fixture/long", link: longLink, mode: 0o777},
		{typ: tar.TypeSymlink, name: "fixture/up", link: "../etc/hostname", mode: 0o777},
		{name: "fixture/empty", mode: 0o644},
		{name: "fixture/with space ünïcode", mode: 0o644, data: "u"},
		{name: longDir + "/file", mode: 0o644, data: "deep"},
		{name: "fixture/big", mode: 0o644, data: strings.Repeat("0123456789abcdef", 1<<16)},
		// No entries for implicit/ and implicit/dir/: placeholders.
		{name: "implicit/dir/file", mode: 0o644, data: "implied"},
	}
}

func topLayer() []ent {
	return []ent{
		{typ: tar.TypeDir, name: "etc/", mode: 0o711},
		{name: "etc/.wh.motd"},
		{name: "etc/hostname", mode: 0o600, data: "top"},
		{name: "var/cache/.wh.apt"},
		{name: "usr/share/doc/.wh..wh..opq"},
		{name: "usr/share/doc/README.fixture", mode: 0o644, data: "new docs"},
		{name: "usr/bin/.wh.gunzip"},
		{name: "opt", mode: 0o644, data: "opt is a file now"},
	}
}

// want is the expected flattened tree: path → description.
type want struct {
	typ      byte
	mode     int64
	uid, gid int
	data     string
	link     string
}

func expectedTree() map[string]want {
	w := map[string]want{
		".":                            {typ: tar.TypeDir, mode: 0o755},
		"bin":                          {typ: tar.TypeDir, mode: 0o755},
		"bin/su":                       {typ: tar.TypeReg, mode: 0o4755, data: "su"},
		"etc":                          {typ: tar.TypeDir, mode: 0o711},
		"etc/hostname":                 {typ: tar.TypeReg, mode: 0o600, data: "top"},
		"usr":                          {typ: tar.TypeDir, mode: 0o755},
		"usr/bin":                      {typ: tar.TypeDir, mode: 0o755},
		"usr/bin/uncompress":           {typ: tar.TypeReg, mode: 0o755, data: "gz-binary"},
		"usr/share":                    {typ: tar.TypeDir, mode: 0o755},
		"usr/share/doc":                {typ: tar.TypeDir, mode: 0o755},
		"usr/share/doc/README.fixture": {typ: tar.TypeReg, mode: 0o644, data: "new docs"},
		"var":                          {typ: tar.TypeDir, mode: 0o755},
		"var/cache":                    {typ: tar.TypeDir, mode: 0o755},
		"opt":                          {typ: tar.TypeReg, mode: 0o644, data: "opt is a file now"},
		"implicit":                     {typ: tar.TypeDir, mode: 0o700, uid: 1000, gid: 1000},
		"implicit/dir":                 {typ: tar.TypeDir, mode: 0o750, uid: 1000, gid: 1000},
		"implicit/dir/file":            {typ: tar.TypeReg, mode: 0o644, data: "implied"},
		"dev":                          {typ: tar.TypeDir, mode: 0o755},
		"dev/null":                     {typ: tar.TypeChar, mode: 0o666},
		"dev/loop0":                    {typ: tar.TypeBlock, mode: 0o660, gid: 6},
		"dev/initctl":                  {typ: tar.TypeFifo, mode: 0o600},
		"fixture":                      {typ: tar.TypeDir, mode: 0o1777},
		"fixture/setuid":               {typ: tar.TypeReg, mode: 0o4755, data: "s"},
		"fixture/m6750":                {typ: tar.TypeReg, mode: 0o6750, uid: 1000, gid: 1000, data: "u"},
		"fixture/m0600":                {typ: tar.TypeReg, mode: 0o600, uid: 65534, gid: 65534, data: "n"},
		"fixture/m0640":                {typ: tar.TypeReg, mode: 0o640, uid: 100000, gid: 100000, data: "x"},
		"fixture/cap":                  {typ: tar.TypeReg, mode: 0o755, data: "ping"},
		"fixture/data":                 {typ: tar.TypeReg, mode: 0o640, uid: 1000, gid: 1000, data: "shared"},
		"fixture/link1":                {typ: tar.TypeLink, mode: 0o640, uid: 1000, gid: 1000, link: "fixture/data"},
		"fixture/link2":                {typ: tar.TypeLink, mode: 0o640, uid: 1000, gid: 1000, link: "fixture/data"},
		"fixture/rel":                  {typ: tar.TypeSymlink, mode: 0o777, link: "data"},
		"fixture/abs":                  {typ: tar.TypeSymlink, mode: 0o777, link: "/etc/hostname"},
		"fixture/dangling":             {typ: tar.TypeSymlink, mode: 0o777, link: "nothere"},
		"fixture/long":                 {typ: tar.TypeSymlink, mode: 0o777, link: longLink},
		"fixture/up":                   {typ: tar.TypeSymlink, mode: 0o777, link: "../etc/hostname"},
		"fixture/empty":                {typ: tar.TypeReg, mode: 0o644},
		"fixture/with space ünïcode":   {typ: tar.TypeReg, mode: 0o644, data: "u"},
		"fixture/big":                  {typ: tar.TypeReg, mode: 0o644, data: strings.Repeat("0123456789abcdef", 1<<16)},
		longDir + "/file":              {typ: tar.TypeReg, mode: 0o644, data: "deep"},
	}
	// Placeholder parents of the long path.
	parts := strings.Split(longDir, "/")
	for i := 2; i <= len(parts); i++ {
		w[strings.Join(parts[:i], "/")] = want{typ: tar.TypeDir, mode: 0o755}
	}
	return w
}

func fixtureLayers(t testing.TB) []v1.Layer {
	return []v1.Layer{gzipLayer(t, baseLayer()), zstdLayer(t, midLayer()), gzipLayer(t, topLayer())}
}

func ctxWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
