package imagepull

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// blobFetch is one layer blob on its way into the cache. Readers can start
// while the download is still running: they follow the growing ingest file
// and see EOF only once the blob has been verified (or its error).
type blobFetch struct {
	digest v1.Hash
	size   int64

	mu      sync.Mutex
	cond    *sync.Cond
	path    string // file to read: ingest file while downloading, then the blob
	written int64
	done    bool
	err     error
	started bool // path is set (readers may open it)
}

func newBlobFetch(h v1.Hash, size int64) *blobFetch {
	b := &blobFetch{digest: h, size: size}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// cached marks the fetch complete from an existing cache file.
func (b *blobFetch) cached(path string) {
	b.mu.Lock()
	b.path, b.written, b.started, b.done = path, b.size, true, true
	b.cond.Broadcast()
	b.mu.Unlock()
}

func (b *blobFetch) begin(path string) {
	b.mu.Lock()
	b.path, b.started = path, true
	b.cond.Broadcast()
	b.mu.Unlock()
}

func (b *blobFetch) advance(n int64) {
	b.mu.Lock()
	b.written += n
	b.cond.Broadcast()
	b.mu.Unlock()
}

// finish records the outcome; on success path is the published blob.
func (b *blobFetch) finish(path string, err error) {
	b.mu.Lock()
	if err == nil {
		b.path = path
	}
	b.done, b.err = true, err
	b.cond.Broadcast()
	b.mu.Unlock()
}

// wait blocks until the fetch is done and returns its error.
func (b *blobFetch) wait() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.done {
		b.cond.Wait()
	}
	return b.err
}

// Open returns a reader of the compressed blob that follows the download.
func (b *blobFetch) Open() (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.started && !b.done {
		b.cond.Wait()
	}
	if b.err != nil {
		return nil, b.err
	}
	f, err := os.Open(b.path)
	if err != nil {
		return nil, fmt.Errorf("opening blob %s: %w", b.digest, err)
	}
	if b.done {
		return f, nil // complete and verified: read the file itself
	}
	return &tailReader{b: b, f: f}, nil
}

type tailReader struct {
	b   *blobFetch
	f   *os.File
	off int64
}

func (t *tailReader) Read(p []byte) (int, error) {
	b := t.b
	b.mu.Lock()
	for t.off >= b.written && !b.done {
		b.cond.Wait()
	}
	avail, done, ferr := b.written-t.off, b.done, b.err
	b.mu.Unlock()
	if avail <= 0 {
		if ferr != nil {
			return 0, ferr
		}
		if done {
			return 0, io.EOF
		}
	}
	if int64(len(p)) > avail {
		p = p[:avail]
	}
	n, err := t.f.ReadAt(p, t.off)
	t.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	if err == io.EOF {
		// The writer advanced past what the file shows; should not happen.
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (t *tailReader) Close() error { return t.f.Close() }

// download fetches one blob into the cache under its lock: a cached blob is
// used as is; otherwise open's stream (which must verify the digest, as
// ggcr's remote layers do) is written to an ingest file, its size checked,
// and renamed into blobs/. onBytes is called with each chunk's size.
func (c *Cache) download(ctx context.Context, b *blobFetch, open func(context.Context) (io.ReadCloser, error), onBytes func(int64)) (err error) {
	defer func() {
		if err != nil {
			b.finish("", err)
		}
	}()
	final := c.BlobPath(b.digest)
	// Blobs are renamed into place without an fsync (one per blob would
	// stall the pull), so a crash can leave a torn one: check the digest of
	// a cached blob before trusting it (about 70 ms per 100 MB).
	if c.Has(b.digest, b.size) && c.verify(b.digest) == nil {
		b.cached(final)
		return nil
	}
	unlock, err := c.lock(ctx, blobLockKey(b.digest))
	if err != nil {
		return err
	}
	defer unlock()
	if c.Has(b.digest, b.size) {
		if c.verify(b.digest) == nil {
			b.cached(final)
			return nil
		}
		if err := os.Remove(final); err != nil {
			return fmt.Errorf("removing corrupt cached blob %s: %w", b.digest, err)
		}
	}
	rc, err := open(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.CreateTemp(filepath.Join(c.dir, ingestDir), blobLockKey(b.digest)+"-*")
	if err != nil {
		return fmt.Errorf("creating ingest file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		f.Close()
		if err != nil {
			os.Remove(tmp)
		}
	}()
	b.begin(tmp)
	buf := make([]byte, 256<<10)
	var total int64
	for {
		n, rerr := rc.Read(buf)
		if n > 0 {
			if total+int64(n) > b.size {
				return fmt.Errorf("blob %s is larger than the %d bytes the manifest declares", b.digest, b.size)
			}
			if _, err := f.Write(buf[:n]); err != nil {
				return fmt.Errorf("writing blob %s: %w", b.digest, err)
			}
			total += int64(n)
			b.advance(int64(n))
			if onBytes != nil {
				onBytes(int64(n))
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("downloading blob %s: %w", b.digest, rerr)
		}
	}
	if total != b.size {
		return fmt.Errorf("blob %s is truncated: got %d of %d bytes", b.digest, total, b.size)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing blob %s: %w", b.digest, err)
	}
	// Rename under the fetch's lock so that Open never sees a path that
	// has just been moved.
	b.mu.Lock()
	err = os.Rename(tmp, final)
	if err == nil {
		b.path = final
	}
	b.mu.Unlock()
	if err != nil {
		return fmt.Errorf("publishing blob %s: %w", b.digest, err)
	}
	b.finish(final, nil)
	return nil
}
