package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// sameTree loop-mounts two ext4 images read-only and compares every path:
// type, mode, owner, size, content hash, symlink target, device number,
// link count, mtime and extended attributes (the root directory itself is
// skipped: no layer describes it). It needs root.
func sameTree(a, b, work string) error {
	ma, err := manifestOf(a, filepath.Join(work, "mnt-a"))
	if err != nil {
		return err
	}
	mb, err := manifestOf(b, filepath.Join(work, "mnt-b"))
	if err != nil {
		return err
	}
	var diffs []string
	for p, x := range ma {
		if y, ok := mb[p]; !ok {
			diffs = append(diffs, "only in banger: "+p)
		} else if x != y && p != "." {
			// The root directory is the one path the layers do not
			// describe: umoci stamps it with the unpack time.
			diffs = append(diffs, fmt.Sprintf("%s: banger %s, peer %s", p, x, y))
		}
	}
	for p := range mb {
		if _, ok := ma[p]; !ok {
			diffs = append(diffs, "only in peer: "+p)
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		if len(diffs) > 20 {
			diffs = append(diffs[:20], fmt.Sprintf("… %d more", len(diffs)-20))
		}
		return fmt.Errorf("images differ:\n%s", strings.Join(diffs, "\n"))
	}
	logf("verified: banger and peer images hold the same %d paths (metadata, content, xattrs)", len(ma))
	return nil
}

func manifestOf(img, mnt string) (map[string]string, error) {
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, err
	}
	if out, err := exec.Command("mount", "-o", "loop,ro,noload", img, mnt).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mounting %s: %w: %s", img, err, out)
	}
	defer exec.Command("umount", mnt).Run()
	m := map[string]string{}
	err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		if rel == "lost+found" {
			return filepath.SkipDir
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode=%o uid=%d gid=%d mtime=%d", st.Mode, st.Uid, st.Gid, st.Mtim.Sec)
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			h, err := hashFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" size=%d nlink=%d sha=%s", st.Size, st.Nlink, h)
		case syscall.S_IFLNK:
			t, _ := os.Readlink(p)
			desc += " -> " + t
		case syscall.S_IFCHR, syscall.S_IFBLK:
			desc += fmt.Sprintf(" rdev=%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		desc += " xattrs=" + xattrsOf(p)
		m[rel] = desc
		return nil
	})
	return m, err
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func xattrsOf(p string) string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n <= 0 {
		return ""
	}
	var parts []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		v := make([]byte, 4096)
		k, _ := unix.Lgetxattr(p, name, v)
		if k < 0 {
			k = 0
		}
		parts = append(parts, name+"="+hex.EncodeToString(v[:k]))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
