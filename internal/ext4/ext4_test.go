package ext4

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/testenv"
	"time"
)

type entry struct {
	hdr  tar.Header
	data string
}

func fixtureTar(t *testing.T) []byte {
	t.Helper()
	mt := time.Unix(1700000000, 0)
	ents := []entry{
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "bin/su", Mode: 0o4755}, data: "setuid"},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "bin/ping", Mode: 0o755,
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
				"SCHILY.xattr.user.fixture": "hello"}}, data: "ping"},
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "bin/ping-link", Linkname: "bin/ping"}},
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/sh", Linkname: "busybox"}},
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/long", Linkname: "/" + strings.Repeat("x", 200)}},
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "dev/", Mode: 0o755}},
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}},
		{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/loop0", Mode: 0o660, Devmajor: 7, Devminor: 0, Gid: 6}},
		{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "dev/fifo", Mode: 0o600}},
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "home/u/", Mode: 0o750, Uid: 1000, Gid: 1000}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "home/u/big", Mode: 0o640, Uid: 100000, Gid: 100000}, data: strings.Repeat("0123456789abcdef", 70000)},
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777}},
		// A repeated directory entry updates the metadata.
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "home/", Mode: 0o711}},
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		h.ModTime = mt
		h.Size = int64(len(e.data))
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
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

func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	bin := testenv.RequireBinary(t, "debugfs")
	out, err := exec.Command(bin, "-R", req, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v: %s", req, err, out)
	}
	return string(out)
}

// requireE2fsprogs skips (fails under CI) when e2fsprogs is missing.
func requireE2fsprogs(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"e2fsck", "debugfs", "tune2fs", "resize2fs"} {
		testenv.RequireBinary(t, tool)
	}
}

func mustContain(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s: missing %q in:\n%s", what, w, out)
		}
	}
}

func TestFromTarCompact(t *testing.T) {
	requireE2fsprogs(t)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	info, err := FromTar(ctx, bytes.NewReader(fixtureTar(t)), img, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !info.ReadOnly || info.Bytes <= 0 || info.Bytes > 8<<20 {
		t.Fatalf("info = %+v, want a small read-only image", info)
	}
	if err := Check(ctx, img); err != nil {
		t.Fatal(err)
	}
	checkFixture(t, img)
	mustContain(t, "features", debugfs(t, img, "stats"), "read-only")
}

func TestFromTarGrow(t *testing.T) {
	requireE2fsprogs(t)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	const size = 300 << 20
	info, err := FromTar(ctx, bytes.NewReader(fixtureTar(t)), img, Options{Size: size, Journal: true, Label: "rootfs"})
	if err != nil {
		t.Fatal(err)
	}
	if info.ReadOnly || info.Bytes != size {
		t.Fatalf("info = %+v, want writable %d-byte image", info, size)
	}
	if err := Check(ctx, img); err != nil {
		t.Fatal(err)
	}
	checkFixture(t, img)
	stats := debugfs(t, img, "stats")
	mustContain(t, "stats", stats, "has_journal", "Filesystem volume name:   rootfs", "Block count:              76800")
	if strings.Contains(stats, "read-only") {
		t.Errorf("grown image still read-only:\n%s", stats)
	}
}

func checkFixture(t *testing.T, img string) {
	t.Helper()
	mustContain(t, "su", debugfs(t, img, "stat /bin/su"), "Mode:  04755", "User:     0")
	ping := debugfs(t, img, "stat /bin/ping")
	mustContain(t, "ping", ping, "Links: 2")
	mustContain(t, "ping xattrs", debugfs(t, img, "ea_list /bin/ping"), "security.capability", `user.fixture (5) = "hello"`)
	mustContain(t, "ping-link", debugfs(t, img, "stat /bin/ping-link"), "Links: 2", "Mode:  0755")
	mustContain(t, "sh", debugfs(t, img, "stat /bin/sh"), "Type: symlink", `Fast link dest: "busybox"`)
	mustContain(t, "long", debugfs(t, img, "stat /bin/long"), "Type: symlink", "Size: 201")
	mustContain(t, "null", debugfs(t, img, "stat /dev/null"), "Type: character special", "Device major/minor number: 01:03")
	mustContain(t, "loop0", debugfs(t, img, "stat /dev/loop0"), "Type: block special", "Device major/minor number: 07:00", "Group:     6")
	mustContain(t, "fifo", debugfs(t, img, "stat /dev/fifo"), "Type: FIFO", "Mode:  0600")
	mustContain(t, "u", debugfs(t, img, "stat /home/u"), "User:  1000", "Group:  1000", "Mode:  0750")
	mustContain(t, "big", debugfs(t, img, "stat /home/u/big"), "User: 100000", "Group: 100000", "Size: 1120000")
	mustContain(t, "home", debugfs(t, img, "stat /home"), "Mode:  0711")
	mustContain(t, "tmp", debugfs(t, img, "stat /tmp"), "Mode:  01777")

	out := filepath.Join(t.TempDir(), "big")
	debugfs(t, img, "dump /home/u/big "+out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != strings.Repeat("0123456789abcdef", 70000) {
		t.Errorf("dumped big file differs (%d bytes)", len(got))
	}
}

func TestFromTarRejectsDuplicateFile(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i < 2; i++ {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "f", Mode: 0o644, Size: 5000}); err != nil {
			t.Fatal(err)
		}
		tw.Write(bytes.Repeat([]byte{'a'}, 5000))
	}
	tw.Close()
	img := filepath.Join(t.TempDir(), "x.ext4")
	if _, err := FromTar(context.Background(), &buf, img, Options{}); err == nil {
		t.Fatal("duplicate regular file accepted")
	}
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Errorf("failed build left %s behind", img)
	}
}

func TestFromTarCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	img := filepath.Join(t.TempDir(), "x.ext4")
	if _, err := FromTar(ctx, bytes.NewReader(fixtureTar(t)), img, Options{}); err == nil {
		t.Fatal("canceled build succeeded")
	}
}

// TestFromTarManyGroups covers images with several block groups, where the
// inode bitmap padding must be set in every group.
func TestFromTarManyGroups(t *testing.T) {
	requireE2fsprogs(t)
	if testing.Short() {
		t.Skip("writes a 140 MB image")
	}
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		for d := 0; d < 40; d++ {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("d%d/", d), Mode: 0o755})
			for i := 0; i < 1000; i++ {
				tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("d%d/f%d", d, i), Mode: 0o644})
			}
		}
		big := bytes.Repeat([]byte{0xab}, 1<<20)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "big", Mode: 0o644, Size: 140 << 20})
		for i := 0; i < 140; i++ {
			tw.Write(big)
		}
		pw.CloseWithError(tw.Close())
	}()
	img := filepath.Join(t.TempDir(), "many.ext4")
	if _, err := FromTar(context.Background(), pr, img, Options{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	if err := Check(context.Background(), img); err != nil {
		t.Fatal(err)
	}
	mustContain(t, "stats", debugfs(t, img, "stats"), "Group  1:")
	mustContain(t, "f999", debugfs(t, img, "stat /d39/f999"), "Type: regular")
}
