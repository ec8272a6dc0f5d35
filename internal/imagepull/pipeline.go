package imagepull

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/bangerdev/banger/internal/ext4"
)

// MinImageSize is the floor of the default image size.
const MinImageSize = 1 << 30

// DefaultSize is the image size used when none is given:
// max(1.25 × estimated tree size, 1 GiB), rounded up to 1 MiB.
func DefaultSize(estimated int64) int64 {
	s := estimated + estimated/4
	if s < MinImageSize {
		s = MinImageSize
	}
	return (s + (1<<20 - 1)) &^ (1<<20 - 1)
}

// Ext4Options configures PullToExt4.
type Ext4Options struct {
	Options
	// Size is the image size in bytes; 0 applies DefaultSize to the
	// flattened tree. Ignored with Compact.
	Size int64
	// Compact keeps the compact read-only image (sized to its content, no
	// free space); right for a shared read-only base.
	Compact bool
	// Journal adds an ext4 journal to a grown image.
	Journal bool
	// Label sets the ext4 volume label (at most 16 bytes).
	Label string
	// NoSync skips the final fsync (benchmarks of the CPU path only).
	NoSync bool
	// Workers bounds the layers decompressed ahead of the flattener at
	// once (default: the number of CPUs; negative: none). Layers are only
	// decompressed ahead when gzip is inflated in process (PureGo, or igzip
	// not installed).
	Workers int
	// SpoolDir holds the unlinked spool files of decompressed layers
	// (default os.TempDir()); they live in the page cache and vanish when
	// the build ends.
	SpoolDir string
}

// Result describes the image PullToExt4 produced.
type Result struct {
	Image *Image
	Stats Stats
	// Bytes is the image file size; ReadOnly reports whether the image
	// still carries the read-only feature (Compact).
	Bytes    int64
	ReadOnly bool
}

// PullToExt4 pulls ref and writes its flattened root filesystem as an ext4
// image at outPath, in one streaming path: layers are downloaded in
// parallel into the blob cache while the flattener already reads them (top
// layer first) and feeds the ext4 writer through a pipe; nothing is
// extracted on the host. The image is then grown to its size (see
// Ext4Options) and fsynced once. On failure outPath is removed, and no
// unverified blob is left in the cache.
func PullToExt4(ctx context.Context, ref, outPath string, opts Ext4Options) (*Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := newSession(ref, opts.Options)
	if err != nil {
		return nil, err
	}
	img, err := s.resolve(ctx)
	if err != nil {
		return nil, err
	}
	wait := s.startDownloads(ctx, img)
	res, err := buildExt4(ctx, img.Sources(), outPath, opts, s.prog)
	if err != nil {
		cancel()
		if werr := wait(); werr != nil && !errors.Is(werr, context.Canceled) {
			// A failed download (digest mismatch, truncation, network)
			// explains whatever the decoder then tripped over.
			return nil, werr
		}
		return nil, fmt.Errorf("pulling %s to %s: %w", s.ref, outPath, err)
	}
	if err := wait(); err != nil {
		os.Remove(outPath)
		return nil, err
	}
	if err := s.cache.recordImage(ctx, s.ref.Name(), s.manifestDesc); err != nil {
		os.Remove(outPath)
		return nil, fmt.Errorf("pulling %s: %w", s.ref, err)
	}
	res.Image = img
	return res, nil
}

// BuildExt4 flattens layers (bottom to top) straight into an ext4 image at
// outPath and sizes it per opts (the pull fields of opts are ignored). It is
// the second half of PullToExt4, usable on its own with layers from any
// source (SourcesFromV1, Image.Sources).
func BuildExt4(ctx context.Context, layers []Source, outPath string, opts Ext4Options) (*Result, error) {
	return buildExt4(ctx, layers, outPath, opts, &reporter{fn: opts.Progress})
}

// errWriterStopped ends the flattener when the ext4 writer gave up.
var errWriterStopped = errors.New("ext4 writer stopped")

// buildExt4 is BuildExt4 reporting through prog (shared with the pull so
// that callbacks stay serialised).
func buildExt4(ctx context.Context, layers []Source, outPath string, opts Ext4Options, prog *reporter) (*Result, error) {
	workers := opts.Workers
	if workers == 0 {
		workers = runtime.NumCPU()
	}
	spoolDir := opts.SpoolDir
	if spoolDir == "" {
		spoolDir = os.TempDir()
	}
	srcs := layers
	// Decompressing ahead into spools pays off when gzip is inflated in
	// this process; igzip already runs beside it, and the spool's extra
	// copy would cost more than it saves.
	if workers > 0 && (opts.PureGo || igzipPath() == "") {
		var stopPrefetch func()
		var err error
		srcs, stopPrefetch, err = prefetch(layers, spoolDir, workers, spoolBudget)
		if err != nil {
			return nil, err
		}
		defer stopPrefetch()
	}
	srcs = withProgress(srcs, prog)
	pipe := newChanPipe(1<<20, 4)
	type flat struct {
		stats Stats
		err   error
	}
	done := make(chan flat, 1)
	go func() {
		tw := tar.NewWriter(pipe)
		st, err := Flatten(ctx, srcs, tw)
		if err == nil {
			err = tw.Close()
		}
		pipe.CloseWithError(err)
		done <- flat{st, err}
	}()
	info, err := ext4.FromTar(ctx, pipe, outPath, ext4.Options{NoSync: true, Label: opts.Label})
	pipe.CloseRead(errWriterStopped)
	fl := <-done
	if fl.err != nil && !errors.Is(fl.err, errWriterStopped) {
		os.Remove(outPath) // the flattener failed first: that is the cause
		return nil, fl.err
	}
	if err != nil {
		return nil, err
	}
	res := &Result{Stats: fl.stats, Bytes: info.Bytes, ReadOnly: true}
	prog.send(Progress{Stage: StageWriting, Bytes: info.Bytes})
	if !opts.Compact {
		size := opts.Size
		if size == 0 {
			size = DefaultSize(fl.stats.EstimatedSize)
		}
		if err := ext4.Grow(ctx, outPath, size, opts.Journal); err != nil {
			os.Remove(outPath)
			return nil, err
		}
		res.Bytes, res.ReadOnly = (size+4095)&^4095, false
	} else if !opts.NoSync {
		if err := syncFile(outPath); err != nil {
			os.Remove(outPath)
			return nil, err
		}
	}
	return res, nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	return f.Close()
}

// withProgress wraps sources so that the flattener opening a layer reports
// the flattening stage.
func withProgress(srcs []Source, prog *reporter) []Source {
	if prog == nil || prog.fn == nil {
		return srcs
	}
	out := make([]Source, len(srcs))
	for i := range srcs {
		i, open := i, srcs[i].Open
		out[i] = Source{Digest: srcs[i].Digest, Open: func() (io.ReadCloser, error) {
			prog.send(Progress{Stage: StageFlattening, Layer: i + 1, Layers: len(srcs), Digest: srcs[i].Digest})
			return open()
		}}
	}
	return out
}
