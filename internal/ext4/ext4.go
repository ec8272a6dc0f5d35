// Package ext4 builds ext4 filesystem images from tar streams, in process,
// without root and without extracting a tree on the host.
//
// The writer is hcsshim's pure-Go tar2ext4 (imported as a module). It lays
// the files out sequentially and produces a compact ext4 that carries the
// read-only ro_compat feature, with exactly as many inodes as entries. That
// is what a shared read-only base wants. When Options.Size is set the image is
// then grown in place with e2fsprogs (tune2fs + resize2fs, ~30 ms) so that it
// can be mounted writable.
//
// The tar stream must be flattened (each path once, topmost metadata; see
// imagepull.Flatten): a regular file cannot be written twice and a hardlink
// target must precede its links. Repeated directory entries update the
// directory's metadata, which lets a producer emit placeholder parents.
// Owners, modes (setuid/setgid/sticky), symlinks, hardlinks, device nodes,
// FIFOs and every SCHILY.xattr.* PAX record (user.*, security.capability, …)
// are preserved.
package ext4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"

	"github.com/Microsoft/hcsshim/ext4/tar2ext4"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/lookpath"
)

const (
	blockSize = 4096
	// defaultMaxSize bounds the content of an image (tar2ext4 reserves
	// group descriptors for it up front: 16 blocks for 256 GiB, released
	// when unused; its own default of 16 GiB is too small for big images).
	defaultMaxSize = 256 << 30
)

// Options controls the image that FromTar writes.
type Options struct {
	// Size, when > 0, grows the image to Size bytes (rounded up to 4 KiB) and
	// clears the read-only feature so it can be mounted read-write. Zero keeps
	// the compact read-only image, sized to its content.
	Size int64
	// Journal adds an ext4 journal (only with Size > 0).
	Journal bool
	// Label sets the volume label (at most 16 bytes).
	Label string
	// NoSync skips the final fsync of the image (tests and benchmarks of the
	// pure CPU path only).
	NoSync bool
}

// Info describes a written image.
type Info struct {
	// Bytes is the image file's length.
	Bytes int64
	// ReadOnly reports whether the image still carries the read-only feature.
	ReadOnly bool
}

// FromTar writes an ext4 image at path from the tar stream r. path is
// created or truncated; on error it is removed. On success the reader is
// drained to EOF (the end-of-archive padding); on failure it is not, and a
// caller feeding it through a pipe must close the pipe to stop its producer.
func FromTar(ctx context.Context, r io.Reader, path string, opts Options) (info Info, err error) {
	if opts.Size < 0 {
		return Info{}, errkind.New(errkind.InvalidArgument, "ext4 image size %d is negative", opts.Size)
	}
	if len(opts.Label) > 16 {
		return Info{}, errkind.New(errkind.InvalidArgument, "ext4 label %q is longer than 16 bytes", opts.Label)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return Info{}, fmt.Errorf("creating ext4 image: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("closing ext4 image %s: %w", path, cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()

	maxSize := int64(defaultMaxSize)
	if opts.Size > maxSize {
		maxSize = opts.Size
	}
	cr := &ctxReader{ctx: ctx, r: r}
	err = tar2ext4.ConvertTarToExt4(cr, f, tar2ext4.MaximumDiskSize(maxSize))
	if err == nil {
		// Unblock a producer still writing the end-of-archive padding.
		_, err = io.Copy(io.Discard, cr)
	}
	if err != nil {
		if ctx.Err() != nil {
			return Info{}, fmt.Errorf("writing ext4 image %s: %w", path, ctx.Err())
		}
		return Info{}, fmt.Errorf("writing ext4 image %s: %w", path, err)
	}
	info.ReadOnly = true
	if err := padInodeBitmaps(f, f); err != nil {
		return Info{}, fmt.Errorf("finishing ext4 image %s: %w", path, err)
	}

	if opts.Label != "" {
		if err := run(ctx, "tune2fs", "-L", opts.Label, path); err != nil {
			return Info{}, err
		}
	}
	if opts.Size > 0 {
		if err := grow(ctx, f, path, opts.Size, opts.Journal); err != nil {
			return Info{}, err
		}
		info.ReadOnly = false
	}
	if !opts.NoSync {
		if err := f.Sync(); err != nil {
			return Info{}, fmt.Errorf("syncing ext4 image %s: %w", path, err)
		}
	}
	st, err := f.Stat()
	if err != nil {
		return Info{}, fmt.Errorf("stat ext4 image %s: %w", path, err)
	}
	info.Bytes = st.Size()
	return info, nil
}

// Grow turns an image written by FromTar into a writable filesystem of size
// bytes (rounded up to 4 KiB), optionally with a journal, and fsyncs it.
// The inode count grows with the block groups added, in proportion to the
// compact image's inode density.
func Grow(ctx context.Context, path string, size int64, journal bool) error {
	if size <= 0 {
		return errkind.New(errkind.InvalidArgument, "ext4 image size %d must be positive", size)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening ext4 image: %w", err)
	}
	defer f.Close()
	if err := grow(ctx, f, path, size, journal); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing ext4 image %s: %w", path, err)
	}
	return f.Close()
}

func grow(ctx context.Context, f *os.File, path string, want int64, journal bool) error {
	size := (want + blockSize - 1) &^ (blockSize - 1)
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat ext4 image %s: %w", path, err)
	}
	if size < st.Size() {
		return errkind.New(errkind.InvalidArgument, "requested image size %d bytes is smaller than the content (%d bytes)", want, st.Size())
	}
	if err := run(ctx, "tune2fs", "-O", "^read-only", path); err != nil {
		return err
	}
	if size > st.Size() {
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("extending ext4 image %s: %w", path, err)
		}
		if err := run(ctx, "resize2fs", "-f", path); err != nil {
			return err
		}
	}
	if journal {
		if err := run(ctx, "tune2fs", "-O", "has_journal", path); err != nil {
			return err
		}
	}
	return nil
}

// run executes an e2fsprogs tool, looking in the sbin directories too.
func run(ctx context.Context, tool string, args ...string) error {
	bin, err := Tool(tool)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("running %s %v: %w: %s", tool, args, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// Tool returns the path of an e2fsprogs binary (tune2fs, resize2fs, e2fsck,
// debugfs, mke2fs), searching $PATH and then /usr/sbin and /sbin, which are
// often missing from a non-root $PATH.
func Tool(name string) (string, error) {
	p, err := lookpath.Find(name)
	if err != nil {
		return "", errkind.WithHint(errkind.New(errkind.Unavailable, "%s not found", name), "install e2fsprogs")
	}
	return p, nil
}

// ctxReader fails reads once ctx is done, so a long conversion stops promptly.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Check runs `e2fsck -fn` on an image and returns its output on failure.
func Check(ctx context.Context, path string) error {
	bin, err := Tool("e2fsck")
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, bin, "-fn", path).CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("e2fsck -fn %s: exit %s: %s", path, strconv.Itoa(ee.ExitCode()), bytes.TrimSpace(out))
		}
		return fmt.Errorf("e2fsck -fn %s: %w", path, err)
	}
	return nil
}
