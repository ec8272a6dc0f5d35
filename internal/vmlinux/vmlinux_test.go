package vmlinux

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"

	"github.com/bangerdev/banger/internal/errkind"
)

// fakeELF returns n bytes that start like an ELF file and mix compressible
// text with random bytes, so every codec emits non-trivial output.
func fakeELF(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 0, n)
	b = append(b, "\x7fELF\x02\x01\x01"...)
	for len(b) < n {
		b = append(b, "Linux version 6.1.0-test (builder@banger) #1 SMP\x00"...)
		for range 64 {
			b = append(b, byte(r.IntN(256)))
		}
	}
	return b[:n]
}

// makeBzImage wraps payload in a minimal x86 boot image: setupSects setup
// sectors with a 2.15 header, then a protected-mode part with the payload at
// payloadOff.
func makeBzImage(payload []byte, setupSects byte, payloadOff int) []byte {
	sects := int(setupSects)
	if sects == 0 {
		sects = 4
	}
	pm := (sects + 1) * 512
	img := make([]byte, pm+payloadOff+len(payload)+256)
	img[offSetupSects] = setupSects
	copy(img[offHeaderMagic:], "HdrS")
	binary.LittleEndian.PutUint16(img[offVersion:], 0x020f)
	binary.LittleEndian.PutUint16(img[offKernelVersion:], 0x300)
	copy(img[0x500:], "6.1.0-test-amd64 (builder@banger) #1 SMP\x00")
	binary.LittleEndian.PutUint32(img[offPayloadOffset:], uint32(payloadOff))
	binary.LittleEndian.PutUint32(img[offPayloadLength:], uint32(len(payload)))
	copy(img[pm+payloadOff:], payload)
	return img
}

func sizeTrailer(b []byte, n int) []byte {
	return binary.LittleEndian.AppendUint32(b, uint32(n))
}

func gzipPayload(t *testing.T, raw []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func xzPayload(t *testing.T, raw []byte) []byte {
	var buf bytes.Buffer
	zw, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return sizeTrailer(buf.Bytes(), len(raw))
}

func zstdPayload(t *testing.T, raw []byte) []byte {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return sizeTrailer(enc.EncodeAll(raw, nil), len(raw))
}

// lz4LegacyPayload frames raw as the kernel build does (lz4 -l): legacy
// magic, then {u32 compressed length, block} per 8 MiB, then the size trailer.
func lz4LegacyPayload(t *testing.T, raw []byte) []byte {
	out := append([]byte(nil), lz4Legacy...)
	dst := make([]byte, lz4.CompressBlockBound(lz4LegacyBlock))
	for off := 0; off < len(raw); off += lz4LegacyBlock {
		chunk := raw[off:min(off+lz4LegacyBlock, len(raw))]
		var c lz4.Compressor
		n, err := c.CompressBlock(chunk, dst)
		if err != nil || n == 0 {
			t.Fatalf("lz4 compress: n=%d err=%v", n, err)
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(n))
		out = append(out, dst[:n]...)
	}
	return sizeTrailer(out, len(raw))
}

func TestExtractCodecs(t *testing.T) {
	small := fakeELF(300 << 10)
	big := fakeELF(lz4LegacyBlock + 123457) // two LZ4 legacy blocks
	cases := []struct {
		codec   string
		raw     []byte
		payload func(*testing.T, []byte) []byte
	}{
		{CodecGzip, small, gzipPayload},
		{CodecXZ, small, xzPayload},
		{CodecZstd, small, zstdPayload},
		{CodecLZ4, small, lz4LegacyPayload},
		{CodecLZ4, big, lz4LegacyPayload},
	}
	for _, tc := range cases {
		t.Run(tc.codec, func(t *testing.T) {
			for _, sects := range []byte{0, 27} {
				bz := makeBzImage(tc.payload(t, tc.raw), sects, 0x3c4)
				if !IsBzImage(bz) || IsELF(bz) {
					t.Fatal("synthetic image not recognised as a bzImage")
				}
				got, codec, err := Extract(bz)
				if err != nil {
					t.Fatalf("setup_sects=%d: %v", sects, err)
				}
				if codec != tc.codec {
					t.Errorf("codec = %q, want %q", codec, tc.codec)
				}
				if !bytes.Equal(got, tc.raw) {
					t.Fatalf("setup_sects=%d: output differs (%d bytes, want %d)", sects, len(got), len(tc.raw))
				}
				if !IsELF(got) {
					t.Fatal("output is not ELF")
				}
			}
		})
	}
}

func TestExtractLZ4CLI(t *testing.T) {
	if _, err := exec.LookPath("lz4"); err != nil {
		t.Skip("lz4 tool not installed")
	}
	raw := fakeELF(lz4LegacyBlock + 4096)
	dir := t.TempDir()
	in := filepath.Join(dir, "vmlinux.bin")
	if err := os.WriteFile(in, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	// The kernel's cmd_lz4: lz4 -l -c1 then the size trailer.
	comp, err := exec.Command("lz4", "-l", "-9", "-c", in).Output()
	if err != nil {
		t.Fatalf("lz4 -l: %v", err)
	}
	got, codec, err := Extract(makeBzImage(sizeTrailer(comp, len(raw)), 30, 0x52cc))
	if err != nil {
		t.Fatal(err)
	}
	if codec != CodecLZ4 || !bytes.Equal(got, raw) {
		t.Fatalf("codec %q, %d bytes; want lz4-legacy, identical %d bytes", codec, len(got), len(raw))
	}
}

func TestExtractRejects(t *testing.T) {
	elf := fakeELF(4096)
	notELF := append([]byte("MZ"), fakeELF(4096)[2:]...)
	truncated := makeBzImage(gzipPayload(t, elf), 4, 0)
	binary.LittleEndian.PutUint32(truncated[offPayloadLength:], uint32(len(truncated)))
	old := makeBzImage(gzipPayload(t, elf), 4, 0)
	binary.LittleEndian.PutUint16(old[offVersion:], 0x0204)
	badSize := zstdPayload(t, elf)
	binary.LittleEndian.PutUint32(badSize[len(badSize)-4:], 12)

	cases := map[string][]byte{
		"empty":           nil,
		"text file":       []byte("hello, this is not a kernel at all, just some text that is long enough" + string(make([]byte, 1024))),
		"elf input":       elf,
		"payload not elf": makeBzImage(gzipPayload(t, notELF), 4, 0),
		"unknown codec":   makeBzImage([]byte("BZh91AY&SY garbage payload"), 4, 0),
		"truncated":       truncated,
		"old protocol":    old,
		"corrupt lz4":     makeBzImage(append(append([]byte(nil), lz4Legacy...), 0x10, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0), 4, 0),
		"size mismatch":   makeBzImage(badSize, 4, 0),
	}
	for name, img := range cases {
		t.Run(name, func(t *testing.T) {
			_, _, err := Extract(img)
			if err == nil {
				t.Fatal("Extract succeeded on a non-kernel")
			}
			if !errors.Is(err, errkind.InvalidArgument) {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
		})
	}
}

func TestRelease(t *testing.T) {
	bz := makeBzImage(gzipPayload(t, fakeELF(1024)), 4, 0)
	if got := Release(bz); got != "6.1.0-test-amd64" {
		t.Errorf("Release(bzImage) = %q", got)
	}
	if got := Release(fakeELF(8192)); got != "6.1.0-test" {
		t.Errorf("Release(ELF) = %q", got)
	}
	if got := Release([]byte("nothing here")); got != "" {
		t.Errorf("Release(junk) = %q", got)
	}
}
