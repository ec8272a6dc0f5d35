package imagepull

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func compressed(t *testing.T, kind string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch kind {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "zstd":
		w, _ = zstd.NewWriter(&buf)
	default:
		return data
	}
	w.Write(data)
	w.Close()
	return buf.Bytes()
}

func TestDecompress(t *testing.T) {
	data := []byte(strings.Repeat("layer data 0123456789\n", 50000))
	modes := map[string]bool{"pure Go": false}
	if igzipPath() != "" {
		modes["igzip"] = true
	} else {
		t.Log("igzip not installed: testing the pure-Go path only")
	}
	for _, kind := range []string{"gzip", "zstd", "plain"} {
		for mode, external := range modes {
			blob := compressed(t, kind, data)
			rc, err := decompress(io.NopCloser(bytes.NewReader(blob)), external)
			if err != nil {
				t.Fatalf("%s/%s: %v", kind, mode, err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s/%s: %d bytes, %v", kind, mode, len(got), err)
			}
			if kind == "plain" {
				continue
			}
			// A truncated stream must fail, not end early.
			rc, err = decompress(io.NopCloser(bytes.NewReader(blob[:len(blob)/2])), external)
			if err == nil {
				_, err = io.ReadAll(rc)
				rc.Close()
			}
			if err == nil {
				t.Errorf("%s/%s: truncated stream read without error", kind, mode)
			}
			// A failing source is reported as such.
			rc, err = decompress(io.NopCloser(io.MultiReader(bytes.NewReader(blob[:len(blob)/2]), errReader{})), external)
			if err == nil {
				_, err = io.ReadAll(rc)
				rc.Close()
			}
			if !errors.Is(err, errBadLayer) {
				t.Errorf("%s/%s: failing source gave %v", kind, mode, err)
			}
			// A regular file (igzip reads it directly).
			path := filepath.Join(t.TempDir(), "blob")
			os.WriteFile(path, blob, 0o644)
			f, _ := os.Open(path)
			rc, err = decompress(f, external)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s/%s from a file: %d bytes, %v", kind, mode, len(got), err)
			}
			rc.Close()
			// Closing before the end stops the decompressor.
			rc, err = decompress(io.NopCloser(bytes.NewReader(blob)), external)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadFull(rc, make([]byte, 10))
			if err := rc.Close(); err != nil {
				t.Errorf("%s/%s: early close: %v", kind, mode, err)
			}
		}
	}
}
