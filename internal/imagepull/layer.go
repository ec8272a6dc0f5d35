package imagepull

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Source is one layer as Flatten consumes it: its digest (named in errors)
// and a way to open its uncompressed tar stream. Open may be called more
// than once (rarely: to recover a hardlink whose target an upper layer
// deleted).
type Source struct {
	Digest string
	Open   func() (io.ReadCloser, error)
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// Decompress returns the uncompressed stream of a layer blob, detecting
// gzip, zstd or plain tar from its first bytes. Closing it closes r. gzip
// goes through igzip (Debian package isal) when it is installed, else
// through klauspost/compress.
func Decompress(r io.ReadCloser) (io.ReadCloser, error) {
	return decompress(r, true)
}

func decompress(r io.ReadCloser, external bool) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, gzipMagic) && external && igzipPath() != "":
		return startIgzip(igzipPath(), r, br)
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("opening gzip layer: %w", err)
		}
		return &stackedCloser{Reader: zr, closers: []io.Closer{zr, r}}, nil
	case bytes.HasPrefix(magic, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(2), zstd.WithDecoderLowmem(true))
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("opening zstd layer: %w", err)
		}
		return &stackedCloser{Reader: zr, closers: []io.Closer{zstdCloser{zr}, r}}, nil
	}
	return &stackedCloser{Reader: br, closers: []io.Closer{r}}, nil
}

type zstdCloser struct{ d *zstd.Decoder }

func (z zstdCloser) Close() error { z.d.Close(); return nil }

type stackedCloser struct {
	io.Reader
	closers []io.Closer
}

func (s *stackedCloser) Close() error {
	var first error
	for _, c := range s.closers {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Sources returns the image's layers (bottom to top) for Flatten, reading
// the blobs from the cache, or following their download while Pull's
// streaming variant is still fetching them.
func (img *Image) Sources() []Source {
	out := make([]Source, len(img.Layers))
	for i, l := range img.Layers {
		i, l := i, l
		out[i] = Source{Digest: l.Digest, Open: func() (io.ReadCloser, error) {
			var rc io.ReadCloser
			var err error
			if img.fetches != nil && img.fetches[i] != nil {
				rc, err = img.fetches[i].Open()
			} else {
				h, herr := v1.NewHash(l.Digest)
				if herr != nil {
					return nil, herr
				}
				rc, err = os.Open(img.cache.BlobPath(h))
			}
			if err != nil {
				return nil, fmt.Errorf("opening layer %s: %w", l.Digest, err)
			}
			return decompress(rc, !img.pureGo)
		}}
	}
	return out
}

// SourcesFromV1 adapts ggcr layers (bottom to top) for Flatten, for callers
// and tests that already hold v1.Layer values.
func SourcesFromV1(layers []v1.Layer) ([]Source, error) {
	out := make([]Source, len(layers))
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, fmt.Errorf("layer %d digest: %w", i, err)
		}
		l := l
		out[i] = Source{Digest: d.String(), Open: func() (io.ReadCloser, error) {
			rc, err := l.Compressed()
			if err != nil {
				return nil, err
			}
			return Decompress(rc)
		}}
	}
	return out, nil
}
