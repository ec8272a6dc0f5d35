package workspace

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// tarBufSize batches small tar writes before they reach the transport.
const tarBufSize = 1 << 20

// TarOptions tune WriteTar and TarPath.
type TarOptions struct {
	// Progress, when set, is called with the content bytes written so far.
	Progress func(done int64)
}

// tarWriter writes host entries into a tar stream.
type tarWriter struct {
	ctx  context.Context
	bw   *bufio.Writer
	tw   *tar.Writer
	opts TarOptions
	done int64
	dirs map[string]bool
	buf  []byte
}

func newTarWriter(ctx context.Context, w io.Writer, opts TarOptions) *tarWriter {
	bw := bufio.NewWriterSize(w, tarBufSize)
	return &tarWriter{ctx: ctx, bw: bw, tw: tar.NewWriter(bw), opts: opts, dirs: map[string]bool{}, buf: make([]byte, 256<<10)}
}

func (t *tarWriter) close() error {
	if err := t.tw.Close(); err != nil {
		return fmt.Errorf("finishing tar stream: %w", err)
	}
	if err := t.bw.Flush(); err != nil {
		return fmt.Errorf("writing tar stream: %w", err)
	}
	return nil
}

// add writes the host entry at abs under the archive name. Missing
// entries (deleted since listing) are skipped; types other than regular
// files, directories and symlinks are skipped.
func (t *tarWriter) add(abs, name string, fi fs.FileInfo) error {
	if err := t.ctx.Err(); err != nil {
		return err
	}
	if fi == nil {
		var err error
		if fi, err = os.Lstat(abs); errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading %s: %w", abs, err)
		}
	}
	if !copyable(fi.Mode()) {
		return nil
	}
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		var err error
		if link, err = os.Readlink(abs); err != nil {
			return fmt.Errorf("reading symlink %s: %w", abs, err)
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("describing %s: %w", abs, err)
	}
	hdr.Name = name
	if fi.IsDir() {
		if t.dirs[name] {
			return nil
		}
		t.dirs[name] = true
		hdr.Name = strings.TrimSuffix(name, "/") + "/"
	}
	hdr.Uname, hdr.Gname = "", ""
	// Whole seconds (plain ustar/GNU headers, no PAX record per file),
	// truncated rather than rounded so that a copy is never newer.
	hdr.ModTime = fi.ModTime().Truncate(time.Second)
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	if !fi.Mode().IsRegular() {
		return t.header(hdr, abs)
	}
	f, err := os.Open(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening %s: %w", abs, err)
	}
	defer f.Close()
	if err := t.header(hdr, abs); err != nil {
		return err
	}
	n, err := io.CopyBuffer(t.tw, io.LimitReader(f, hdr.Size), t.buf)
	t.done += n
	if err != nil {
		return fmt.Errorf("copying %s: %w", abs, err)
	}
	if n < hdr.Size { // shrank while being read: pad to the announced size
		if _, err := io.CopyN(t.tw, zeroReader{}, hdr.Size-n); err != nil {
			return fmt.Errorf("copying %s: %w", abs, err)
		}
	}
	if t.opts.Progress != nil {
		t.opts.Progress(t.done)
	}
	return nil
}

func (t *tarWriter) header(hdr *tar.Header, abs string) error {
	if err := t.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing tar header of %s: %w", abs, err)
	}
	return nil
}

// parents writes the directories leading to name (a slash path under
// root) that have not been written yet.
func (t *tarWriter) parents(root, name string) error {
	dir := path.Dir(name)
	if dir == "." || t.dirs[dir] {
		return nil
	}
	if err := t.parents(root, dir); err != nil {
		return err
	}
	return t.add(filepath.Join(root, filepath.FromSlash(dir)), dir, nil)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// WriteTar streams what the plan lists as a tar archive whose entries are
// named relative to the workspace root: "./" first, then the work-tree
// files with their parent directories, then ".git/…" when the plan carries
// the repository metadata. Modes, symlinks and modification times are
// kept; owners are recorded but the guest side usually resets them.
func WriteTar(ctx context.Context, w io.Writer, p *Plan, opts TarOptions) error {
	t := newTarWriter(ctx, w, opts)
	fi, err := os.Stat(p.Root)
	if err != nil {
		return fmt.Errorf("reading %s: %w", p.Root, err)
	}
	if err := t.add(p.Root, ".", fi); err != nil {
		return err
	}
	t.dirs["."] = true
	for _, f := range p.Files {
		if err := t.parents(p.Root, f.Path); err != nil {
			return err
		}
		if err := t.add(filepath.Join(p.Root, filepath.FromSlash(f.Path)), f.Path, nil); err != nil {
			return err
		}
	}
	if p.GitDir != "" {
		err := filepath.WalkDir(p.GitDir, func(abs string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return fmt.Errorf("reading %s: %w", abs, err)
			}
			if !d.IsDir() && strings.HasSuffix(d.Name(), ".lock") {
				return nil // a git operation in progress on the host
			}
			rel, _ := filepath.Rel(p.GitDir, abs)
			name := ".git"
			if rel != "." {
				name = ".git/" + filepath.ToSlash(rel)
			}
			return t.add(abs, name, nil)
		})
		if err != nil {
			return err
		}
	}
	return t.close()
}

