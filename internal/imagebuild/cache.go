package imagebuild

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/fsatomic"
)

// The step cache lives under one directory:
//
//	states/<key>/overlay.ext4   the build VM's writable disk after the step
//	states/<key>/state.json     what produced it (parent key, instruction)
//	final/<key>.ext4            the flattened root filesystem of that state
//
// A key is the chain hash of the base image's digest and every filesystem
// step up to and including this one: sha256(parent key, the resolved
// instruction, the hash of the context files it reads). Steps that only
// change the configuration (ENV, LABEL, …) are not part of the chain; their
// effect on later steps (a RUN's environment) is part of those steps.
const (
	statesDir   = "states"
	finalDir    = "final"
	overlayFile = "overlay.ext4"
	stateFile   = "state.json"
)

// BaseKey is the cache key of the state before any step.
func BaseKey(baseDigest string) string {
	return hashStrings("base", baseDigest)
}

// StepKey is the cache key after a step: the parent key, the step's
// canonical encoding and the hash of the context files it reads ("" when
// it reads none).
func StepKey(parent, step, contextHash string) string {
	return hashStrings("step", parent, step, contextHash)
}

func hashStrings(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s\n", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// stateRecord is state.json.
type stateRecord struct {
	Parent    string    `json:"parent"`
	Line      int       `json:"line"`
	Step      string    `json:"step"`
	CreatedAt time.Time `json:"created_at"`
}

// cache is the on-disk step cache.
type cache struct{ dir string }

func (c cache) overlay(key string) string { return filepath.Join(c.dir, statesDir, key, overlayFile) }
func (c cache) final(key string) string   { return filepath.Join(c.dir, finalDir, key+".ext4") }

func (c cache) hasState(key string) bool {
	_, err := os.Stat(c.overlay(key))
	return err == nil
}

func (c cache) hasFinal(key string) bool {
	_, err := os.Stat(c.final(key))
	return err == nil
}

// putState moves overlay (a stopped build VM's disk) into the cache as
// the state key, published by renaming a staging dir.
func (c cache) putState(key string, rec stateRecord, overlay string) error {
	dir := filepath.Join(c.dir, statesDir, key)
	staging := dir + fsatomic.StagingSuffix
	if err := os.RemoveAll(staging); err != nil {
		return err
	}
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return fmt.Errorf("caching step: %w", err)
	}
	b, _ := json.MarshalIndent(rec, "", "  ")
	if err := os.WriteFile(filepath.Join(staging, stateFile), b, 0o644); err != nil {
		os.RemoveAll(staging)
		return fmt.Errorf("caching step: %w", err)
	}
	if err := os.Rename(overlay, filepath.Join(staging, overlayFile)); err != nil {
		os.RemoveAll(staging)
		return fmt.Errorf("caching step: %w", err)
	}
	os.RemoveAll(dir) // a concurrent build of the same step may have won
	if err := os.Rename(staging, dir); err != nil {
		os.RemoveAll(staging)
		return fmt.Errorf("caching step: %w", err)
	}
	return nil
}

// putFinal copies a flattened rootfs into the cache.
func (c cache) putFinal(key, rootfs string) error {
	if err := os.MkdirAll(filepath.Join(c.dir, finalDir), 0o755); err != nil {
		return err
	}
	dst := c.final(key)
	tmp := dst + fsatomic.StagingSuffix
	if err := CopySparse(rootfs, tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("caching the result: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("caching the result: %w", err)
	}
	return nil
}

// lockCache takes the cache's exclusive lock (one build at a time per
// cache dir, across processes), calling waiting once if another build
// holds it. The wait ends with ctx.
func lockCache(ctx context.Context, dir string, waiting func()) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating build cache: %w", err)
	}
	told := false
	for {
		unlock, err := tryLockCache(dir)
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return unlock, err
		}
		if !told {
			waiting()
			told = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// tryLockCache takes the cache's exclusive lock without waiting; the error
// wraps unix.EWOULDBLOCK when a build holds it, fs.ErrNotExist when dir
// does not exist.
func tryLockCache(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking build cache: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking build cache: %w", err)
	}
	return func() { f.Close() }, nil
}

// Prune empties the step cache at dir and reports the bytes its files
// used (allocated blocks) and how many cached states it held; with dryRun
// it only counts. It refuses, as a Conflict, while a build holds the cache.
func Prune(dir string, dryRun bool) (freed int64, states int, err error) {
	unlock, err := tryLockCache(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, 0, nil // no cache yet
	case errors.Is(err, unix.EWOULDBLOCK):
		return 0, 0, errkind.WithHint(errkind.New(errkind.Conflict, "an image build is using the build cache"),
			"prune again when it has finished")
	case err != nil:
		return 0, 0, err
	}
	defer unlock()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, fmt.Errorf("reading build cache: %w", err)
	}
	for _, e := range entries {
		if e.Name() == ".lock" {
			continue
		}
		p := filepath.Join(dir, e.Name())
		_ = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			if d.Name() == stateFile {
				states++
			}
			if fi, err := d.Info(); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					freed += st.Blocks * 512
				}
			}
			return nil
		})
		if dryRun {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return freed, states, fmt.Errorf("pruning build cache: %w", err)
		}
	}
	return freed, states, nil
}

// CopySparse copies the file src to dst (created or truncated): a reflink
// where the filesystem supports one, else only src's data extents so that
// holes stay holes.
func CopySparse(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		return nil
	}
	size := fi.Size()
	var off int64
	for off < size {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			// No SEEK_DATA support: copy everything.
			if _, err := in.Seek(0, io.SeekStart); err != nil {
				return err
			}
			if _, err := out.Seek(0, io.SeekStart); err != nil {
				return err
			}
			_, err = io.Copy(out, in)
			return err
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		if _, err := in.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := out.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.CopyN(out, in, hole-data); err != nil {
			return err
		}
		off = hole
	}
	if err := out.Truncate(size); err != nil {
		return err
	}
	return out.Sync()
}
