package agent

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/errkind"
)

func (s *Server) handlePut(st io.ReadWriter, req *agentproto.PutRequest) {
	if req == nil || req.Dir == "" || !filepath.IsAbs(req.Dir) {
		_, _ = io.Copy(io.Discard, st)
		writeResponse(st, errResponse(errkind.New(errkind.InvalidArgument, "put: the destination must be an absolute directory")))
		return
	}
	res, err := ExtractTar(st, req.Dir, PutOptions{PreserveOwners: req.PreserveOwners, UID: req.UID, GID: req.GID})
	// The host half-closes after the archive; read up to that point (tar
	// padding, or the rest after an error) before answering.
	_, _ = io.Copy(io.Discard, st)
	if err != nil {
		writeResponse(st, errResponse(err))
		return
	}
	writeResponse(st, &agentproto.Response{Put: &res})
}

// PutOptions controls ExtractTar.
type PutOptions struct {
	PreserveOwners bool
	UID, GID       int
}

// ExtractTar extracts a tar stream into dir (created if missing). Entry
// names may not leave dir, and nothing is written through a symlink. Modes,
// symlinks, hard links, device nodes and modification times are kept;
// owners are kept with PreserveOwners, else set to UID:GID.
func ExtractTar(r io.Reader, dir string, opts PutOptions) (agentproto.PutResult, error) {
	var res agentproto.PutResult
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, fmt.Errorf("creating %s: %w", dir, err)
	}
	type dirMeta struct {
		path  string
		hdr   *tar.Header
		owner [2]int
	}
	var dirs []dirMeta
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, fmt.Errorf("reading tar stream: %w", err)
		}
		rel, err := cleanEntryName(hdr.Name)
		if err != nil {
			return res, err
		}
		if rel == "." {
			if hdr.Typeflag == tar.TypeDir {
				dirs = append(dirs, dirMeta{dir, hdr, owner(hdr, opts)})
			}
			continue
		}
		target := filepath.Join(dir, rel)
		if err := checkNoSymlinkParents(dir, rel); err != nil {
			return res, err
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return res, fmt.Errorf("creating parent of %s: %w", target, err)
		}
		uidgid := owner(hdr, opts)
		mode := chmodMode(hdr)
		switch hdr.Typeflag {
		case tar.TypeDir:
			fi, err := os.Lstat(target)
			if err == nil && !fi.IsDir() {
				if err := os.Remove(target); err != nil {
					return res, fmt.Errorf("replacing %s: %w", target, err)
				}
			}
			if err := os.Mkdir(target, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return res, fmt.Errorf("creating directory %s: %w", target, err)
			}
			dirs = append(dirs, dirMeta{target, hdr, uidgid})
			res.Entries++
			continue
		case tar.TypeReg, tar.TypeRegA:
			if err := removeNonDir(target); err != nil {
				return res, err
			}
			f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
			if err != nil {
				return res, fmt.Errorf("creating %s: %w", target, err)
			}
			n, err := io.Copy(f, tr)
			res.Bytes += n
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return res, fmt.Errorf("writing %s: %w", target, err)
			}
		case tar.TypeSymlink:
			if err := removeNonDir(target); err != nil {
				return res, err
			}
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return res, fmt.Errorf("creating symlink %s: %w", target, err)
			}
		case tar.TypeLink:
			lrel, err := cleanEntryName(hdr.Linkname)
			if err != nil {
				return res, err
			}
			if err := checkNoSymlinkParents(dir, lrel); err != nil {
				return res, err
			}
			if err := removeNonDir(target); err != nil {
				return res, err
			}
			if err := os.Link(filepath.Join(dir, lrel), target); err != nil {
				return res, fmt.Errorf("creating hard link %s: %w", target, err)
			}
			res.Entries++
			continue // a hard link shares its target's metadata
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			if err := removeNonDir(target); err != nil {
				return res, err
			}
			devMode := uint32(unix.S_IFIFO)
			switch hdr.Typeflag {
			case tar.TypeChar:
				devMode = unix.S_IFCHR
			case tar.TypeBlock:
				devMode = unix.S_IFBLK
			}
			dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
			if err := unix.Mknod(target, devMode|0o600, int(dev)); err != nil {
				return res, fmt.Errorf("creating device node %s: %w", target, err)
			}
		default:
			continue // pax/global headers are consumed by archive/tar; others are skipped
		}
		res.Entries++
		if err := os.Lchown(target, uidgid[0], uidgid[1]); err != nil && !errors.Is(err, syscall.EPERM) {
			return res, fmt.Errorf("changing owner of %s: %w", target, err)
		}
		if hdr.Typeflag != tar.TypeSymlink {
			// After chown, which clears set-id bits.
			if err := os.Chmod(target, mode); err != nil {
				return res, fmt.Errorf("changing mode of %s: %w", target, err)
			}
		}
		if err := setTimes(target, hdr.ModTime); err != nil {
			return res, err
		}
	}
	// Directory metadata last, deepest first, so that read-only directories
	// and mtimes are not disturbed by their children.
	slices.Reverse(dirs)
	for _, d := range dirs {
		if err := os.Lchown(d.path, d.owner[0], d.owner[1]); err != nil && !errors.Is(err, syscall.EPERM) {
			return res, fmt.Errorf("changing owner of %s: %w", d.path, err)
		}
		mode := chmodMode(d.hdr)
		if err := os.Chmod(d.path, mode); err != nil {
			return res, fmt.Errorf("changing mode of %s: %w", d.path, err)
		}
		if err := setTimes(d.path, d.hdr.ModTime); err != nil {
			return res, err
		}
	}
	return res, nil
}

