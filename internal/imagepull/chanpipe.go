package imagepull

import (
	"io"
	"sync"
)

// chanPipe is a buffered in-memory pipe: the writer fills fixed-size
// chunks and hands them over a channel, so producer and consumer run
// concurrently with up to depth chunks in flight.
type chanPipe struct {
	full  chan []byte
	free  chan []byte
	cur   []byte // writer's chunk being filled
	rd    []byte // reader's chunk being drained
	rdBuf []byte

	mu     sync.Mutex
	werr   error // set by CloseWithError (writer side)
	rerr   error // set by the reader closing
	closed chan struct{}
	once   sync.Once
}

func newChanPipe(chunk, depth int) *chanPipe {
	p := &chanPipe{full: make(chan []byte, depth), free: make(chan []byte, depth+1), closed: make(chan struct{})}
	for i := 0; i < depth+1; i++ {
		p.free <- make([]byte, 0, chunk)
	}
	return p
}

// Write buffers p, handing full chunks to the reader.
func (p *chanPipe) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		if p.cur == nil {
			select {
			case p.cur = <-p.free:
			case <-p.closed:
				return n, p.readerErr()
			}
		}
		k := copy(p.cur[len(p.cur):cap(p.cur)], b)
		p.cur = p.cur[:len(p.cur)+k]
		b, n = b[k:], n+k
		if len(p.cur) == cap(p.cur) {
			if err := p.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (p *chanPipe) flush() error {
	if len(p.cur) == 0 {
		return nil
	}
	select {
	case p.full <- p.cur:
		p.cur = nil
		return nil
	case <-p.closed:
		return p.readerErr()
	}
}

// CloseWithError ends the stream; the reader sees err (io.EOF if nil)
// after the buffered data.
func (p *chanPipe) CloseWithError(err error) {
	if err == nil {
		err = p.flush()
	}
	p.mu.Lock()
	if err == nil {
		err = io.EOF
	}
	p.werr = err
	p.mu.Unlock()
	close(p.full)
}

func (p *chanPipe) Read(b []byte) (int, error) {
	for len(p.rd) == 0 {
		if p.rdBuf != nil {
			select {
			case p.free <- p.rdBuf[:0]:
			default:
			}
			p.rdBuf = nil
		}
		c, ok := <-p.full
		if !ok {
			p.mu.Lock()
			defer p.mu.Unlock()
			return 0, p.werr
		}
		p.rd, p.rdBuf = c, c
	}
	n := copy(b, p.rd)
	p.rd = p.rd[n:]
	return n, nil
}

// CloseRead stops the reader side; a blocked writer returns err.
func (p *chanPipe) CloseRead(err error) {
	p.once.Do(func() {
		p.mu.Lock()
		p.rerr = err
		p.mu.Unlock()
		close(p.closed)
	})
}

func (p *chanPipe) readerErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rerr
}
