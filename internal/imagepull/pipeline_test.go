package imagepull

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/bangerdev/banger/internal/testenv"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/ext4"
)

// requireE2fsprogs skips (fails under CI) when e2fsprogs is missing.
func requireE2fsprogs(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"e2fsck", "debugfs", "tune2fs", "resize2fs"} {
		testenv.RequireBinary(t, tool)
	}
}

func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	bin, _ := ext4.Tool("debugfs")
	out, err := exec.Command(bin, "-R", req, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v: %s", req, err, out)
	}
	return string(out)
}

type fsEntry struct {
	mode     int64 // with type bits
	uid, gid int
	size     int64
}

// walkExt4 lists every path of an image with debugfs `ls -p`.
func walkExt4(t *testing.T, img string) map[string]fsEntry {
	t.Helper()
	out := map[string]fsEntry{}
	queue := []string{"."}
	for len(queue) > 0 {
		dir := queue[0]
		queue = queue[1:]
		p := "/" + strings.TrimPrefix(dir, ".")
		for _, line := range strings.Split(debugfs(t, img, `ls -p "`+p+`"`), "\n") {
			// /inode/mode/uid/gid/name/size/
			f := strings.Split(line, "/")
			if len(f) < 7 || f[0] != "" {
				continue
			}
			name := strings.Join(f[5:len(f)-2], "/")
			if name == "." || name == ".." || name == "" || (dir == "." && name == "lost+found") {
				continue
			}
			mode, _ := strconv.ParseInt(f[2], 8, 64)
			uid, _ := strconv.Atoi(f[3])
			gid, _ := strconv.Atoi(f[4])
			size, _ := strconv.ParseInt(f[len(f)-2], 10, 64)
			full := name
			if dir != "." {
				full = dir + "/" + name
			}
			out[full] = fsEntry{mode: mode, uid: uid, gid: gid, size: size}
			if mode&0o170000 == 0o040000 {
				queue = append(queue, full)
			}
		}
	}
	return out
}

var typeBits = map[byte]int64{
	tar.TypeReg: 0o100000, tar.TypeLink: 0o100000, tar.TypeDir: 0o040000, tar.TypeSymlink: 0o120000,
	tar.TypeChar: 0o020000, tar.TypeBlock: 0o060000, tar.TypeFifo: 0o010000,
}

func checkExt4Fixture(t *testing.T, img string) {
	t.Helper()
	if err := ext4.Check(bg(), img); err != nil {
		t.Fatal(err)
	}
	got := walkExt4(t, img)
	exp := expectedTree()
	delete(exp, ".")
	for p, w := range exp {
		e, ok := got[p]
		if !ok {
			t.Errorf("ext4: missing %q", p)
			continue
		}
		size := int64(len(w.data))
		if w.typ == tar.TypeSymlink {
			size = int64(len(w.link))
		}
		if w.typ == tar.TypeDir || w.typ == tar.TypeChar || w.typ == tar.TypeBlock || w.typ == tar.TypeFifo {
			size = e.size
		}
		if w.typ == tar.TypeLink {
			size = int64(len(exp[w.link].data))
		}
		if e.mode != typeBits[w.typ]|w.mode || e.uid != w.uid || e.gid != w.gid || e.size != size {
			t.Errorf("ext4: %q = mode %o %d:%d size %d, want mode %o %d:%d size %d", p, e.mode, e.uid, e.gid, e.size,
				typeBits[w.typ]|w.mode, w.uid, w.gid, size)
		}
	}
	for p := range got {
		if _, ok := exp[p]; !ok {
			t.Errorf("ext4: unexpected %q", p)
		}
	}
	ea := debugfs(t, img, "ea_list /fixture/cap")
	if !strings.Contains(ea, "security.capability (20)") || !strings.Contains(ea, `user.fixture (5) = "hello"`) {
		t.Errorf("xattrs of /fixture/cap: %s", ea)
	}
	for p, want := range map[string]string{
		"/dev/null":           "Device major/minor number: 01:03",
		"/dev/loop0":          "Device major/minor number: 07:00",
		"/fixture/data":       "Links: 3",
		"/usr/bin/uncompress": "Links: 1",
		"/fixture/long":       "Size: 201",
	} {
		if out := debugfs(t, img, "stat "+p); !strings.Contains(out, want) {
			t.Errorf("stat %s: missing %q in\n%s", p, want, out)
		}
	}
	dump := filepath.Join(t.TempDir(), "dump")
	debugfs(t, img, "dump /usr/bin/uncompress "+dump)
	if b, _ := os.ReadFile(dump); string(b) != "gz-binary" {
		t.Errorf("uncompress content = %q", b)
	}
	debugfs(t, img, "dump /fixture/big "+dump)
	if b, _ := os.ReadFile(dump); string(b) != exp["fixture/big"].data {
		t.Errorf("big file content differs (%d bytes)", len(b))
	}
}

