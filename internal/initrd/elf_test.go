package initrd

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// fakeModule returns a minimal ELF64 relocatable object with a .modinfo
// section holding name=, depends= and vermagic=, which is all the builder
// reads from a real module. Sections: null, .modinfo, .text, .shstrtab.
func fakeModule(name string, deps ...string) []byte {
	modinfo := []byte("license=GPL\x00depends=" + strings.Join(deps, ",") + "\x00name=" + name +
		"\x00vermagic=6.1.0-test SMP mod_unload \x00")
	text := []byte{0xc3} // ret
	shstr := []byte("\x00.modinfo\x00.text\x00.shstrtab\x00")

	const ehsize, shentsize = 64, 64
	le := binary.LittleEndian
	var b bytes.Buffer
	b.Write(make([]byte, ehsize))
	offModinfo := b.Len()
	b.Write(modinfo)
	offText := b.Len()
	b.Write(text)
	offShstr := b.Len()
	b.Write(shstr)
	for b.Len()%8 != 0 {
		b.WriteByte(0)
	}
	shoff := b.Len()
	section := func(name, typ uint32, flags uint64, off, size int, align uint64) {
		var s [shentsize]byte
		le.PutUint32(s[0:], name)
		le.PutUint32(s[4:], typ)
		le.PutUint64(s[8:], flags)
		le.PutUint64(s[24:], uint64(off))
		le.PutUint64(s[32:], uint64(size))
		le.PutUint64(s[48:], align)
		b.Write(s[:])
	}
	section(0, 0, 0, 0, 0, 0)
	section(1, 1, 2, offModinfo, len(modinfo), 1) // .modinfo PROGBITS ALLOC
	section(10, 1, 6, offText, len(text), 16)     // .text PROGBITS ALLOC|EXEC
	section(16, 3, 0, offShstr, len(shstr), 1)    // .shstrtab STRTAB
	out := b.Bytes()
	copy(out, "\x7fELF\x02\x01\x01") // 64-bit, little-endian, version 1
	le.PutUint16(out[16:], 1)        // ET_REL
	le.PutUint16(out[18:], 62)       // EM_X86_64
	le.PutUint32(out[20:], 1)
	le.PutUint64(out[40:], uint64(shoff))
	le.PutUint16(out[52:], ehsize)
	le.PutUint16(out[58:], shentsize)
	le.PutUint16(out[60:], 4) // shnum
	le.PutUint16(out[62:], 3) // shstrndx
	return out
}

// writeModule stores data under dir/rel, compressed according to rel's suffix.
func writeModule(t *testing.T, dir, rel string, data []byte) {
	t.Helper()
	var buf bytes.Buffer
	switch {
	case strings.HasSuffix(rel, ".xz"):
		w, err := xz.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	case strings.HasSuffix(rel, ".zst"):
		w, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	case strings.HasSuffix(rel, ".gz"):
		w := gzip.NewWriter(&buf)
		w.Write(data)
		w.Close()
	default:
		buf.Write(data)
	}
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFakeModuleModinfo(t *testing.T) {
	mi, err := ReadModinfo(fakeModule("net_failover", "failover", "virtio-ring"))
	if err != nil {
		t.Fatal(err)
	}
	if mi.Name != "net_failover" || strings.Join(mi.Depends, ",") != "failover,virtio_ring" || mi.Vermagic != "6.1.0-test SMP mod_unload" {
		t.Fatalf("modinfo = %+v", mi)
	}
	mi, err = ReadModinfo(fakeModule("overlay"))
	if err != nil || len(mi.Depends) != 0 {
		t.Fatalf("modinfo = %+v, %v", mi, err)
	}
	if _, err := ReadModinfo([]byte("not an elf")); err == nil {
		t.Fatal("junk accepted as a module")
	}
}
