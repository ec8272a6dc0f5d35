// Package vmlinux turns an x86 bzImage into the uncompressed ELF vmlinux
// that Firecracker (and QEMU's PVH loader) boot.
//
// A bzImage is a real-mode setup block followed by a protected-mode part
// whose embedded payload is the compressed vmlinux. The setup header gives
// the payload's offset and length; the codec is told by its magic number.
// Supported codecs: gzip, xz, zstd and LZ4 legacy frames (what Debian's
// cloud 6.1 kernels use).
package vmlinux

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"

	"github.com/bangerdev/banger/internal/errkind"
)

// Codec names returned by Extract.
const (
	CodecGzip = "gzip"
	CodecXZ   = "xz"
	CodecZstd = "zstd"
	CodecLZ4  = "lz4-legacy"
)

// Offsets in the x86 boot protocol setup header (Documentation/arch/x86/boot.rst).
const (
	offSetupSects    = 0x1f1
	offHeaderMagic   = 0x202
	offVersion       = 0x206
	offKernelVersion = 0x20e
	offPayloadOffset = 0x248
	offPayloadLength = 0x24c
	minHeaderLen     = 0x250
	minBootProtocol  = 0x208 // first version with payload_offset/length
)

var (
	elfMagic  = []byte("\x7fELF")
	gzipMagic = []byte{0x1f, 0x8b}
	xzMagic   = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
	lz4Legacy = []byte{0x02, 0x21, 0x4c, 0x18}
)

// IsELF reports whether b starts with the ELF magic.
func IsELF(b []byte) bool { return bytes.HasPrefix(b, elfMagic) }

// IsBzImage reports whether b carries an x86 setup header ("HdrS").
func IsBzImage(b []byte) bool {
	return len(b) >= minHeaderLen && string(b[offHeaderMagic:offHeaderMagic+4]) == "HdrS"
}

// Header is what Extract learns from the setup header.
type Header struct {
	BootProtocol  uint16 // e.g. 0x020f for 2.15
	PayloadOffset int    // offset of the compressed payload in the file
	PayloadLength int
	Codec         string
}

// ParseHeader locates the compressed payload in bz and identifies its codec.
// It returns an errkind.InvalidArgument error when bz is not a bzImage this
// package can handle.
func ParseHeader(bz []byte) (Header, error) {
	if !IsBzImage(bz) {
		return Header{}, errkind.New(errkind.InvalidArgument, "not a bzImage kernel (no HdrS setup header)")
	}
	h := Header{BootProtocol: binary.LittleEndian.Uint16(bz[offVersion:])}
	if h.BootProtocol < minBootProtocol {
		return Header{}, errkind.New(errkind.InvalidArgument, "bzImage boot protocol %d.%02d is too old (need 2.08+)",
			h.BootProtocol>>8, h.BootProtocol&0xff)
	}
	setupSects := int(bz[offSetupSects])
	if setupSects == 0 {
		setupSects = 4
	}
	h.PayloadOffset = (setupSects+1)*512 + int(binary.LittleEndian.Uint32(bz[offPayloadOffset:]))
	h.PayloadLength = int(binary.LittleEndian.Uint32(bz[offPayloadLength:]))
	if h.PayloadLength == 0 || h.PayloadOffset < 0 || h.PayloadOffset+h.PayloadLength > len(bz) {
		return Header{}, errkind.New(errkind.InvalidArgument,
			"bzImage payload (offset %#x, length %d) lies outside the %d-byte file", h.PayloadOffset, h.PayloadLength, len(bz))
	}
	h.Codec = detect(bz[h.PayloadOffset : h.PayloadOffset+h.PayloadLength])
	if h.Codec == "" {
		return Header{}, errkind.New(errkind.InvalidArgument, "bzImage payload codec not supported (magic % x)",
			bz[h.PayloadOffset:min(h.PayloadOffset+6, len(bz))])
	}
	return h, nil
}

func detect(p []byte) string {
	switch {
	case bytes.HasPrefix(p, gzipMagic):
		return CodecGzip
	case bytes.HasPrefix(p, xzMagic):
		return CodecXZ
	case bytes.HasPrefix(p, zstdMagic):
		return CodecZstd
	case bytes.HasPrefix(p, lz4Legacy):
		return CodecLZ4
	}
	return ""
}

// Extract decompresses the vmlinux ELF embedded in bz and returns it with
// the codec name.
func Extract(bz []byte) (elf []byte, codec string, err error) {
	var buf bytes.Buffer
	codec, _, err = WriteTo(&buf, bz)
	if err != nil {
		return nil, codec, err
	}
	return buf.Bytes(), codec, nil
}

