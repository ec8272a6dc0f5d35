package imagepull

import (
	"archive/tar"
	"bytes"
	"io"
	"path"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bangerdev/banger/internal/ext4"
)

// readTree parses a flattened stream, checking the stream invariants
// (parents first, each non-directory once, no whiteouts), and returns the
// final entry of each path with its data.
func readTree(t *testing.T, b []byte) (map[string]*tar.Header, map[string]string) {
	t.Helper()
	hdrs := map[string]*tar.Header{}
	data := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n := strings.TrimSuffix(h.Name, "/")
		if n == "." || n == "" {
			n = "."
		}
		if strings.Contains(path.Base(n), ".wh.") {
			t.Errorf("whiteout %q in flattened stream", h.Name)
		}
		if n != "." {
			if p := path.Dir(n); p != "." {
				if ph, ok := hdrs[p]; !ok || ph.Typeflag != tar.TypeDir {
					t.Errorf("%q written before its parent directory", n)
				}
			}
		}
		if old, ok := hdrs[n]; ok && (old.Typeflag != tar.TypeDir || h.Typeflag != tar.TypeDir) {
			t.Errorf("%q written twice", n)
		}
		if h.Typeflag == tar.TypeLink {
			if _, ok := hdrs[h.Linkname]; !ok {
				t.Errorf("hardlink %q written before its target %q", n, h.Linkname)
			}
		}
		hdrs[n] = h
		b, _ := io.ReadAll(tr)
		data[n] = string(b)
	}
	return hdrs, data
}

func checkTree(t *testing.T, hdrs map[string]*tar.Header, data map[string]string) {
	t.Helper()
	exp := expectedTree()
	for p, w := range exp {
		h, ok := hdrs[p]
		if !ok {
			t.Errorf("missing %q", p)
			continue
		}
		if h.Typeflag != w.typ || h.Mode != w.mode || h.Uid != w.uid || h.Gid != w.gid || h.Linkname != w.link || data[p] != w.data {
			d := data[p]
			if len(d) > 40 {
				d = d[:40] + "…"
			}
			t.Errorf("%q = type %c mode %o %d:%d link %q data %q; want type %c mode %o %d:%d link %q", p,
				h.Typeflag, h.Mode, h.Uid, h.Gid, h.Linkname, d, w.typ, w.mode, w.uid, w.gid, w.link)
		}
	}
	for p := range hdrs {
		if _, ok := exp[p]; !ok {
			t.Errorf("unexpected %q", p)
		}
	}
	cap := hdrs["fixture/cap"]
	if cap == nil || cap.PAXRecords["SCHILY.xattr.security.capability"] != capValue || cap.PAXRecords["SCHILY.xattr.user.fixture"] != "hello" {
		t.Errorf("fixture/cap xattrs lost: %v", cap)
	}
	if h := hdrs["dev/null"]; h == nil || h.Devmajor != 1 || h.Devminor != 3 {
		t.Errorf("dev/null device numbers lost: %+v", h)
	}
	if h := hdrs["dev/loop0"]; h == nil || h.Devmajor != 7 || h.Devminor != 0 {
		t.Errorf("dev/loop0 device numbers lost: %+v", h)
	}
}

func flattenLayers(t *testing.T, layers []v1.Layer) ([]byte, Stats, error) {
	t.Helper()
	srcs, err := SourcesFromV1(layers)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	st, err := Flatten(bg(), srcs, tw)
	if err != nil {
		return nil, st, err
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), st, nil
}

func TestFlattenFixture(t *testing.T) {
	b, st, err := flattenLayers(t, fixtureLayers(t))
	if err != nil {
		t.Fatal(err)
	}
	hdrs, data := readTree(t, b)
	checkTree(t, hdrs, data)
	var est int64
	var dirs int64
	for p, h := range hdrs {
		switch h.Typeflag {
		case tar.TypeReg:
			est += (int64(len(data[p])) + 4095) &^ 4095
		case tar.TypeDir:
			dirs++
		}
	}
	if st.EstimatedSize != est+dirs*4096 || st.Dirs != dirs {
		t.Errorf("EstimatedSize = %d, want about %d", st.EstimatedSize, est+dirs*4096)
	}
	if st.Whiteouts != 4 {
		t.Errorf("Whiteouts = %d, want 4 (motd, apt, gunzip, opaque doc)", st.Whiteouts)
	}
}

