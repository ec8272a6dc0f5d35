package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// SeedMarker marks a work disk that has been seeded from the base image.
const SeedMarker = ".banger-seeded"

// SeedWorkDir copies src (the base image's /root) into dst (the freshly
// mounted work disk) unless dst already carries SeedMarker, then writes
// the marker. Owners, modes, times and symlinks are kept; dst itself takes
// src's owner and mode. It reports whether it copied anything.
func SeedWorkDir(src, dst string) (bool, error) {
	marker := filepath.Join(dst, SeedMarker)
	if _, err := os.Lstat(marker); err == nil {
		return false, nil
	}
	if fi, err := os.Lstat(src); err == nil && fi.IsDir() {
		if err := CopyTree(src, dst); err != nil {
			return false, err
		}
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("checking %s: %w", src, err)
	} else {
		if err := os.Chmod(dst, 0o700); err != nil {
			return false, err
		}
	}
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		return false, fmt.Errorf("writing %s: %w", marker, err)
	}
	unix.Sync()
	return true, nil
}

// CopyTree copies the contents of src into dst (which must exist),
// preserving owners, modes, times, symlinks, device nodes and hard links,
// and gives dst src's metadata.
func CopyTree(src, dst string) error {
	type meta struct {
		path string
		fi   fs.FileInfo
	}
	var dirs []meta
	links := map[[2]uint64]string{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		switch {
		case fi.IsDir():
			if rel != "." {
				if err := os.Mkdir(target, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
					return err
				}
			}
			dirs = append(dirs, meta{target, fi})
			return nil
		case fi.Mode().IsRegular():
			key := [2]uint64{st.Dev, st.Ino}
			if first, ok := links[key]; ok && st.Nlink > 1 {
				return os.Link(first, target)
			}
			if err := copyFile(p, target); err != nil {
				return err
			}
			if st.Nlink > 1 {
				links[key] = target
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(l, target); err != nil {
				return err
			}
		case fi.Mode()&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe) != 0:
			if err := unix.Mknod(target, st.Mode, int(st.Rdev)); err != nil {
				return err
			}
		default:
			return nil // sockets
		}
		return applyMeta(target, fi)
	})
	if err != nil {
		return fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	slices.Reverse(dirs)
	for _, d := range dirs {
		if err := applyMeta(d.path, d.fi); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func applyMeta(path string, fi fs.FileInfo) error {
	st := fi.Sys().(*syscall.Stat_t)
	if err := os.Lchown(path, int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("changing owner of %s: %w", path, err)
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		if err := os.Chmod(path, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return fmt.Errorf("changing mode of %s: %w", path, err)
		}
	}
	ts := []unix.Timespec{{Sec: st.Atim.Sec, Nsec: st.Atim.Nsec}, {Sec: st.Mtim.Sec, Nsec: st.Mtim.Nsec}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times of %s: %w", path, err)
	}
	return nil
}