// WriteTo decompresses the vmlinux ELF embedded in bz into w and returns the
// codec and the number of bytes written. The output is checked to start with
// the ELF magic; on error w may hold partial output.
func WriteTo(w io.Writer, bz []byte) (codec string, n int64, err error) {
	h, err := ParseHeader(bz)
	if err != nil {
		return "", 0, err
	}
	payload := bz[h.PayloadOffset : h.PayloadOffset+h.PayloadLength]
	cw := &checkWriter{w: w}
	if err := decompress(cw, h.Codec, payload); err != nil {
		if errors.Is(err, errNotELF) {
			return h.Codec, cw.n, errkind.New(errkind.InvalidArgument, "bzImage payload does not decompress to an ELF vmlinux")
		}
		return h.Codec, cw.n, errkind.Wrap(errkind.InvalidArgument, err, "decompressing %s bzImage payload", h.Codec)
	}
	if cw.n < int64(len(elfMagic)) {
		return h.Codec, cw.n, errkind.New(errkind.InvalidArgument, "bzImage payload decompresses to only %d bytes", cw.n)
	}
	return h.Codec, cw.n, nil
}

// decompress writes the decoded payload to w. For xz, zstd and LZ4 the
// kernel build appends the uncompressed size as a 32-bit little-endian
// trailer; it is stripped before decoding and checked afterwards.
func decompress(w *checkWriter, codec string, p []byte) error {
	if codec == CodecGzip {
		zr, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			return err
		}
		zr.Multistream(false)
		_, err = io.Copy(w, zr)
		return err
	}
	body, want := p, int64(-1)
	if len(p) > 4 {
		body = p[:len(p)-4]
		want = int64(binary.LittleEndian.Uint32(p[len(p)-4:]))
	}
	var err error
	switch codec {
	case CodecXZ:
		err = unxz(w, body)
	case CodecZstd:
		err = unzstd(w, body)
	case CodecLZ4:
		err = unlz4Legacy(w, p)
	default:
		err = fmt.Errorf("unknown codec %q", codec)
	}
	if err != nil {
		return err
	}
	if want >= 0 && w.n != want {
		return fmt.Errorf("decompressed %d bytes, but the size trailer says %d", w.n, want)
	}
	return nil
}

func unxz(w io.Writer, body []byte) error {
	xr, err := xz.ReaderConfig{SingleStream: true}.NewReader(bytes.NewReader(body))
	if err != nil {
		return err
	}
	_, err = io.Copy(w, xr)
	return err
}

func unzstd(w io.Writer, body []byte) error {
	zr, err := zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return err
	}
	defer zr.Close()
	_, err = io.Copy(w, zr)
	return err
}

// lz4LegacyBlock is the fixed uncompressed size of every block but the last
// in an LZ4 legacy frame.
const lz4LegacyBlock = 8 << 20

// unlz4Legacy decodes an LZ4 legacy frame: the magic, then repeated
// {u32 LE compressed length, block}. A repeated magic starts a concatenated
// frame. Decoding stops when a length would run past the end of p: that is
// the kernel's 4-byte size trailer (or the end of the data).
func unlz4Legacy(w io.Writer, p []byte) error {
	if !bytes.HasPrefix(p, lz4Legacy) {
		return errors.New("missing lz4 legacy magic")
	}
	dst := make([]byte, lz4LegacyBlock)
	pos := len(lz4Legacy)
	for pos+4 <= len(p) {
		if bytes.Equal(p[pos:pos+4], lz4Legacy) {
			pos += 4
			continue
		}
		size := int(binary.LittleEndian.Uint32(p[pos:]))
		if size == 0 || pos+4+size > len(p) {
			break
		}
		pos += 4
		n, err := lz4.UncompressBlock(p[pos:pos+size], dst)
		if err != nil {
			return fmt.Errorf("lz4 block at %#x: %w", pos, err)
		}
		if _, err := w.Write(dst[:n]); err != nil {
			return err
		}
		pos += size
	}
	return nil
}

var errNotELF = errors.New("output is not an ELF file")

// checkWriter counts bytes and fails as soon as the output is known not to
// start with the ELF magic.
type checkWriter struct {
	w    io.Writer
	n    int64
	head []byte
}

func (c *checkWriter) Write(b []byte) (int, error) {
	if len(c.head) < len(elfMagic) {
		need := len(elfMagic) - len(c.head)
		c.head = append(c.head, b[:min(need, len(b))]...)
		if !bytes.HasPrefix(elfMagic, c.head) {
			return 0, errNotELF
		}
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// Release returns the kernel release (e.g. "6.1.0-56-cloud-amd64") found in
// a bzImage's kernel_version string or in the "Linux version ..." banner of
// an ELF vmlinux, or "" when none is found.
func Release(img []byte) string {
	if IsBzImage(img) {
		if off := int(binary.LittleEndian.Uint16(img[offKernelVersion:])); off != 0 && off+0x200 < len(img) {
			s := img[off+0x200:]
			if i := bytes.IndexAny(s, " \x00"); i > 0 {
				return string(s[:i])
			}
		}
		return ""
	}
	const banner = "Linux version "
	i := bytes.Index(img, []byte(banner))
	for i >= 0 {
		s := img[i+len(banner):]
		if j := bytes.IndexByte(s, ' '); j > 0 && j < 128 && printable(s[:j]) {
			return string(s[:j])
		}
		next := bytes.Index(img[i+1:], []byte(banner))
		if next < 0 {
			break
		}
		i += 1 + next
	}
	return ""
}

func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}
