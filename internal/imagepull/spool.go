package imagepull

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// spool is an unlinked temporary file written by one goroutine and read,
// while it grows, by others. It lets a layer be decompressed ahead of the
// flattener without holding the data in memory (it lives in the page
// cache and disappears when the spool is closed).
type spool struct {
	mu      sync.Mutex
	cond    *sync.Cond
	f       *os.File
	written int64
	done    bool
	err     error
}

func newSpool(dir string) (*spool, error) {
	f, err := os.CreateTemp(dir, ".banger-layer-*")
	if err != nil {
		return nil, fmt.Errorf("creating layer spool: %w", err)
	}
	os.Remove(f.Name())
	s := &spool{f: f}
	s.cond = sync.NewCond(&s.mu)
	return s, nil
}

func (s *spool) Write(p []byte) (int, error) {
	s.mu.Lock()
	off := s.written
	s.mu.Unlock()
	n, err := s.f.WriteAt(p, off)
	s.mu.Lock()
	s.written += int64(n)
	s.cond.Broadcast()
	s.mu.Unlock()
	return n, err
}

// finish marks the end of the data (err == nil) or a failure.
func (s *spool) finish(err error) {
	s.mu.Lock()
	s.done, s.err = true, err
	s.cond.Broadcast()
	s.mu.Unlock()
}

func (s *spool) close() { s.f.Close() }

// reader follows the spool from the start; it returns the writer's error,
// or io.EOF once all data was read.
func (s *spool) reader() io.ReadCloser { return &spoolReader{s: s} }

type spoolReader struct {
	s   *spool
	off int64
}

func (r *spoolReader) Read(p []byte) (int, error) {
	s := r.s
	s.mu.Lock()
	for r.off >= s.written && !s.done {
		s.cond.Wait()
	}
	avail, err := s.written-r.off, s.err
	s.mu.Unlock()
	if avail <= 0 {
		if err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	if int64(len(p)) > avail {
		p = p[:avail]
	}
	n, rerr := s.f.ReadAt(p, r.off)
	r.off += int64(n)
	if rerr == io.EOF && n > 0 {
		rerr = nil
	}
	return n, rerr
}

func (r *spoolReader) Close() error { return nil }

// errStopped is what readers of a spool see when the pipeline stops early.
var errStopped = errors.New("pipeline stopped")

// prefetch decompresses layers ahead of the flattener, top layer first,
// at most workers at a time, each into its own spool. The returned sources
// read the spools (a second Open of a layer goes back to the original
// source); stop releases everything.
func prefetch(layers []Source, dir string, workers int) (out []Source, stop func(), err error) {
	n := len(layers)
	spools := make([]*spool, n)
	for i := range layers {
		if spools[i], err = newSpool(dir); err != nil {
			for _, s := range spools[:i] {
				s.close()
			}
			return nil, nil, err
		}
	}
	quit := make(chan struct{})
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for i := n - 1; i >= 0; i-- {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-quit:
				spools[i].finish(errStopped)
				return
			}
			defer func() { <-sem }()
			rc, err := layers[i].Open()
			if err == nil {
				_, err = io.Copy(stopWriter{spools[i], quit}, rc)
				rc.Close()
			}
			spools[i].finish(err)
		}(i)
	}
	out = make([]Source, n)
	for i := range layers {
		i := i
		var once sync.Once
		out[i] = Source{Digest: layers[i].Digest, Open: func() (io.ReadCloser, error) {
			var rc io.ReadCloser
			once.Do(func() { rc = spools[i].reader() })
			if rc != nil {
				return rc, nil
			}
			return layers[i].Open()
		}}
	}
	var stopOnce sync.Once
	stop = func() {
		stopOnce.Do(func() {
			close(quit)
			// A worker may still wait for a download; release the spools
			// once every worker is gone.
			go func() {
				wg.Wait()
				for _, s := range spools {
					s.close()
				}
			}()
		})
	}
	return out, stop, nil
}

// stopWriter fails writes once quit is closed, ending an io.Copy early.
type stopWriter struct {
	s    *spool
	quit chan struct{}
}

func (w stopWriter) Write(p []byte) (int, error) {
	select {
	case <-w.quit:
		return 0, errStopped
	default:
	}
	return w.s.Write(p)
}
