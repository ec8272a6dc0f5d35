package kernel

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/bangerdev/banger/internal/errkind"
)

// A .deb is an ar archive holding debian-binary, control.tar.* and
// data.tar.*; the files the package installs are in data.tar.

const (
	arMagic     = "!<arch>\n"
	arHeaderLen = 60
)

// debData returns a reader over the uncompressed data.tar of the .deb read
// from r, and a function to release what it opened.
func debData(ctx context.Context, r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 1<<20)
	magic := make([]byte, len(arMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != arMagic {
		return nil, nil, errkind.New(errkind.InvalidArgument, "not a Debian package (no ar archive header)")
	}
	for {
		var hdr [arHeaderLen]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if err == io.EOF {
				return nil, nil, errkind.New(errkind.InvalidArgument, "Debian package has no data.tar member")
			}
			return nil, nil, errkind.Wrap(errkind.InvalidArgument, err, "reading Debian package member header")
		}
		if string(hdr[58:60]) != "`\n" {
			return nil, nil, errkind.New(errkind.InvalidArgument, "corrupt ar member header in Debian package")
		}
		name := strings.TrimSuffix(strings.TrimSpace(string(hdr[0:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 {
			return nil, nil, errkind.New(errkind.InvalidArgument, "corrupt ar member size %q", hdr[48:58])
		}
		if strings.HasPrefix(name, "data.tar") {
			return decompressTar(ctx, name, io.LimitReader(br, size))
		}
		if _, err := io.CopyN(io.Discard, br, size+size%2); err != nil {
			return nil, nil, errkind.Wrap(errkind.InvalidArgument, err, "skipping %s in Debian package", name)
		}
	}
}

// decompressTar undoes the compression named by the member's suffix. For
// xz, an installed xz tool is used when present (several times faster than
// the pure-Go decoder); otherwise the pure-Go decoder.
func decompressTar(ctx context.Context, name string, r io.Reader) (io.Reader, func(), error) {
	noop := func() {}
	switch path.Ext(name) {
	case ".tar":
		return r, noop, nil
	case ".gz":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, errkind.Wrap(errkind.InvalidArgument, err, "reading %s", name)
		}
		return zr, noop, nil
	case ".bz2":
		return bzip2.NewReader(r), noop, nil
	case ".zst":
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, nil, errkind.Wrap(errkind.InvalidArgument, err, "reading %s", name)
		}
		return zr, zr.Close, nil
	case ".xz":
		if xzPath, err := exec.LookPath("xz"); err == nil {
			return externalDecoder(ctx, xzPath, r)
		}
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, nil, errkind.Wrap(errkind.InvalidArgument, err, "reading %s", name)
		}
		return xr, noop, nil
	}
	return nil, nil, errkind.New(errkind.InvalidArgument, "unsupported Debian package member %s", name)
}

// externalDecoder pipes r through `tool -dc`.
func externalDecoder(ctx context.Context, tool string, r io.Reader) (io.Reader, func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, tool, "-dc")
	cmd.Stdin = r
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, nil, fmt.Errorf("starting %s: %w", tool, err)
	}
	release := func() {
		cancel()
		out.Close()
		cmd.Wait()
	}
	return &decoderReader{r: out, cmd: cmd, stderr: &stderr}, release, nil
}

// decoderReader reports the decoder's failure when its output ends early.
type decoderReader struct {
	r      io.Reader
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	waited bool
}

func (d *decoderReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err == io.EOF && !d.waited {
		d.waited = true
		if werr := d.cmd.Wait(); werr != nil {
			return n, errkind.Wrap(errkind.InvalidArgument, werr, "decompressing Debian package data: %s", strings.TrimSpace(d.stderr.String()))
		}
	}
	return n, err
}

// debContents is what a kernel package yields.
type debContents struct {
	vmlinuz string // path of the extracted bzImage
	config  string // path of boot/config-*, if any
	release string // kernel release from the boot/vmlinuz-<release> name
	modules string // extracted lib/modules/<release>, if any
}

// extractDeb unpacks boot/vmlinuz-*, boot/config-* and lib/modules/<release>
// (or usr/lib/modules/<release>) from the .deb at debPath into dir.
func extractDeb(ctx context.Context, debPath, dir string) (debContents, error) {
	f, err := os.Open(debPath)
	if err != nil {
		if os.IsNotExist(err) {
			return debContents{}, errkind.New(errkind.NotFound, "package %s not found", debPath)
		}
		return debContents{}, err
	}
	defer f.Close()
	data, release, err := debData(ctx, f)
	if err != nil {
		return debContents{}, err
	}
	defer release()

	var c debContents
	modRoot := filepath.Join(dir, "lib-modules")
	tr := tar.NewReader(data)
	for {
		if err := ctx.Err(); err != nil {
			return debContents{}, err
		}
		h, err := tr.Next()
		if err == io.EOF {
			// Read to the end so the decompressor checks its trailer.
			if _, err := io.Copy(io.Discard, data); err != nil {
				return debContents{}, errkind.Wrap(errkind.InvalidArgument, err, "reading Debian package data")
			}
			break
		}
		if err != nil {
			return debContents{}, errkind.Wrap(errkind.InvalidArgument, err, "reading Debian package data")
		}
		name := path.Clean("/" + h.Name)[1:] // drops "./", rejects escapes
		switch {
		case strings.HasPrefix(name, "boot/vmlinuz-") && h.Typeflag == tar.TypeReg:
			if c.vmlinuz != "" {
				return debContents{}, errkind.New(errkind.InvalidArgument, "package holds more than one kernel (%s and %s)", path.Base(c.vmlinuz), name)
			}
			c.release = strings.TrimPrefix(name, "boot/vmlinuz-")
			c.vmlinuz = filepath.Join(dir, "vmlinuz")
			if err := writeFileFrom(c.vmlinuz, 0o644, tr); err != nil {
				return debContents{}, err
			}
		case strings.HasPrefix(name, "boot/config-") && h.Typeflag == tar.TypeReg:
			c.config = filepath.Join(dir, "config")
			if err := writeFileFrom(c.config, 0o644, tr); err != nil {
				return debContents{}, err
			}
		default:
			rel, ok := modulesRel(name)
			if !ok || rel == "" {
				continue
			}
			dst := filepath.Join(modRoot, filepath.FromSlash(rel))
			switch h.Typeflag {
			case tar.TypeDir:
				if err := os.MkdirAll(dst, 0o755); err != nil {
					return debContents{}, err
				}
			case tar.TypeReg:
				if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
					return debContents{}, err
				}
				if err := writeFileFrom(dst, 0o644, tr); err != nil {
					return debContents{}, err
				}
			}
			// Symlinks (build/, source/) and other types are not needed.
		}
	}
	if c.vmlinuz == "" {
		return debContents{}, errkind.New(errkind.InvalidArgument, "package %s holds no boot/vmlinuz-* kernel", filepath.Base(debPath))
	}
	if fi, err := os.Stat(filepath.Join(modRoot, c.release)); err == nil && fi.IsDir() {
		c.modules = filepath.Join(modRoot, c.release)
	}
	return c, nil
}

// modulesRel returns the path below lib/modules/ (or usr/lib/modules/).
func modulesRel(name string) (string, bool) {
	for _, p := range []string{"lib/modules/", "usr/lib/modules/"} {
		if rel, ok := strings.CutPrefix(name, p); ok {
			return rel, true
		}
	}
	return "", false
}

func writeFileFrom(p string, mode os.FileMode, r io.Reader) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return f.Close()
}