func TestFlattenSameLayerWhiteoutKeepsFile(t *testing.T) {
	lower := gzipLayer(t, []ent{{name: "a", mode: 0o644, data: "lower"}, {name: "b", mode: 0o644, data: "b"}})
	// A whiteout only applies to lower layers, even if the same layer adds
	// the path again (in either order).
	upper := gzipLayer(t, []ent{{name: ".wh.a"}, {name: "a", mode: 0o600, data: "upper"}, {name: "c", mode: 0o644, data: "c"}, {name: ".wh.c"}})
	b, _, err := flattenLayers(t, []v1.Layer{lower, upper})
	if err != nil {
		t.Fatal(err)
	}
	hdrs, data := readTree(t, b)
	if data["a"] != "upper" || data["c"] != "c" || data["b"] != "b" || len(hdrs) != 3 {
		t.Errorf("got %v", data)
	}
}

func TestFlattenDirReplacedBySymlink(t *testing.T) {
	// usrmerge: /lib becomes a symlink in an upper layer; the lower /lib
	// contents must disappear.
	lower := gzipLayer(t, []ent{{typ: tar.TypeDir, name: "lib/", mode: 0o755}, {name: "lib/libc.so", mode: 0o755, data: "c"}})
	upper := gzipLayer(t, []ent{{typ: tar.TypeSymlink, name: "lib", link: "usr/lib"}})
	b, _, err := flattenLayers(t, []v1.Layer{lower, upper})
	if err != nil {
		t.Fatal(err)
	}
	hdrs, _ := readTree(t, b)
	if h := hdrs["lib"]; h == nil || h.Typeflag != tar.TypeSymlink || len(hdrs) != 1 {
		t.Errorf("got %v", hdrs)
	}
}

