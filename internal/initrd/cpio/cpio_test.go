package cpio

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

type entry struct {
	name   string
	mode   uint32
	data   string
	major  uint32
	minor  uint32
	isLink bool
}

func sample(t *testing.T) ([]byte, []entry) {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	want := []entry{
		{name: "dev", mode: TypeDir | 0o755},
		{name: "dev/console", mode: TypeChar | 0o600, major: 5, minor: 1},
		{name: "dev/null", mode: TypeChar | 0o666, major: 1, minor: 3},
		{name: "etc", mode: TypeDir | 0o755},
		{name: "etc/a", mode: TypeReg | 0o644, data: "a"},          // 1 byte: 3 bytes padding
		{name: "etc/abcd", mode: TypeReg | 0o644, data: "abcd"},    // aligned
		{name: "etc/empty", mode: TypeReg | 0o600, data: ""},       // no data
		{name: "init", mode: TypeReg | 0o755, data: "#!/bin/sh\n"}, // 10 bytes
		{name: "bin", mode: TypeSymlink | 0o777, data: "usr/bin", isLink: true},
	}
	for _, e := range want {
		var err error
		switch e.mode & TypeMask {
		case TypeDir:
			err = w.Dir(e.name, os.FileMode(e.mode&0o777))
		case TypeChar:
			err = w.CharDev(e.name, os.FileMode(e.mode&0o777), e.major, e.minor)
		case TypeSymlink:
			err = w.Symlink(e.name, e.data)
		default:
			if e.name == "init" {
				err = w.FileFrom("/"+e.name, os.FileMode(e.mode&0o777), int64(len(e.data)), strings.NewReader(e.data))
			} else {
				err = w.File(e.name, os.FileMode(e.mode&0o777), []byte(e.data))
			}
		}
		if err != nil {
			t.Fatalf("adding %s: %v", e.name, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), want
}

func TestRoundTrip(t *testing.T) {
	b, want := sample(t)
	if len(b)%4 != 0 {
		t.Fatalf("archive length %d is not 4-byte aligned", len(b))
	}
	r := NewReader(bytes.NewReader(b))
	var inodes []uint32
	for i := 0; ; i++ {
		h, err := r.Next()
		if err == io.EOF {
			if i != len(want) {
				t.Fatalf("read %d entries, want %d", i, len(want))
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		e := want[i]
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != e.name || h.Mode != e.mode || string(data) != e.data || h.Major != e.major || h.Minor != e.minor {
			t.Errorf("entry %d = %+v data %q, want %+v", i, h, data, e)
		}
		inodes = append(inodes, h.Inode)
	}
	if slices.Contains(inodes, 0) || len(slices.Compact(slices.Clone(inodes))) != len(inodes) {
		t.Errorf("inodes %v are not unique and non-zero", inodes)
	}
	// Skipping data without reading it also works.
	r = NewReader(bytes.NewReader(b))
	n := 0
	for {
		_, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != len(want) {
		t.Fatalf("skipping reader saw %d entries", n)
	}
}

func TestDeterministic(t *testing.T) {
	a, _ := sample(t)
	b, _ := sample(t)
	if !bytes.Equal(a, b) {
		t.Fatal("same input produced different archives")
	}
}

func TestRejectsBadNames(t *testing.T) {
	for _, name := range []string{"", "/", "TRAILER!!!", "a\x00b"} {
		w := NewWriter(io.Discard)
		if err := w.File(name, 0o644, nil); err == nil {
			t.Errorf("File(%q) succeeded", name)
		}
	}
	w := NewWriter(io.Discard)
	w.Close()
	if err := w.Dir("x", 0o755); err == nil {
		t.Error("write after Close succeeded")
	}
}

func TestReaderRejectsGarbage(t *testing.T) {
	if _, err := NewReader(strings.NewReader(strings.Repeat("x", 200))).Next(); err == nil {
		t.Fatal("garbage accepted")
	}
	b, _ := sample(t)
	r := NewReader(bytes.NewReader(b[:len(b)/2]))
	var err error
	for err == nil {
		_, err = r.Next()
	}
	if err == io.EOF {
		t.Fatal("truncated archive read to a clean EOF")
	}
}

// TestGNUCpio checks the archive with GNU cpio: listing and extraction.
func TestGNUCpio(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed")
	}
	b, want := sample(t)
	cmd := exec.Command("cpio", "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	var names []string
	for _, e := range want {
		names = append(names, e.name)
	}
	if got := strings.Fields(string(out)); !slices.Equal(got, names) {
		t.Fatalf("cpio -t listed %v, want %v", got, names)
	}

	dir := t.TempDir()
	cmd = exec.Command("cpio", "-idv", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(b)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -idv: %v: %s", err, out)
	}
	for _, e := range want {
		p := filepath.Join(dir, e.name)
		st, err := os.Lstat(p)
		if err != nil {
			t.Errorf("extracted %s: %v", e.name, err)
			continue
		}
		switch e.mode & TypeMask {
		case TypeReg:
			data, _ := os.ReadFile(p)
			if string(data) != e.data || uint32(st.Mode().Perm()) != e.mode&0o777 {
				t.Errorf("%s: content %q mode %v", e.name, data, st.Mode())
			}
		case TypeSymlink:
			if target, _ := os.Readlink(p); target != e.data {
				t.Errorf("%s -> %q, want %q", e.name, target, e.data)
			}
		case TypeDir:
			if !st.IsDir() {
				t.Errorf("%s is not a directory", e.name)
			}
		case TypeChar:
			sys := st.Sys().(*syscall.Stat_t)
			if st.Mode()&os.ModeCharDevice == 0 {
				if os.Geteuid() != 0 {
					continue // cpio cannot mknod without root
				}
				t.Errorf("%s is not a character device: %v", e.name, st.Mode())
				continue
			}
			if maj, min := uint32(sys.Rdev>>8&0xfff), uint32(sys.Rdev&0xff); maj != e.major || min != e.minor {
				t.Errorf("%s is %d:%d, want %d:%d", e.name, maj, min, e.major, e.minor)
			}
		}
	}
}
