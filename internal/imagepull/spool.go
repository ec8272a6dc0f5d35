package imagepull

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// spool holds one layer decompressed ahead of the flattener: a queue of
// segments written by one goroutine and read, while it grows, by another.
// Data goes to memory while the shared budget allows (the reader usually
// keeps up with the layer it is on) and otherwise to an unlinked temporary
// file, which lives in the page cache and vanishes when the spool closes.
type spool struct {
	mu      sync.Mutex
	cond    *sync.Cond
	dir     string
	f       *os.File // created on first overflow
	fileEnd int64
	segs    []segment
	budget  *memBudget
	done    bool
	err     error
}

// segment is a run of spooled data: in memory (mem[pos:]) or in the file
// ([off, off+n)).
type segment struct {
	mem    []byte
	pos    int
	off, n int64
}

// memBudget bounds the memory held by all spools of a build and recycles
// their chunks.
type memBudget struct {
	mu   sync.Mutex
	used int
	max  int
	free [][]byte
}

const spoolChunk = 1 << 20

func (b *memBudget) get() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+spoolChunk > b.max {
		return nil
	}
	b.used += spoolChunk
	if n := len(b.free); n > 0 {
		c := b.free[n-1]
		b.free = b.free[:n-1]
		return c[:0]
	}
	return make([]byte, 0, spoolChunk)
}

func (b *memBudget) put(c []byte) {
	b.mu.Lock()
	b.used -= spoolChunk
	b.free = append(b.free, c)
	b.mu.Unlock()
}

func newSpool(dir string, budget *memBudget) *spool {
	s := &spool{dir: dir, budget: budget}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *spool) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		s.mu.Lock()
		// Fill the last memory chunk if there is room.
		if n := len(s.segs); n > 0 && s.segs[n-1].mem != nil && len(s.segs[n-1].mem) < cap(s.segs[n-1].mem) {
			last := &s.segs[n-1]
			k := copy(last.mem[len(last.mem):cap(last.mem)], p)
			last.mem = last.mem[:len(last.mem)+k]
			p = p[k:]
			s.cond.Broadcast()
			s.mu.Unlock()
			continue
		}
		s.mu.Unlock()
		if c := s.budget.get(); c != nil {
			s.mu.Lock()
			s.segs = append(s.segs, segment{mem: c})
			s.mu.Unlock()
			continue
		}
		if err := s.overflow(p); err != nil {
			return total - len(p), err
		}
		p = nil
	}
	return total, nil
}

// overflow appends p to the spool file.
func (s *spool) overflow(p []byte) error {
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, ".banger-layer-*")
		if err != nil {
			return fmt.Errorf("creating layer spool: %w", err)
		}
		os.Remove(f.Name())
		s.mu.Lock()
		s.f = f
		s.mu.Unlock()
	}
	off := s.fileEnd
	if _, err := s.f.WriteAt(p, off); err != nil {
		return fmt.Errorf("writing layer spool: %w", err)
	}
	s.fileEnd += int64(len(p))
	s.mu.Lock()
	if n := len(s.segs); n > 0 && s.segs[n-1].mem == nil && s.segs[n-1].off+s.segs[n-1].n == off {
		s.segs[n-1].n += int64(len(p))
	} else {
		s.segs = append(s.segs, segment{off: off, n: int64(len(p))})
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	return nil
}

// finish marks the end of the data (err == nil) or a failure.
func (s *spool) finish(err error) {
	s.mu.Lock()
	s.done, s.err = true, err
	s.cond.Broadcast()
	s.mu.Unlock()
}

// close releases the file and the memory still queued.
func (s *spool) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, seg := range s.segs {
		if seg.mem != nil {
			s.budget.put(seg.mem)
		}
	}
	s.segs = nil
	if s.f != nil {
		s.f.Close()
	}
}

// reader follows the spool from the start; it returns the writer's error,
// or io.EOF once all data was read. There is one reader per spool.
func (s *spool) reader() io.ReadCloser { return &spoolReader{s: s} }

type spoolReader struct{ s *spool }

func (r *spoolReader) Read(p []byte) (int, error) {
	s := r.s
	s.mu.Lock()
	for {
		for len(s.segs) == 0 && !s.done {
			s.cond.Wait()
		}
		if len(s.segs) == 0 {
			err := s.err
			s.mu.Unlock()
			if err != nil {
				return 0, err
			}
			return 0, io.EOF
		}
		seg := &s.segs[0]
		if seg.mem != nil {
			if seg.pos == len(seg.mem) {
				if len(seg.mem) < cap(seg.mem) && len(s.segs) == 1 && !s.done {
					s.cond.Wait() // the writer is still filling this chunk
					continue
				}
				s.budget.put(seg.mem)
				s.segs = s.segs[1:]
				continue
			}
			n := copy(p, seg.mem[seg.pos:])
			seg.pos += n
			s.mu.Unlock()
			return n, nil
		}
		off, avail, f := seg.off, seg.n, s.f
		s.mu.Unlock()
		if int64(len(p)) > avail {
			p = p[:avail]
		}
		n, err := f.ReadAt(p, off)
		if err == io.EOF && n > 0 {
			err = nil
		}
		s.mu.Lock()
		seg = &s.segs[0]
		seg.off += int64(n)
		seg.n -= int64(n)
		if seg.n == 0 {
			s.segs = s.segs[1:]
		}
		s.mu.Unlock()
		return n, err
	}
}

func (r *spoolReader) Close() error { return nil }

// spoolBudget bounds the memory of all spools of one build.
const spoolBudget = 4 << 20

// errStopped is what readers of a spool see when the pipeline stops early.
var errStopped = errors.New("pipeline stopped")

// prefetch decompresses layers ahead of the flattener, top layer first,
// at most workers at a time, each into its own spool. The returned sources
// read the spools (a second Open of a layer goes back to the original
// source); stop releases everything.
func prefetch(layers []Source, dir string, workers, memBytes int) (out []Source, stop func(), err error) {
	n := len(layers)
	budget := &memBudget{max: memBytes}
	spools := make([]*spool, n)
	for i := range layers {
		spools[i] = newSpool(dir, budget)
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
