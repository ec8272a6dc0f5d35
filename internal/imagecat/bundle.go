package imagecat

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/fsatomic"
	"github.com/bangerdev/banger/internal/model"
)

// Files inside a bundle. manifest.json comes first so that a reader knows
// what it is extracting before the large rootfs arrives.
const (
	RootfsName   = "rootfs.ext4"
	ManifestName = "manifest.json"
	// ManifestVersion is the manifest format this code writes and reads.
	ManifestVersion = 1
	maxManifestSize = 1 << 20
)

// Manifest describes the image in a bundle.
type Manifest struct {
	Version   int               `json:"version"`
	Name      string            `json:"name"`
	Distro    string            `json:"distro"`
	Arch      string            `json:"arch"`
	KernelRef string            `json:"kernel_ref,omitempty"`
	Config    model.ImageConfig `json:"config"`
	// RootfsSize is the length of rootfs.ext4 in bytes.
	RootfsSize int64 `json:"rootfs_size"`
	// SourceRef says where the image came from (an OCI ref, a Dockerfile).
	SourceRef string    `json:"source_ref,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

func (m Manifest) validate() error {
	if m.Version != ManifestVersion {
		return errkind.New(errkind.InvalidArgument, "bundle manifest version %d, this banger reads %d", m.Version, ManifestVersion)
	}
	if err := model.ValidateImageName("bundle image", m.Name); err != nil {
		return err
	}
	if m.Arch != DefaultArch {
		return errkind.New(errkind.InvalidArgument, "bundle arch %q: banger runs %s guests only", m.Arch, DefaultArch)
	}
	return nil
}

// Pin is what a catalog entry promises about a bundle file.
type Pin struct {
	SHA256 string // hex digest of the whole .tar.zst file
	Size   int64  // its length; 0 for unknown
}

// BundleError classifies bundle verification failures: InvalidArgument.
func bundleErr(format string, args ...any) error {
	return errkind.New(errkind.InvalidArgument, "bundle: %s", fmt.Sprintf(format, args...))
}

// hashReader hashes and counts what is read through it, refusing to read
// past limit (when > 0) and stopping when ctx ends.
type hashReader struct {
	ctx   context.Context
	r     io.Reader
	h     hash.Hash
	n     int64
	limit int64
	// progress, when set, is told the running byte count.
	progress func(int64)
}

func (h *hashReader) Read(p []byte) (int, error) {
	if err := h.ctx.Err(); err != nil {
		return 0, err
	}
	if h.limit > 0 && int64(len(p)) > h.limit-h.n+1 {
		p = p[:h.limit-h.n+1]
	}
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	if h.limit > 0 && h.n > h.limit {
		return n, bundleErr("larger than its pinned size of %d bytes", h.limit)
	}
	if h.progress != nil && n > 0 {
		h.progress(h.n)
	}
	return n, err
}

// Extract reads a bundle stream and writes rootfs.ext4 and manifest.json
// into dir (which must exist). The stream is hashed as it is read and the
// result is accepted only when the whole stream matches pin; anything
// unexpected — an entry other than the two files, a path that climbs out,
// a non-regular file, a duplicate, a truncated or trailing-garbage stream —
// is refused. On error the files written are removed.
func Extract(ctx context.Context, r io.Reader, pin Pin, dir string) (m Manifest, err error) {
	if !hexRE.MatchString(pin.SHA256) {
		return m, errkind.New(errkind.InvalidArgument, "bundle pin %q is not a sha256 hex digest", pin.SHA256)
	}
	return extract(ctx, r, pin, dir, nil)
}

func extract(ctx context.Context, r io.Reader, pin Pin, dir string, progress func(int64)) (m Manifest, err error) {
	rootfsPath := filepath.Join(dir, RootfsName)
	manifestPath := filepath.Join(dir, ManifestName)
	defer func() {
		if err != nil {
			os.Remove(rootfsPath)
			os.Remove(manifestPath)
		}
	}()
	hr := &hashReader{ctx: ctx, r: r, h: sha256.New(), limit: pin.Size, progress: progress}
	zr, err := zstd.NewReader(hr, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(256<<20))
	if err != nil {
		return m, fmt.Errorf("reading bundle: %w", err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var haveManifest, haveRootfs bool
	var rootfsSize int64
	corrupt := func(err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errkind.Of(err) != nil {
			return err
		}
		return errkind.Wrap(errkind.InvalidArgument, err, "bundle truncated or corrupt")
	}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return m, corrupt(err)
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		switch {
		case strings.HasPrefix(hdr.Name, "/") || name == ".." || strings.HasPrefix(name, "../") || strings.Contains(name, "/../") || strings.HasSuffix(name, "/.."):
			return m, bundleErr("entry %q leaves the bundle (path traversal)", hdr.Name)
		case name != RootfsName && name != ManifestName:
			return m, bundleErr("unexpected entry %q (a bundle holds exactly %s and %s)", hdr.Name, RootfsName, ManifestName)
		case hdr.Typeflag != tar.TypeReg:
			return m, bundleErr("entry %q is not a regular file", hdr.Name)
		case (name == RootfsName && haveRootfs) || (name == ManifestName && haveManifest):
			return m, bundleErr("entry %q appears twice", hdr.Name)
		}
		if name == ManifestName {
			if hdr.Size > maxManifestSize {
				return m, bundleErr("manifest of %d bytes is too large", hdr.Size)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				return m, corrupt(err)
			}
			dec := json.NewDecoder(bytes.NewReader(b))
			if err := dec.Decode(&m); err != nil {
				return m, bundleErr("manifest: %v", err)
			}
			if err := m.validate(); err != nil {
				return m, err
			}
			if err := fsatomic.WriteFile(manifestPath, b, 0o644); err != nil {
				return m, fmt.Errorf("writing %s: %w", manifestPath, err)
			}
			haveManifest = true
			continue
		}
		f, err := os.OpenFile(rootfsPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return m, fmt.Errorf("creating %s: %w", rootfsPath, err)
		}
		n, err := SparseCopy(f, tr, hdr.Size)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return m, corrupt(err)
		}
		rootfsSize = n
		haveRootfs = true
	}
	if !haveManifest || !haveRootfs {
		return m, bundleErr("incomplete: %s present %v, %s present %v", ManifestName, haveManifest, RootfsName, haveRootfs)
	}
	if m.RootfsSize != 0 && m.RootfsSize != rootfsSize {
		return m, bundleErr("rootfs is %d bytes, the manifest says %d", rootfsSize, m.RootfsSize)
	}
	// Whatever follows the archive (padding) must still decompress cleanly
	// and is part of the pinned bytes.
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return m, corrupt(err)
	}
	if _, err := io.Copy(io.Discard, hr); err != nil {
		return m, corrupt(err)
	}
	if pin.Size > 0 && hr.n != pin.Size {
		return m, bundleErr("truncated: %d bytes of %d", hr.n, pin.Size)
	}
	if got := hex.EncodeToString(hr.h.Sum(nil)); got != pin.SHA256 {
		return m, bundleErr("sha256 mismatch: got %s, the catalog pins %s", got, pin.SHA256)
	}
	return m, nil
}

// SparseCopy replaces f's content with n bytes from r, leaving holes for
// all-zero 4 KiB blocks instead of writing them. It returns the bytes
// consumed from r.
func SparseCopy(f *os.File, r io.Reader, n int64) (int64, error) {
	const block = 4096
	if err := f.Truncate(0); err != nil {
		return 0, err
	}
	buf := make([]byte, 1<<20)
	var off int64
	for off < n {
		want := int64(len(buf))
		if rest := n - off; rest < want {
			want = rest
		}
		got, err := io.ReadFull(r, buf[:want])
		if got > 0 {
			if werr := writeNonZero(f, buf[:got], off, block); werr != nil {
				return off, werr
			}
			off += int64(got)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return off, err
		}
	}
	if err := f.Truncate(n); err != nil {
		return off, err
	}
	return off, nil
}

// writeNonZero writes the runs of non-zero blocks of p at off.
func writeNonZero(f *os.File, p []byte, off int64, block int) error {
	start := -1
	for i := 0; i < len(p); i += block {
		end := min(i+block, len(p))
		zero := isZero(p[i:end])
		switch {
		case !zero && start < 0:
			start = i
		case zero && start >= 0:
			if _, err := f.WriteAt(p[start:i], off+int64(start)); err != nil {
				return err
			}
			start = -1
		}
	}
	if start >= 0 {
		if _, err := f.WriteAt(p[start:], off+int64(start)); err != nil {
			return err
		}
	}
	return nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// BundleInfo describes a bundle Bundle wrote.
type BundleInfo struct {
	// Path is the bundle file; its base name is content-addressed.
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	// Entry is the catalog entry that pins it (Bundle is the file name).
	Entry Image `json:"entry"`
}

// Bundle writes the bundle of an image (its rootfs file and manifest)
// into outDir as <name>-<arch>-<sha256 prefix>.tar.zst and returns the
// catalog entry that pins it. The manifest's RootfsSize is filled in.
func Bundle(ctx context.Context, rootfs string, m Manifest, outDir string) (BundleInfo, error) {
	if m.Version == 0 {
		m.Version = ManifestVersion
	}
	if m.Arch == "" {
		m.Arch = DefaultArch
	}
	if m.CreatedAt.IsZero() {
		m.CreatedAt = time.Now().UTC()
	}
	if err := m.validate(); err != nil {
		return BundleInfo{}, err
	}
	in, err := os.Open(rootfs)
	if err != nil {
		return BundleInfo{}, fmt.Errorf("bundling %s: %w", m.Name, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return BundleInfo{}, fmt.Errorf("bundling %s: %w", m.Name, err)
	}
	m.RootfsSize = fi.Size()
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return BundleInfo{}, err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return BundleInfo{}, fmt.Errorf("creating %s: %w", outDir, err)
	}
	tmp, err := os.CreateTemp(outDir, ".bundle-"+m.Name+"-*"+fsatomic.StagingSuffix)
	if err != nil {
		return BundleInfo{}, fmt.Errorf("bundling %s: %w", m.Name, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(tmp, h)}
	zw, err := zstd.NewWriter(cw, zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
	if err != nil {
		return BundleInfo{}, err
	}
	tw := tar.NewWriter(zw)
	mtime := m.CreatedAt.Truncate(time.Second)
	if err := tw.WriteHeader(&tar.Header{Name: ManifestName, Mode: 0o644, Size: int64(len(mb)), ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return BundleInfo{}, err
	}
	if _, err := tw.Write(mb); err != nil {
		return BundleInfo{}, err
	}
	if err := tw.WriteHeader(&tar.Header{Name: RootfsName, Mode: 0o644, Size: m.RootfsSize, ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return BundleInfo{}, err
	}
	if _, err := io.CopyBuffer(tw, io.LimitReader(newHoleReader(ctx, in, m.RootfsSize), m.RootfsSize), make([]byte, 1<<20)); err != nil {
		return BundleInfo{}, fmt.Errorf("bundling %s: reading rootfs: %w", m.Name, err)
	}
	if err := tw.Close(); err != nil {
		return BundleInfo{}, err
	}
	if err := zw.Close(); err != nil {
		return BundleInfo{}, err
	}
	if err := tmp.Sync(); err != nil {
		return BundleInfo{}, err
	}
	if err := tmp.Close(); err != nil {
		return BundleInfo{}, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	file := BundleName(m.Name, m.Arch, sum)
	final := filepath.Join(outDir, file)
	if err := os.Rename(tmp.Name(), final); err != nil {
		return BundleInfo{}, fmt.Errorf("bundling %s: %w", m.Name, err)
	}
	done = true
	_ = fsatomic.SyncDir(outDir)
	return BundleInfo{
		Path: final, SHA256: sum, Size: cw.n,
		Entry: Image{Name: m.Name, Distro: m.Distro, Arch: m.Arch, KernelRef: m.KernelRef,
			Bundle: file, SHA256: sum, Size: cw.n},
	}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
