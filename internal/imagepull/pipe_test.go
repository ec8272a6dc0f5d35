package imagepull

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"strings"
	"testing"
)

func TestChanPipe(t *testing.T) {
	data := make([]byte, 5<<20+123)
	rand.New(rand.NewSource(1)).Read(data)
	p := newChanPipe(64<<10, 4)
	go func() {
		r := rand.New(rand.NewSource(2))
		for off := 0; off < len(data); {
			n := r.Intn(200 << 10)
			if off+n > len(data) {
				n = len(data) - off
			}
			if _, err := p.Write(data[off : off+n]); err != nil {
				p.CloseWithError(err)
				return
			}
			off += n
		}
		p.CloseWithError(nil)
	}()
	got, err := io.ReadAll(p)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d of %d bytes, %v", len(got), len(data), err)
	}

	boom := errors.New("boom")
	p = newChanPipe(1024, 2)
	go func() {
		p.Write([]byte("partial"))
		p.CloseWithError(boom)
	}()
	if got, err := io.ReadAll(p); !errors.Is(err, boom) || len(got) != 0 && string(got) != "partial" {
		t.Errorf("writer error: got %q, %v", got, err)
	}

	// A reader that stops unblocks the writer with the reader's error.
	p = newChanPipe(1024, 1)
	stopped := errors.New("stopped")
	done := make(chan error, 1)
	go func() {
		_, err := p.Write(make([]byte, 1<<20))
		done <- err
	}()
	p.CloseRead(stopped)
	if err := <-done; !errors.Is(err, stopped) {
		t.Errorf("blocked writer got %v, want the reader's error", err)
	}
}

func TestPrefetch(t *testing.T) {
	want := []string{strings.Repeat("a", 3<<20), "b", strings.Repeat("c", 1<<20)}
	var srcs []Source
	for i, d := range want {
		d := d
		srcs = append(srcs, Source{Digest: string(rune('0' + i)), Open: func() (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader(d)), nil
		}})
	}
	failing := Source{Digest: "bad", Open: func() (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(strings.NewReader("xx"), errReader{})), nil
	}}
	srcs = append(srcs, failing)
	for _, budget := range []int{0, 2 << 20, 64 << 20} { // file only, mixed, memory only
		testPrefetch(t, srcs, want, budget)
	}
}

func testPrefetch(t *testing.T, srcs []Source, want []string, budget int) {
	t.Helper()
	dir := t.TempDir()
	out, stop, err := prefetch(srcs, dir, 2, budget)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for i, d := range want {
		for round := 0; round < 2; round++ { // the second Open re-reads the source
			rc, err := out[i].Open()
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || string(got) != d {
				t.Errorf("budget %d, layer %d round %d: %d bytes, %v", budget, i, round, len(got), err)
			}
		}
	}
	rc, _ := out[3].Open()
	if _, err := io.ReadAll(rc); !errors.Is(err, errBadLayer) {
		t.Errorf("failing layer: %v", err)
	}
}

var errBadLayer = errors.New("bad layer")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBadLayer }
