package imagecat

import (
	"context"
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// holeReader reads a file sequentially, producing the zeros of its holes
// from memory instead of reading them (SEEK_DATA/SEEK_HOLE), which makes
// bundling a mostly empty filesystem image cheap.
type holeReader struct {
	ctx  context.Context
	f    *os.File
	off  int64
	size int64
	// [data, hole) is the current data extent; off < data means a hole.
	data, hole int64
	noSeek     bool
}

func newHoleReader(ctx context.Context, f *os.File, size int64) *holeReader {
	return &holeReader{ctx: ctx, f: f, size: size, data: -1, hole: -1}
}

func (h *holeReader) Read(p []byte) (int, error) {
	if err := h.ctx.Err(); err != nil {
		return 0, err
	}
	if h.off >= h.size {
		return 0, io.EOF
	}
	if rest := h.size - h.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	if h.noSeek {
		n, err := h.f.ReadAt(p, h.off)
		h.off += int64(n)
		if err == io.EOF && n > 0 {
			err = nil
		}
		return n, err
	}
	if h.off >= h.hole {
		data, err := unix.Seek(int(h.f.Fd()), h.off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			data = h.size // only a hole remains
		case err != nil:
			h.noSeek = true
			return h.Read(p)
		}
		hole := h.size
		if data < h.size {
			if hole, err = unix.Seek(int(h.f.Fd()), data, unix.SEEK_HOLE); err != nil {
				h.noSeek = true
				return h.Read(p)
			}
		}
		h.data, h.hole = data, hole
	}
	if h.off < h.data {
		n := min(int64(len(p)), h.data-h.off)
		clear(p[:n])
		h.off += n
		return int(n), nil
	}
	n := min(int64(len(p)), h.hole-h.off)
	got, err := h.f.ReadAt(p[:n], h.off)
	h.off += int64(got)
	if err == io.EOF && got > 0 {
		err = nil
	}
	return got, err
}
