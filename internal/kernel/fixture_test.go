package kernel

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

const fakeRelease = "6.1.0-99-fake-amd64"

// fakeVmlinux is a minimal 64-bit x86 executable ELF (header only) followed
// by a kernel banner, enough for debug/elf and release detection.
func fakeVmlinux() []byte {
	b := make([]byte, 64, 4096)
	copy(b, "\x7fELF\x02\x01\x01")
	le := binary.LittleEndian
	le.PutUint16(b[16:], 2)  // ET_EXEC
	le.PutUint16(b[18:], 62) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint16(b[52:], 64) // ehsize
	le.PutUint16(b[54:], 56) // phentsize
	le.PutUint16(b[58:], 64) // shentsize
	b = append(b, "\x00Linux version "+fakeRelease+" (test@banger) (gcc) #1 SMP\x00"...)
	for len(b) < cap(b) {
		b = append(b, byte(len(b)))
	}
	return b
}

// fakeBzImage wraps fakeVmlinux in a gzip-payload bzImage with a 2.15 setup
// header and kernel_version string.
func fakeBzImage(t *testing.T) []byte {
	t.Helper()
	var payload bytes.Buffer
	zw := gzip.NewWriter(&payload)
	zw.Write(fakeVmlinux())
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	const setupSects = 4
	pm := (setupSects + 1) * 512
	img := make([]byte, pm+0x100+payload.Len()+64)
	img[0x1f1] = setupSects
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x020f)
	binary.LittleEndian.PutUint16(img[0x20e:], 0x300)
	copy(img[0x500:], fakeRelease+" (test@banger) #1 SMP\x00")
	binary.LittleEndian.PutUint32(img[0x248:], 0x100)
	binary.LittleEndian.PutUint32(img[0x24c:], uint32(payload.Len()))
	copy(img[pm+0x100:], payload.Bytes())
	return img
}

type tarEntry struct {
	name     string
	typ      byte
	data     []byte
	linkname string
}

func makeTar(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.data)), Linkname: e.linkname}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write(e.data)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compress(t *testing.T, codec string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch codec {
	case "":
		return b
	case ".gz":
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
	case ".xz":
		w, err := xz.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
		w.Close()
	case ".zst":
		w, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
		w.Close()
	default:
		t.Fatalf("codec %q", codec)
	}
	return buf.Bytes()
}

// makeDeb writes an ar-format .deb with the given data.tar entries.
func makeDeb(t *testing.T, dir, codec string, data []tarEntry) string {
	t.Helper()
	var ar bytes.Buffer
	ar.WriteString("!<arch>\n")
	member := func(name string, b []byte) {
		fmt.Fprintf(&ar, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", name, 0, 0, 0, "100644", len(b))
		ar.Write(b)
		if len(b)%2 == 1 {
			ar.WriteByte('\n')
		}
	}
	member("debian-binary", []byte("2.0\n"))
	control := makeTar(t, []tarEntry{{name: "./control", typ: tar.TypeReg,
		data: []byte("Package: linux-image-" + fakeRelease + "\nVersion: 1\nArchitecture: amd64\nMaintainer: test\nDescription: fake\n")}})
	member("control.tar.gz", compress(t, ".gz", control))
	member("data.tar"+codec, compress(t, codec, makeTar(t, data)))
	p := filepath.Join(dir, "linux-image-"+fakeRelease+"_1_amd64.deb")
	if err := os.WriteFile(p, ar.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// kernelDebEntries is a plausible kernel package: boot files, a modules
// tree with a symlink, docs, and one hostile path.
func kernelDebEntries(t *testing.T) []tarEntry {
	mod := "./lib/modules/" + fakeRelease + "/"
	return []tarEntry{
		{name: "./", typ: tar.TypeDir},
		{name: "./boot/", typ: tar.TypeDir},
		{name: "./boot/System.map-" + fakeRelease, typ: tar.TypeReg, data: []byte("ffffffff81000000 T _text\n")},
		{name: "./boot/config-" + fakeRelease, typ: tar.TypeReg, data: []byte("CONFIG_VIRTIO=m\n")},
		{name: "./boot/vmlinuz-" + fakeRelease, typ: tar.TypeReg, data: fakeBzImage(t)},
		{name: "./lib/", typ: tar.TypeDir},
		{name: mod, typ: tar.TypeDir},
		{name: mod + "kernel/drivers/virtio/", typ: tar.TypeDir},
		{name: mod + "kernel/drivers/virtio/virtio.ko", typ: tar.TypeReg, data: []byte("\x7fELF fake module")},
		{name: mod + "modules.builtin", typ: tar.TypeReg, data: []byte("kernel/fs/ext4/ext4.ko\n")},
		{name: mod + "build", typ: tar.TypeSymlink, linkname: "/usr/src/linux-headers-" + fakeRelease},
		{name: "./usr/share/doc/linux-image/changelog.gz", typ: tar.TypeReg, data: []byte("x")},
		{name: "./../../escape", typ: tar.TypeReg, data: []byte("nope")},
	}
}