func TestFlattenRejectsHostileEntries(t *testing.T) {
	tests := []struct {
		name string
		ents []ent
		want string
	}{
		{"dotdot", []ent{{name: "../evil", mode: 0o644, data: "x"}}, `"../evil"`},
		{"inner dotdot", []ent{{name: "a/../../evil", mode: 0o644, data: "x"}}, `"a/../../evil"`},
		{"escaping symlink", []ent{{typ: tar.TypeSymlink, name: "usr/lib/x", link: "../../../etc/shadow"}}, `"usr/lib/x"`},
		{"escaping hardlink", []ent{{name: "etc/passwd", mode: 0o644, data: "x"}, {typ: tar.TypeLink, name: "y", link: "../etc/passwd"}}, `"y"`},
		{"dotdot whiteout", []ent{{name: "etc/.wh..."}}, `"etc/.wh..."`},
		{"missing hardlink target", []ent{{typ: tar.TypeLink, name: "z", link: "nowhere"}}, `"z"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := gzipLayer(t, tt.ents)
			_, _, err := flattenLayers(t, []v1.Layer{gzipLayer(t, baseLayer()), l})
			if err == nil {
				t.Fatal("hostile layer accepted")
			}
			if !strings.Contains(err.Error(), digestOf(t, l)) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name the layer %s and %s", err, digestOf(t, l), tt.want)
			}
		})
	}
}

func TestFlattenAbsoluteNamesStayInside(t *testing.T) {
	l := gzipLayer(t, []ent{{name: "/etc/x", mode: 0o644, data: "x"}, {name: "./etc/y", mode: 0o644, data: "y"}, {typ: tar.TypeLink, name: "etc/z", link: "/etc/x"}})
	b, _, err := flattenLayers(t, []v1.Layer{l})
	if err != nil {
		t.Fatal(err)
	}
	hdrs, data := readTree(t, b)
	if data["etc/x"] != "x" || data["etc/y"] != "y" || hdrs["etc/z"] == nil || hdrs["etc/z"].Linkname != "etc/x" {
		t.Errorf("got %v", data)
	}
}

func TestFlattenCanceled(t *testing.T) {
	srcs, _ := SourcesFromV1(fixtureLayers(t))
	ctx, cancel := ctxWithCancel()
	cancel()
	if _, err := Flatten(ctx, srcs, tar.NewWriter(io.Discard)); err == nil {
		t.Fatal("canceled flatten succeeded")
	}
}

func TestFlattenHardlinkEdgeCases(t *testing.T) {
	// A link written before its target in the same layer, a link to a file
	// of a lower layer, and two links sharing a target deleted above.
	lower := gzipLayer(t, []ent{
		{typ: tar.TypeDir, name: "d/", mode: 0o755},
		{name: "d/base", mode: 0o750, uid: 7, data: "base"},
		{name: "d/gone", mode: 0o700, uid: 9, data: "gone-data"},
		{typ: tar.TypeLink, name: "d/keep1", link: "d/gone"},
		{typ: tar.TypeLink, name: "d/keep2", link: "d/gone"},
	})
	middle := gzipLayer(t, []ent{
		{typ: tar.TypeLink, name: "early", link: "late"},
		{name: "late", mode: 0o640, data: "late"},
		{typ: tar.TypeLink, name: "tobase", link: "d/base"},
	})
	upper := gzipLayer(t, []ent{{name: "d/.wh.gone"}})
	b, _, err := flattenLayers(t, []v1.Layer{lower, middle, upper})
	if err != nil {
		t.Fatal(err)
	}
	hdrs, data := readTreeLoose(t, b)
	if _, ok := hdrs["d/gone"]; ok {
		t.Error("whited-out target survived")
	}
	k1, k2 := hdrs["d/keep1"], hdrs["d/keep2"]
	if k1 == nil || k1.Typeflag != tar.TypeReg || data["d/keep1"] != "gone-data" || k1.Mode != 0o700 || k1.Uid != 9 {
		t.Errorf("d/keep1 = %+v %q, want the deleted target's content and metadata", k1, data["d/keep1"])
	}
	if k2 == nil || k2.Typeflag != tar.TypeLink || k2.Linkname != "d/keep1" || k2.Mode != 0o700 {
		t.Errorf("d/keep2 = %+v, want a link to d/keep1", k2)
	}
	if h := hdrs["early"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "late" {
		t.Errorf("early = %+v", h)
	}
	if h := hdrs["tobase"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "d/base" {
		t.Errorf("tobase = %+v", h)
	}

	// The same layers through BuildExt4 (the ext4 writer needs link targets
	// first, as the stream guarantees).
	requireE2fsprogs(t)
	srcs, _ := SourcesFromV1([]v1.Layer{lower, middle, upper})
	img := filepath.Join(t.TempDir(), "links.ext4")
	if _, err := BuildExt4(bg(), srcs, img, Ext4Options{Compact: true}); err != nil {
		t.Fatal(err)
	}
	if err := ext4.Check(bg(), img); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"/d/keep2": "Links: 2", "/late": "Links: 2", "/d/base": "Links: 2"} {
		if out := debugfs(t, img, "stat "+p); !strings.Contains(out, want) {
			t.Errorf("stat %s: want %q in\n%s", p, want, out)
		}
	}
}

// readTreeLoose parses a stream that may hold links to targets written
// later (the deferred ones come at the end, after their targets).
func readTreeLoose(t *testing.T, b []byte) (map[string]*tar.Header, map[string]string) {
	t.Helper()
	hdrs := map[string]*tar.Header{}
	data := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hdrs, data
		}
		if err != nil {
			t.Fatal(err)
		}
		n := strings.TrimSuffix(h.Name, "/")
		if h.Typeflag == tar.TypeLink {
			if _, ok := hdrs[h.Linkname]; !ok {
				t.Errorf("hardlink %q written before its target %q", n, h.Linkname)
			}
		}
		hdrs[n] = h
		d, _ := io.ReadAll(tr)
		data[n] = string(d)
	}
}
