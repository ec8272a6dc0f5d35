package agentproto

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// slowWriter records each Write it gets, blocking each one until released.
type slowWriter struct {
	mu     sync.Mutex
	writes [][]byte
	gate   chan struct{}
	err    error
}

func (w *slowWriter) Write(p []byte) (int, error) {
	<-w.gate
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	w.writes = append(w.writes, append([]byte(nil), p...))
	return len(p), nil
}

func (w *slowWriter) snapshot() [][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([][]byte(nil), w.writes...)
}

func TestBatchWriterCoalescesWhileWriting(t *testing.T) {
	sw := &slowWriter{gate: make(chan struct{})}
	bw := NewBatchWriter(sw)
	defer bw.Close()
	// The first write is taken at once and blocks in sw; the next ones
	// accumulate behind it.
	var want bytes.Buffer
	for i := range 100 {
		p := bytes.Repeat([]byte{byte(i)}, 12+i)
		want.Write(p)
		if n, err := bw.Write(p); err != nil || n != len(p) {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	close(sw.gate)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got bytes.Buffer
		ws := sw.snapshot()
		for _, w := range ws {
			got.Write(w)
		}
		if got.Len() == want.Len() {
			if !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Fatal("bytes changed or reordered")
			}
			if len(ws) > 2 {
				t.Fatalf("100 writes reached the writer as %d writes, want at most 2", len(ws))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d bytes written", got.Len(), want.Len())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBatchWriterBlocksWhenFull(t *testing.T) {
	sw := &slowWriter{gate: make(chan struct{})}
	bw := NewBatchWriter(sw)
	defer bw.Close()
	done := make(chan error, 1)
	go func() {
		// More than the writer in progress plus a full buffer can hold.
		_, err := bw.Write(make([]byte, 3*BatchSize))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("write of 3×BatchSize returned (%v) while nothing was written", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(sw.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestBatchWriterReportsErrorsAndClose(t *testing.T) {
	boom := errors.New("boom")
	sw := &slowWriter{gate: make(chan struct{}), err: boom}
	close(sw.gate)
	bw := NewBatchWriter(sw)
	if _, err := bw.Write([]byte("x")); err != nil {
		t.Fatalf("first write: %v (should only be queued)", err)
	}
	select {
	case <-bw.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("writer goroutine did not stop after a write error")
	}
	if _, err := bw.Write([]byte("y")); !errors.Is(err, boom) {
		t.Fatalf("write after failure: %v, want %v", err, boom)
	}

	bw2 := NewBatchWriter(io.Discard)
	bw2.Close()
	<-bw2.Done()
	if _, err := bw2.Write([]byte("z")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v, want net.ErrClosed", err)
	}
}