// TarPath streams the host path src (a file, symlink target or directory
// tree; a symlink named on the command line is followed, symlinks inside
// a tree are kept) as a tar archive whose top entry is called name.
func TarPath(ctx context.Context, w io.Writer, src, name string, opts TarOptions) error {
	name = strings.Trim(filepath.ToSlash(name), "/")
	if name == "" || strings.Contains(name, "/") || name == ".." {
		return fmt.Errorf("archive name %q: want a single path element", name)
	}
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("reading %s: %w", src, err)
	}
	t := newTarWriter(ctx, w, opts)
	if !fi.IsDir() {
		if err := t.add(src, name, fi); err != nil {
			return err
		}
		return t.close()
	}
	err = filepath.WalkDir(src, func(abs string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("reading %s: %w", abs, err)
		}
		rel, _ := filepath.Rel(src, abs)
		entry := name
		var info fs.FileInfo
		if rel == "." {
			info = fi // the followed top-level directory
		} else {
			entry = name + "/" + filepath.ToSlash(rel)
		}
		return t.add(abs, entry, info)
	})
	if err != nil {
		return err
	}
	return t.close()
}

// ExtractOptions tune ExtractTar.
type ExtractOptions struct {
	// PreserveOwners keeps the archive's uid/gid (needs root); otherwise
	// entries belong to the extracting user.
	PreserveOwners bool
	// Map renames an entry (a cleaned slash path); "" skips it. Nil keeps
	// every name.
	Map func(name string) string
}

// ExtractResult counts what ExtractTar wrote.
type ExtractResult struct {
	Entries int
	Bytes   int64
}

// ExtractTar extracts a tar stream into dir (created if missing). Nothing
// is written outside dir: absolute names and ".." are refused and symlinks
// are never followed (os.Root). Modes, symlinks, hard links and
// modification times are kept.
func ExtractTar(r io.Reader, dir string, opts ExtractOptions) (ExtractResult, error) {
	var res ExtractResult
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, fmt.Errorf("creating %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return res, fmt.Errorf("opening %s: %w", dir, err)
	}
	defer root.Close()
	type dirMeta struct {
		name string
		hdr  *tar.Header
	}
	var dirs []dirMeta
	chown := opts.PreserveOwners && os.Geteuid() == 0
	tr := tar.NewReader(r)
	buf := make([]byte, 256<<10)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, fmt.Errorf("reading tar stream: %w", err)
		}
		name, ok := cleanRel(strings.TrimPrefix(hdr.Name, "./"))
		if !ok {
			if strings.Trim(hdr.Name, "./") == "" {
				name = "."
			} else {
				return res, fmt.Errorf("tar entry %q leaves the destination", hdr.Name)
			}
		}
		if opts.Map != nil {
			if name = opts.Map(name); name == "" {
				continue
			}
		}
		if name != "." {
			if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
				return res, fmt.Errorf("creating parent of %s: %w", name, err)
			}
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if fi, err := root.Lstat(name); err == nil && !fi.IsDir() {
				if err := root.Remove(name); err != nil {
					return res, fmt.Errorf("replacing %s: %w", name, err)
				}
			}
			if err := root.MkdirAll(name, 0o700); err != nil {
				return res, fmt.Errorf("creating %s: %w", name, err)
			}
			dirs = append(dirs, dirMeta{name, hdr})
			res.Entries++
			continue
		case tar.TypeReg, tar.TypeRegA:
			if err := removeNonDir(root, name); err != nil {
				return res, err
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return res, fmt.Errorf("creating %s: %w", name, err)
			}
			n, err := io.CopyBuffer(f, tr, buf)
			res.Bytes += n
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return res, fmt.Errorf("writing %s: %w", name, err)
			}
		case tar.TypeSymlink:
			if err := removeNonDir(root, name); err != nil {
				return res, err
			}
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return res, fmt.Errorf("creating symlink %s: %w", name, err)
			}
			if chown {
				_ = root.Lchown(name, hdr.Uid, hdr.Gid)
			}
			res.Entries++
			continue
		case tar.TypeLink:
			target, ok := cleanRel(hdr.Linkname)
			if ok && opts.Map != nil {
				target = opts.Map(target)
			}
			if !ok || target == "" {
				return res, fmt.Errorf("hard link %s points outside the archive (%q)", name, hdr.Linkname)
			}
			if err := removeNonDir(root, name); err != nil {
				return res, err
			}
			if err := root.Link(target, name); err != nil {
				return res, fmt.Errorf("creating hard link %s: %w", name, err)
			}
			res.Entries++
			continue
		default:
			continue // devices, fifos and unknown types are not recreated on the host
		}
		res.Entries++
		if chown {
			if err := root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
				return res, fmt.Errorf("changing owner of %s: %w", name, err)
			}
		}
		if err := root.Chmod(name, chmodMode(hdr)); err != nil {
			return res, fmt.Errorf("changing mode of %s: %w", name, err)
		}
		if !hdr.ModTime.IsZero() {
			_ = root.Chtimes(name, hdr.ModTime, hdr.ModTime)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if chown {
			_ = root.Lchown(d.name, d.hdr.Uid, d.hdr.Gid)
		}
		if err := root.Chmod(d.name, chmodMode(d.hdr)); err != nil {
			return res, fmt.Errorf("changing mode of %s: %w", d.name, err)
		}
		if !d.hdr.ModTime.IsZero() {
			_ = root.Chtimes(d.name, d.hdr.ModTime, d.hdr.ModTime)
		}
	}
	return res, nil
}

// chmodMode is the permission and setuid/setgid/sticky bits of a tar entry.
func chmodMode(hdr *tar.Header) fs.FileMode {
	return hdr.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

func removeNonDir(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w", name, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory", name)
	}
	if err := root.Remove(name); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("replacing %s: %w", name, err)
	}
	return nil
}