func TestPullToExt4(t *testing.T) {
	requireE2fsprogs(t)
	reg := newTestRegistry(t)
	ref := reg.push(t, "fixture/img:v1", makeImage(t, "amd64", fixtureLayers(t)...))

	t.Run("compact pure Go", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "rootfs.ext4")
		opts := Ext4Options{Options: testOptions(t), Compact: true}
		opts.PureGo = true
		if _, err := PullToExt4(bg(), ref, out, opts); err != nil {
			t.Fatal(err)
		}
		checkExt4Fixture(t, out)
	})
	t.Run("compact", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "rootfs.ext4")
		var stages []Stage
		opts := Ext4Options{Options: testOptions(t), Compact: true}
		opts.Progress = func(p Progress) {
			if len(stages) == 0 || stages[len(stages)-1] != p.Stage {
				stages = append(stages, p.Stage)
			}
		}
		res, err := PullToExt4(bg(), ref, out, opts)
		if err != nil {
			t.Fatal(err)
		}
		if !res.ReadOnly || res.Bytes > 8<<20 || res.Image == nil || len(res.Image.Layers) != 3 || res.Stats.Files == 0 {
			t.Errorf("result = %+v", res)
		}
		checkExt4Fixture(t, out)
		s := strings.Join(stagesStrings(stages), ",")
		if !strings.HasPrefix(s, "resolving,") || !strings.Contains(s, "flattening") || !strings.HasSuffix(s, "writing") {
			t.Errorf("stages = %s", s)
		}
	})
	t.Run("default size", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "rootfs.ext4")
		res, err := PullToExt4(bg(), ref, out, Ext4Options{Options: testOptions(t)})
		if err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(out)
		if res.ReadOnly || res.Bytes != MinImageSize || st.Size() != MinImageSize {
			t.Errorf("result = %+v, file %d bytes; want a writable 1 GiB image", res, st.Size())
		}
		checkExt4Fixture(t, out)
	})
	t.Run("explicit size too small", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "rootfs.ext4")
		_, err := PullToExt4(bg(), ref, out, Ext4Options{Options: testOptions(t), Size: 4096})
		if !errors.Is(err, errkind.InvalidArgument) {
			t.Errorf("tiny size: %v, want InvalidArgument", err)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Error("failed build left its output")
		}
	})
}

func TestDefaultSize(t *testing.T) {
	for est, want := range map[int64]int64{0: 1 << 30, 500 << 20: 1 << 30, 1 << 30: 1280 << 20, 4<<30 + 1: 5<<30 + 1<<20} {
		if got := DefaultSize(est); got != want {
			t.Errorf("DefaultSize(%d) = %d, want %d", est, got, want)
		}
	}
}

func TestPullToExt4Canceled(t *testing.T) {
	requireE2fsprogs(t)
	reg := newTestRegistry(t)
	big := gzipLayer(t, []ent{{name: "big", mode: 0o644, data: strings.Repeat("x", 8<<20)}})
	ref := reg.push(t, "slow/img:v1", makeImage(t, "amd64", fixtureLayers(t)[0], big))
	// Stall the big blob until the pull is canceled.
	stall := make(chan struct{})
	bigDigest := digestOf(t, big)
	reg.tamper = func(d string, body []byte) []byte {
		if d == bigDigest {
			<-stall
		}
		return body
	}
	defer close(stall)
	opts := testOptions(t)
	out := filepath.Join(t.TempDir(), "rootfs.ext4")
	for _, pureGo := range []bool{false, true} {
		ctx, cancel := ctxWithCancel()
		var once sync.Once
		o := opts
		o.PureGo = pureGo
		o.Progress = func(p Progress) {
			if p.Stage == StageFlattening {
				once.Do(cancel)
			}
		}
		_, err := PullToExt4(ctx, ref, out, Ext4Options{Options: o, Compact: true})
		cancel()
		if !errors.Is(err, context.Canceled) && !errors.Is(err, errkind.Canceled) {
			t.Errorf("pure Go %v: canceled pull returned %v", pureGo, err)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Error("canceled pull left its output")
		}
		checkNoPartialBlob(t, opts.CacheDir, bigDigest)
	}
}
