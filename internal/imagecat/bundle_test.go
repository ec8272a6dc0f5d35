package imagecat

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/ext4"
	"github.com/bangerdev/banger/internal/model"
)

// testRootfs writes a real ext4 (a few files, grown to 64 MiB so that most
// of it is zeros) and returns its path.
func testRootfs(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("resize2fs"); err != nil {
		t.Skip("e2fsprogs not installed")
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct {
		name string
		body string
	}{{"etc/", ""}, {"etc/os-release", "ID=test\n"}, {"bin/", ""}, {"bin/hello", "#!/bin/sh\necho hello\n"}} {
		hdr := &tar.Header{Name: e.name, Mode: 0o755, ModTime: time.Unix(1700000000, 0)}
		if strings.HasSuffix(e.name, "/") {
			hdr.Typeflag = tar.TypeDir
		} else {
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	p := filepath.Join(t.TempDir(), "rootfs.ext4")
	if _, err := ext4.FromTar(context.Background(), &buf, p, ext4.Options{Size: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	return p
}

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

func testManifest() Manifest {
	return Manifest{Name: "tool", Distro: "test", KernelRef: "debian-cloud",
		Config: model.ImageConfig{Env: []string{"PATH=/bin"}, Cmd: []string{"sh"}}}
}

func TestBundleRoundTrip(t *testing.T) {
	rootfs := testRootfs(t)
	out := t.TempDir()
	info, err := Bundle(context.Background(), rootfs, testManifest(), out)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(info.Path) != BundleName("tool", "amd64", info.SHA256) || info.Entry.Bundle != filepath.Base(info.Path) {
		t.Fatalf("bundle name = %s, entry %+v", info.Path, info.Entry)
	}
	if got := fileSHA(t, info.Path); got != info.SHA256 {
		t.Fatalf("reported sha %s, file has %s", info.SHA256, got)
	}
	fi, _ := os.Stat(info.Path)
	if fi.Size() != info.Size || info.Size > 8<<20 {
		t.Fatalf("bundle size %d (reported %d): zeros not compressed?", fi.Size(), info.Size)
	}
	// The entry it reports is a valid catalog entry.
	cat, err := Parse(mustJSON(t, Catalog{Version: 1, Images: []Image{info.Entry}}))
	if err != nil {
		t.Fatalf("entry does not validate: %v", err)
	}
	if _, err := cat.Lookup("tool"); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(out, ".bundle-*"))
	if len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}

	dst := t.TempDir()
	f, _ := os.Open(info.Path)
	defer f.Close()
	m, err := Extract(context.Background(), f, Pin{SHA256: info.SHA256, Size: info.Size}, dst)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "tool" || m.KernelRef != "debian-cloud" || m.RootfsSize != 64<<20 || m.Config.Cmd[0] != "sh" {
		t.Fatalf("manifest = %+v", m)
	}
	got := filepath.Join(dst, RootfsName)
	if fileSHA(t, got) != fileSHA(t, rootfs) {
		t.Fatal("extracted rootfs differs")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(got, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 >= 32<<20 {
		t.Errorf("extracted rootfs is not sparse: %d bytes allocated of %d", st.Blocks*512, st.Size)
	}
	if out, err := exec.Command("e2fsck", "-fn", got).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dst, ManifestName)); err != nil {
		t.Fatal(err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type entry struct {
	name     string
	typeflag byte
	body     []byte
	link     string
}

// craft builds a tar+zstd stream of entries and returns it with its sha256.
func craft(t *testing.T, entries ...entry) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := zstd.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		tf := e.typeflag
		if tf == 0 {
			tf = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: tf, Mode: 0o644, Linkname: e.link}
		if tf == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.body)
	}
	tw.Close()
	zw.Close()
	sum := sha256.Sum256(buf.Bytes())
	return buf.Bytes(), hex.EncodeToString(sum[:])
}

func manifestEntry(t *testing.T) entry {
	m := testManifest()
	m.Version, m.Arch = ManifestVersion, "amd64"
	return entry{name: ManifestName, body: mustJSON(t, m)}
}

func TestExtractRefusesBadBundles(t *testing.T) {
	rootfs := entry{name: RootfsName, body: bytes.Repeat([]byte{1, 0, 0, 0}, 4096)}
	good, goodSHA := craft(t, manifestEntry(t), rootfs)
	tests := []struct {
		name string
		data []byte
		pin  string // "" means the stream's own sha256
		want string
	}{
		{"wrong sha256", good, strings.Repeat("0", 64), "sha256 mismatch"},
		{"extra entry", nil, "", "unexpected entry \"extra.sh\""},
		{"path traversal", nil, "", "leaves the bundle (path traversal)"},
		{"absolute path", nil, "", "leaves the bundle"},
		{"symlink", nil, "", "is not a regular file"},
		{"duplicate", nil, "", "appears twice"},
		{"missing manifest", nil, "", "incomplete"},
		{"truncated stream", good[:len(good)/2], goodSHA, "truncated or corrupt"},
		{"trailing garbage", append(append([]byte{}, good...), "garbage"...), "", "corrupt"},
		{"not zstd", []byte("this is not a bundle at all"), "", "corrupt"},
	}
	crafted := map[string][]entry{
		"extra entry":      {manifestEntry(t), rootfs, {name: "extra.sh", body: []byte("rm -rf /")}},
		"path traversal":   {manifestEntry(t), {name: "../" + RootfsName, body: rootfs.body}},
		"absolute path":    {manifestEntry(t), {name: "/etc/" + RootfsName, body: rootfs.body}},
		"symlink":          {manifestEntry(t), {name: RootfsName, typeflag: tar.TypeSymlink, link: "/etc/shadow"}},
		"duplicate":        {manifestEntry(t), rootfs, rootfs},
		"missing manifest": {rootfs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, sum := tt.data, ""
			if data == nil {
				data, sum = craft(t, crafted[tt.name]...)
			} else {
				s := sha256.Sum256(data)
				sum = hex.EncodeToString(s[:])
			}
			if tt.pin != "" {
				sum = tt.pin
			}
			dst := t.TempDir()
			_, err := Extract(context.Background(), bytes.NewReader(data), Pin{SHA256: sum}, dst)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if !errors.Is(err, errkind.InvalidArgument) {
				t.Errorf("not InvalidArgument: %v", err)
			}
			left, _ := os.ReadDir(dst)
			if len(left) != 0 {
				t.Errorf("files left after a refused bundle: %v", left)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(dst), RootfsName)); err == nil {
				t.Error("traversal wrote outside the destination")
			}
		})
	}
	// A pinned size smaller than the stream stops the read early.
	_, err := Extract(context.Background(), bytes.NewReader(good), Pin{SHA256: goodSHA, Size: 100}, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "larger than its pinned size") {
		t.Fatalf("oversize: %v", err)
	}
	// The good one passes.
	if _, err := Extract(context.Background(), bytes.NewReader(good), Pin{SHA256: goodSHA, Size: int64(len(good))}, t.TempDir()); err != nil {
		t.Fatalf("good bundle: %v", err)
	}
}

// serve starts an HTTP server on 127.0.0.1 serving files from dir and
// counting requests.
func serve(t *testing.T, dir string) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.FileServer(http.Dir(dir)))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func TestFetchOverHTTP(t *testing.T) {
	rootfs := testRootfs(t)
	pub := t.TempDir()
	info, err := Bundle(context.Background(), rootfs, testManifest(), pub)
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, pub)
	cat, err := Parse(mustJSON(t, Catalog{Version: 1, BaseURL: srv.URL, Images: []Image{info.Entry}}))
	if err != nil {
		t.Fatal(err)
	}
	res, err := cat.Resolve("tool")
	if err != nil {
		t.Fatal(err)
	}
	var last, total int64
	dst := t.TempDir()
	m, err := Fetch(context.Background(), res.BundleURL, *res.Image, dst, FetchOptions{Progress: func(d, tot int64) { last, total = d, tot }})
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "tool" || last != info.Size || total != info.Size {
		t.Fatalf("manifest %+v, progress %d/%d of %d", m, last, total, info.Size)
	}
	if fileSHA(t, filepath.Join(dst, RootfsName)) != fileSHA(t, rootfs) {
		t.Fatal("fetched rootfs differs")
	}

	// A swapped object on the server fails verification and leaves nothing.
	bad := *res.Image
	bad.SHA256 = strings.Repeat("a", 64)
	dst = t.TempDir()
	if _, err := Fetch(context.Background(), res.BundleURL, bad, dst, FetchOptions{}); err == nil || !strings.Contains(err.Error(), "sha256 mismatch") {
		t.Fatalf("wrong pin: %v", err)
	}
	if left, _ := os.ReadDir(dst); len(left) != 0 {
		t.Fatalf("left: %v", left)
	}
	// Size pin checked against Content-Length before reading.
	bad = *res.Image
	bad.Size++
	if _, err := Fetch(context.Background(), res.BundleURL, bad, t.TempDir(), FetchOptions{}); err == nil || !strings.Contains(err.Error(), "pins "+strconv.FormatInt(bad.Size, 10)) {
		t.Fatalf("wrong size: %v", err)
	}
	// Missing file: NotFound.
	if _, err := Fetch(context.Background(), srv.URL+"/nope.tar.zst", *res.Image, t.TempDir(), FetchOptions{}); !errors.Is(err, errkind.NotFound) {
		t.Fatalf("404: %v", err)
	}
	// Nothing listening: Unavailable.
	if _, err := Fetch(context.Background(), "http://127.0.0.1:1/x.tar.zst", *res.Image, t.TempDir(), FetchOptions{}); !errors.Is(err, errkind.Unavailable) {
		t.Fatalf("refused: %v", err)
	}
	// A bundle of another image under the pinned bytes is refused.
	other := testManifest()
	other.Name = "other"
	oinfo, err := Bundle(context.Background(), rootfs, other, pub)
	if err != nil {
		t.Fatal(err)
	}
	wrong := *res.Image
	wrong.SHA256, wrong.Size = oinfo.SHA256, oinfo.Size
	if _, err := Fetch(context.Background(), srv.URL+"/"+filepath.Base(oinfo.Path), wrong, t.TempDir(), FetchOptions{}); err == nil || !strings.Contains(err.Error(), "holds other/amd64") {
		t.Fatalf("mismatched manifest: %v", err)
	}
}

func TestSparseCopyShortInput(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "x"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := SparseCopy(f, strings.NewReader("abc"), 10); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v", err)
	}
	n, err := SparseCopy(f, io.MultiReader(bytes.NewReader(make([]byte, 8192)), strings.NewReader("tail")), 8196)
	if err != nil || n != 8196 {
		t.Fatal(n, err)
	}
	b, _ := os.ReadFile(f.Name())
	if len(b) != 8196 || string(b[8192:]) != "tail" || !isZero(b[:8192]) {
		t.Fatalf("content wrong: len %d", len(b))
	}
}

func TestHoleReader(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("start"), 0)
	f.WriteAt(bytes.Repeat([]byte{7}, 10000), 3<<20)
	f.WriteAt([]byte("end"), 9<<20)
	f.Truncate(12 << 20)
	f.Close()
	want, _ := os.ReadFile(p)
	f, _ = os.Open(p)
	defer f.Close()
	var got bytes.Buffer
	if _, err := io.CopyBuffer(&got, newHoleReader(context.Background(), f, int64(len(want))), make([]byte, 7777)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("hole reader output differs (%d vs %d bytes)", got.Len(), len(want))
	}
}
