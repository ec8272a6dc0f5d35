package agentproto

import (
	"io"
	"net"
	"sync"
)

// BatchSize bounds the bytes a BatchWriter holds: writers block while that
// much is waiting to be written.
const BatchSize = 256 << 10

// BatchWriter coalesces small writes into large ones without delaying
// them: Write appends to a buffer, and one goroutine writes out everything
// that accumulated while its previous write was in progress. Both ends of
// the agent channel write through one, because every write to a
// virtio-serial port costs a guest exit (and yamux writes a frame's 12-byte
// header and its body separately).
//
// Write returns once the bytes are queued, so a write error surfaces on a
// later Write (or not at all when nothing more is written).
type BatchWriter struct {
	w     io.Writer
	mu    sync.Mutex
	ready sync.Cond // data queued or closed
	space sync.Cond // room freed, or failed
	buf   []byte    // queued bytes
	spare []byte    // the buffer being written, reused afterwards
	err   error     // first write error, or net.ErrClosed
	done  chan struct{}
}

// NewBatchWriter starts a BatchWriter on w. Close stops it.
func NewBatchWriter(w io.Writer) *BatchWriter {
	b := &BatchWriter{w: w, done: make(chan struct{})}
	b.ready.L, b.space.L = &b.mu, &b.mu
	go b.loop()
	return b
}

// Write queues p, blocking while BatchSize bytes are queued already.
func (b *BatchWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for len(p) > 0 {
		for b.err == nil && len(b.buf) >= BatchSize {
			b.space.Wait()
		}
		if b.err != nil {
			return n, b.err
		}
		k := min(len(p), BatchSize-len(b.buf))
		b.buf = append(b.buf, p[:k]...)
		p, n = p[k:], n+k
		b.ready.Signal()
	}
	if b.err != nil {
		return n, b.err
	}
	return n, nil
}

// Close stops the writer: queued bytes not yet written are dropped, later
// writes fail with net.ErrClosed. A write in progress is not interrupted;
// close the underlying writer for that. Close does not wait for it.
func (b *BatchWriter) Close() error {
	b.mu.Lock()
	if b.err == nil {
		b.err = net.ErrClosed
	}
	b.ready.Broadcast()
	b.space.Broadcast()
	b.mu.Unlock()
	return nil
}

// Done is closed when the writing goroutine has returned (after Close or a
// write error).
func (b *BatchWriter) Done() <-chan struct{} { return b.done }

func (b *BatchWriter) loop() {
	defer close(b.done)
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		for b.err == nil && len(b.buf) == 0 {
			b.ready.Wait()
		}
		if b.err != nil {
			return
		}
		out := b.buf
		b.buf = b.spare[:0]
		b.mu.Unlock()
		_, err := b.w.Write(out)
		b.mu.Lock()
		b.spare = out[:0]
		if err != nil && b.err == nil {
			b.err = err
		}
		b.space.Broadcast()
	}
}
