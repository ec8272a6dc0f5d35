package imagepull

import (
	"bytes"
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
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/fsatomic"
)

// The blob cache is an OCI image layout directory (what `skopeo copy oci:`
// and umoci read): blobs/sha256/<hex>, oci-layout and index.json, where
// index.json lists every pulled manifest under its reference. Blobs are
// written to .ingest/ and renamed into place only after their digest and
// size were verified, so a failed or corrupt download leaves no entry.
// Per-blob flock files in .locks/ make concurrent pulls (in one process or
// several) download each blob once.
const (
	ingestDir    = ".ingest"
	locksDir     = ".locks"
	indexLock    = "index"
	refNameAnnot = "org.opencontainers.image.ref.name"
	layoutFile   = "oci-layout"
	indexFile    = "index.json"
)

// Cache is a digest-verified blob cache in an OCI image layout directory.
// It is safe for concurrent use by several goroutines and processes.
type Cache struct {
	dir string
}

// OpenCache opens (creating if needed) the blob cache at dir.
func OpenCache(dir string) (*Cache, error) {
	if dir == "" {
		return nil, errkind.New(errkind.InvalidArgument, "blob cache directory is not set")
	}
	for _, d := range []string{dir, filepath.Join(dir, "blobs", "sha256"), filepath.Join(dir, ingestDir), filepath.Join(dir, locksDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("creating blob cache: %w", err)
		}
	}
	c := &Cache{dir: dir}
	if _, err := os.Stat(filepath.Join(dir, layoutFile)); errors.Is(err, fs.ErrNotExist) {
		if err := fsatomic.WriteFile(filepath.Join(dir, layoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
			return nil, fmt.Errorf("initialising blob cache: %w", err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, indexFile)); errors.Is(err, fs.ErrNotExist) {
		if err := c.writeIndex(&v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}); err != nil {
			return nil, fmt.Errorf("initialising blob cache: %w", err)
		}
	}
	return c, nil
}

// Dir returns the cache directory.
func (c *Cache) Dir() string { return c.dir }

// BlobPath returns where the blob with digest h lives (it may not exist).
func (c *Cache) BlobPath(h v1.Hash) string {
	return filepath.Join(c.dir, "blobs", h.Algorithm, h.Hex)
}

// Has reports whether the blob is cached with the given size (size < 0:
// any size).
func (c *Cache) Has(h v1.Hash, size int64) bool {
	st, err := os.Stat(c.BlobPath(h))
	return err == nil && st.Mode().IsRegular() && (size < 0 || st.Size() == size)
}

// verify checks a cached blob's content against its digest.
func (c *Cache) verify(h v1.Hash) error {
	if h.Algorithm != "sha256" {
		return fmt.Errorf("blob %s: unsupported digest algorithm", h)
	}
	f, err := os.Open(c.BlobPath(h))
	if err != nil {
		return err
	}
	defer f.Close()
	d := sha256.New()
	if _, err := io.Copy(d, f); err != nil {
		return fmt.Errorf("reading cached blob %s: %w", h, err)
	}
	if hex.EncodeToString(d.Sum(nil)) != h.Hex {
		return fmt.Errorf("cached blob %s is corrupt", h)
	}
	return nil
}

// readSmall returns a cached small blob (manifest, config) after checking
// its digest; a missing or corrupt blob returns fs.ErrNotExist.
func (c *Cache) readSmall(h v1.Hash) ([]byte, error) {
	b, err := os.ReadFile(c.BlobPath(h))
	if err != nil {
		return nil, err
	}
	if h.Algorithm != "sha256" || sha256Hex(b) != h.Hex {
		return nil, fs.ErrNotExist
	}
	return b, nil
}

// putSmall stores a small blob after checking its digest.
func (c *Cache) putSmall(h v1.Hash, b []byte) error {
	if h.Algorithm != "sha256" || sha256Hex(b) != h.Hex {
		return fmt.Errorf("blob %s: digest mismatch", h)
	}
	if c.Has(h, int64(len(b))) {
		return nil
	}
	return fsatomic.WriteFrom(c.BlobPath(h), 0o644, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// lock takes an exclusive flock on .locks/<key>.lock, polling so that ctx
// can cancel the wait.
func (c *Cache) lock(ctx context.Context, key string) (unlock func(), err error) {
	p := filepath.Join(c.dir, locksDir, key+".lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening cache lock: %w", err)
	}
	delay := 2 * time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", p, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

func blobLockKey(h v1.Hash) string { return h.Algorithm + "-" + h.Hex }

func (c *Cache) readIndex() (*v1.IndexManifest, error) {
	b, err := os.ReadFile(filepath.Join(c.dir, indexFile))
	if err != nil {
		return nil, fmt.Errorf("reading cache index: %w", err)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parsing cache index: %w", err)
	}
	return idx, nil
}

func (c *Cache) writeIndex(idx *v1.IndexManifest) error {
	b, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	return fsatomic.WriteFile(filepath.Join(c.dir, indexFile), b, 0o644)
}

// recordImage lists a pulled manifest in index.json under ref (replacing a
// previous entry for the same ref), so that OCI tools can read the cache.
func (c *Cache) recordImage(ctx context.Context, ref string, desc v1.Descriptor) error {
	unlock, err := c.lock(ctx, indexLock)
	if err != nil {
		return err
	}
	defer unlock()
	idx, err := c.readIndex()
	if err != nil {
		return err
	}
	desc.Annotations = map[string]string{refNameAnnot: ref}
	desc.Platform = nil
	kept := idx.Manifests[:0]
	for _, m := range idx.Manifests {
		if m.Annotations[refNameAnnot] != ref {
			kept = append(kept, m)
		}
	}
	idx.Manifests = append(kept, desc)
	return c.writeIndex(idx)
}

// PruneCache removes every blob of the cache at cacheDir that is not
// reachable from keep. keep holds digests ("sha256:…") of images still in
// use: a kept manifest keeps its config and layers, a kept index keeps its
// manifests, and any other kept digest keeps that blob. With dryRun nothing
// is removed. It returns the bytes and number of blobs freed (or that would
// be). Stale ingest files older than an hour are removed too.
func PruneCache(cacheDir string, keep []string, dryRun bool) (freedBytes int64, blobs int, err error) {
	c, err := OpenCache(cacheDir)
	if err != nil {
		return 0, 0, err
	}
	ctx := context.Background()
	unlock, err := c.lock(ctx, indexLock)
	if err != nil {
		return 0, 0, err
	}
	defer unlock()

	live := map[string]bool{}
	for _, k := range keep {
		h, err := v1.NewHash(k)
		if err != nil {
			return 0, 0, errkind.Wrap(errkind.InvalidArgument, err, "pruning cache: invalid digest %q", k)
		}
		c.markLive(h, live)
	}
	dir := filepath.Join(c.dir, "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, fmt.Errorf("pruning cache: %w", err)
	}
	for _, e := range ents {
		h := v1.Hash{Algorithm: "sha256", Hex: e.Name()}
		if live[h.String()] {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		if !dryRun {
			unlockBlob, err := c.lock(ctx, blobLockKey(h))
			if err != nil {
				return freedBytes, blobs, err
			}
			err = os.Remove(filepath.Join(dir, e.Name()))
			_ = os.Remove(filepath.Join(c.dir, locksDir, blobLockKey(h)+".lock"))
			unlockBlob()
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return freedBytes, blobs, fmt.Errorf("pruning cache: %w", err)
			}
		}
		freedBytes += info.Size()
		blobs++
	}
	if !dryRun {
		if err := c.pruneIndex(live); err != nil {
			return freedBytes, blobs, err
		}
		c.removeStaleIngest(time.Hour)
	}
	return freedBytes, blobs, nil
}

// markLive marks h and, for manifests and indexes found in the cache, every
// blob they reference.
func (c *Cache) markLive(h v1.Hash, live map[string]bool) {
	if live[h.String()] {
		return
	}
	live[h.String()] = true
	b, err := c.readSmallMax(h, 4<<20)
	if err != nil {
		return
	}
	var probe struct {
		MediaType string            `json:"mediaType"`
		Config    *v1.Descriptor    `json:"config"`
		Layers    []v1.Descriptor   `json:"layers"`
		Manifests []v1.Descriptor   `json:"manifests"`
		Extra     map[string]string `json:"-"`
	}
	if json.Unmarshal(b, &probe) != nil {
		return
	}
	if probe.Config != nil {
		live[probe.Config.Digest.String()] = true
	}
	for _, l := range probe.Layers {
		live[l.Digest.String()] = true
	}
	for _, m := range probe.Manifests {
		c.markLive(m.Digest, live)
	}
}

// readSmallMax reads a cached blob if it is at most max bytes.
func (c *Cache) readSmallMax(h v1.Hash, max int64) ([]byte, error) {
	st, err := os.Stat(c.BlobPath(h))
	if err != nil {
		return nil, err
	}
	if st.Size() > max {
		return nil, fmt.Errorf("blob %s too large", h)
	}
	return c.readSmall(h)
}

// pruneIndex drops index.json entries whose manifest is gone.
func (c *Cache) pruneIndex(live map[string]bool) error {
	idx, err := c.readIndex()
	if err != nil {
		return err
	}
	kept := idx.Manifests[:0]
	for _, m := range idx.Manifests {
		if live[m.Digest.String()] {
			kept = append(kept, m)
		}
	}
	idx.Manifests = kept
	return c.writeIndex(idx)
}

func (c *Cache) removeStaleIngest(age time.Duration) {
	dir := filepath.Join(c.dir, ingestDir)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > age && strings.HasPrefix(e.Name(), "sha256-") {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
