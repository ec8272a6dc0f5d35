package vmdisk

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
)

func needTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not installed (e2fsprogs)", n)
		}
	}
}

func allocated(t testing.TB, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func fsck(t testing.TB, path string) {
	t.Helper()
	out, err := exec.Command("e2fsck", "-fn", path).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", path, err, out)
	}
}

func debugfs(t testing.TB, path, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, path).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %q: %v\n%s", req, err, out)
	}
	return string(out)
}

func blockCount(t testing.TB, path string) int64 {
	t.Helper()
	out, err := exec.Command("dumpe2fs", "-h", path).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`(?m)^Block count:\s+(\d+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no block count in %s", out)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

func TestCreateOverlay(t *testing.T) {
	needTool(t, "e2fsck", "debugfs")
	for _, size := range []int64{16 << 20, 2 << 30, 20 << 30} {
		path := filepath.Join(t.TempDir(), "overlay.ext4")
		start := time.Now()
		if err := CreateOverlay(context.Background(), path, size); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		alloc := allocated(t, path)
		t.Logf("overlay %d MiB: %v, %d KiB allocated", size>>20, took, alloc>>10)
		if got, _ := Size(path); got != size {
			t.Errorf("apparent size %d, want %d", got, size)
		}
		if alloc > 2<<20 {
			t.Errorf("%d bytes allocated for a %d MiB disk, want at most 2 MiB", alloc, size>>20)
		}
		fsck(t, path)
		ls := debugfs(t, path, "ls -l /")
		for _, d := range []string{UpperDir, WorkDir} {
			if !regexp.MustCompile(`40755 \(2\)\s+0\s+0\s+.*\s` + d + `\n`).MatchString(ls) {
				t.Errorf("%s missing or not 0755 root:root in\n%s", d, ls)
			}
		}
		fi, _ := os.Stat(path)
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600", fi.Mode())
		}
	}
}

func TestCreateWork(t *testing.T) {
	needTool(t, "e2fsck", "debugfs")
	path := filepath.Join(t.TempDir(), "work.ext4")
	if err := CreateWork(context.Background(), path, 8<<30); err != nil {
		t.Fatal(err)
	}
	fsck(t, path)
	ls := debugfs(t, path, "ls -l /")
	if strings.Contains(ls, UpperDir) || strings.Contains(ls, "lost+found") {
		t.Errorf("work disk is not empty:\n%s", ls)
	}
	if !regexp.MustCompile(`\s2\s+40700 \(2\)\s+0\s+0\s.*\s\.\n`).MatchString(ls) {
		t.Errorf("work disk root is not 0700 root:root:\n%s", ls)
	}
	if a := allocated(t, path); a > 2<<20 {
		t.Errorf("%d bytes allocated", a)
	}
	if err := CreateWork(context.Background(), path, 8<<30); errkind.Of(err) != errkind.AlreadyExists {
		t.Errorf("second create: %v, want already exists", err)
	}
	for _, size := range []int64{0, 1 << 20, 64<<20 + 1} {
		if err := CreateWork(context.Background(), filepath.Join(t.TempDir(), "x"), size); errkind.Of(err) != errkind.InvalidArgument {
			t.Errorf("size %d: %v, want invalid argument", size, err)
		}
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*"))
	if len(matches) > 0 {
		t.Errorf("temporary files left: %v", matches)
	}
}

func TestResize(t *testing.T) {
	needTool(t, "e2fsck", "resize2fs", "dumpe2fs")
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "overlay.ext4")
	if err := CreateOverlay(ctx, path, 256<<20); err != nil {
		t.Fatal(err)
	}
	before := blockCount(t, path)
	if err := Resize(ctx, path, 4<<30); err != nil {
		t.Fatal(err)
	}
	fsck(t, path)
	after := blockCount(t, path)
	if before != 256<<20/4096 || after != 4<<30/4096 {
		t.Errorf("block count %d -> %d, want %d -> %d", before, after, 256<<20/4096, 4<<30/4096)
	}
	if a := allocated(t, path); a > 8<<20 {
		t.Errorf("%d KiB allocated after grow", a>>10)
	}
	if !strings.Contains(debugfs(t, path, "ls /"), UpperDir) {
		t.Error("upper dir lost in resize")
	}
	if err := Resize(ctx, path, 4<<30); err != nil {
		t.Errorf("same size: %v", err)
	}
	if err := Resize(ctx, path, 1<<30); errkind.Of(err) != errkind.InvalidArgument {
		t.Errorf("shrink: %v, want invalid argument", err)
	}
	if err := Resize(ctx, filepath.Join(t.TempDir(), "none"), 1<<30); errkind.Of(err) != errkind.NotFound {
		t.Errorf("missing disk: %v, want not found", err)
	}
}

// BenchmarkCreateOverlay measures creating a 20 GiB overlay disk.
func BenchmarkCreateOverlay(b *testing.B) {
	needTool(b, "mkfs.ext4", "debugfs")
	dir := b.TempDir()
	for i := range b.N {
		p := filepath.Join(dir, "o"+strconv.Itoa(i))
		if err := CreateOverlay(context.Background(), p, 20<<30); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(allocated(b, p)), "alloc-bytes")
		os.Remove(p)
	}
}