func owner(hdr *tar.Header, opts PutOptions) [2]int {
	if opts.PreserveOwners {
		return [2]int{hdr.Uid, hdr.Gid}
	}
	return [2]int{opts.UID, opts.GID}
}

// chmodMode is the permission and setuid/setgid/sticky bits of a tar entry.
func chmodMode(hdr *tar.Header) os.FileMode {
	return hdr.FileInfo().Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
}

func setTimes(path string, mtime time.Time) error {
	if mtime.IsZero() {
		return nil
	}
	ts := []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times of %s: %w", path, err)
	}
	return nil
}

// cleanEntryName returns a tar entry name relative to the extraction dir,
// rejecting absolute names and names that climb out with "..".
func cleanEntryName(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", errkind.New(errkind.InvalidArgument, "tar entry %q is absolute", name)
	}
	c := filepath.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", errkind.New(errkind.InvalidArgument, "tar entry %q leaves the destination", name)
	}
	return c, nil
}

// checkNoSymlinkParents makes sure no directory between root and rel is a
// symlink (which could point outside root).
func checkNoSymlinkParents(root, rel string) error {
	parts := strings.Split(rel, "/")
	p := root
	for _, part := range parts[:len(parts)-1] {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("checking %s: %w", p, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return errkind.New(errkind.InvalidArgument, "tar entry %q goes through symlink %s", rel, p)
		}
		if !fi.IsDir() {
			return errkind.New(errkind.InvalidArgument, "tar entry %q: %s is not a directory", rel, p)
		}
	}
	return nil
}

func removeNonDir(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w", p, err)
	}
	if fi.IsDir() {
		return errkind.New(errkind.Conflict, "%s is a directory", p)
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("replacing %s: %w", p, err)
	}
	return nil
}

func (s *Server) handleGet(st io.ReadWriter, req *agentproto.GetRequest) {
	if req == nil || !filepath.IsAbs(req.Path) {
		writeResponse(st, errResponse(errkind.New(errkind.InvalidArgument, "get: the path must be absolute")))
		return
	}
	if _, err := os.Lstat(req.Path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = errkind.New(errkind.NotFound, "%s does not exist in the guest", req.Path)
		}
		writeResponse(st, errResponse(err))
		return
	}
	writeResponse(st, &agentproto.Response{})
	fw := agentproto.NewFrameWriter(st)
	w := &frameDataWriter{fw: fw}
	err := WriteTar(w, req.Path)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	_ = fw.WriteFrame(agentproto.FrameEnd, []byte(msg))
}

type frameDataWriter struct{ fw *agentproto.FrameWriter }

func (w *frameDataWriter) Write(p []byte) (int, error) {
	if err := w.fw.WriteFrame(agentproto.FrameData, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteTar writes path (a file, symlink or directory tree) as a tar stream
// whose entries are named from path's base name. Symlinks are not followed;
// sockets are skipped.
func WriteTar(w io.Writer, path string) error {
	path = filepath.Clean(path)
	parent, base := filepath.Split(path)
	if path == "/" {
		parent, base = "/", "."
	}
	tw := tar.NewWriter(w)
	links := map[[2]uint64]string{}
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSocket != 0 {
			return nil
		}
		rel, err := filepath.Rel(parent, p)
		if err != nil {
			return err
		}
		if base == "." {
			rel, _ = filepath.Rel("/", p)
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("describing %s: %w", p, err)
		}
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() && hdr.Name != "." {
			hdr.Name += "/"
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Nlink > 1 {
			key := [2]uint64{st.Dev, st.Ino}
			if first, ok := links[key]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				links[key] = hdr.Name
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("writing tar header for %s: %w", p, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.CopyN(tw, f, hdr.Size)
			f.Close()
			if err != nil {
				return fmt.Errorf("reading %s: %w", p, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
