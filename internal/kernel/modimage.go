package kernel

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/ext4"
	"github.com/bangerdev/banger/internal/lookpath"
)

// ModulesLabel is the volume label of a modules image.
const ModulesLabel = "banger-modules"

// modulesFormat changes when the content of a modules image changes for the
// same kernel, so that cached images of an older format are not reused.
const modulesFormat = "modules-v1"

// ErrNoDepmod is returned when depmod(8) (Debian package kmod) is missing.
var ErrNoDepmod = errkind.New(errkind.Unavailable, "depmod not found (install kmod)")

// ModulesImage returns a read-only ext4 image holding a kernel's module tree
// (modulesDir is its lib/modules/<release>) with the index files depmod
// generates (modules.dep, modules.alias, …), so that modprobe works in a
// guest that mounts it at /lib/modules/<release>. Images are cached in
// cacheDir under a name derived from kernelID; a cached image is returned
// as is. The image is written beside its final name and renamed into place.
func ModulesImage(ctx context.Context, cacheDir, kernelID, modulesDir, release string) (string, error) {
	if kernelID == "" || release == "" || strings.ContainsAny(release, "/\x00") || release == "." || release == ".." {
		return "", errkind.New(errkind.InvalidArgument, "modules image: bad kernel id %q or release %q", kernelID, release)
	}
	sum := sha256.Sum256([]byte(modulesFormat + "\x00" + kernelID + "\x00" + release))
	path := filepath.Join(cacheDir, "modules-"+hex.EncodeToString(sum[:])[:32]+".ext4")
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		now := time.Now()
		os.Chtimes(path, now, now) // mark as used
		return path, nil
	}
	depmod, err := lookpath.Find("depmod")
	if err != nil {
		return "", ErrNoDepmod
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("creating modules cache %s: %w", cacheDir, err)
	}
	tmp, err := os.MkdirTemp(cacheDir, ".modules-*")
	if err != nil {
		return "", fmt.Errorf("creating modules staging dir: %w", err)
	}
	defer os.RemoveAll(tmp)

	// depmod writes its index files into <base>/lib/modules/<release>: a
	// staging tree whose entries link to the kernel's own (read-only) tree.
	tree := filepath.Join(tmp, "lib", "modules", release)
	if err := linkTree(modulesDir, tree); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, depmod, "-a", "-b", tmp, release)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("running depmod for %s: %w: %s", release, err, strings.TrimSpace(string(out)))
	}

	staged := filepath.Join(tmp, "modules.ext4")
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeTreeTar(ctx, pw, tree)) }()
	_, err = ext4.FromTar(ctx, pr, staged, ext4.Options{Label: ModulesLabel})
	pr.CloseWithError(errors.New("ext4 writer stopped"))
	if err != nil {
		return "", fmt.Errorf("writing modules image of %s: %w", release, err)
	}
	if err := os.Rename(staged, path); err != nil {
		return "", fmt.Errorf("publishing modules image: %w", err)
	}
	return path, nil
}

// linkTree creates dst with one symlink per entry of src, except the
// build/source links a kernel package points at its headers.
func linkTree(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("reading modules dir: %w", err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		if skipModulesEntry(e.Name()) {
			continue
		}
		if err := os.Symlink(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return fmt.Errorf("staging modules dir: %w", err)
		}
	}
	return nil
}

func skipModulesEntry(name string) bool { return name == "build" || name == "source" }

// writeTreeTar writes dir as a tar stream of directories and regular files
// owned by root. Symlinks directly in dir are followed (they are linkTree's);
// other symlinks are kept as links.
func writeTreeTar(ctx context.Context, w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		top := filepath.Join(dir, e.Name())
		real, err := filepath.EvalSymlinks(top)
		if err != nil {
			return fmt.Errorf("resolving %s: %w", top, err)
		}
		err = filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			rel, err := filepath.Rel(real, p)
			if err != nil {
				return err
			}
			name := filepath.ToSlash(filepath.Join(e.Name(), rel))
			return addTarEntry(tw, p, name, d)
		})
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

func addTarEntry(tw *tar.Writer, path, name string, d fs.DirEntry) error {
	fi, err := d.Info()
	if err != nil {
		return err
	}
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(path); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	hdr.Name, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = name, 0, 0, "root", "root"
	if fi.IsDir() {
		hdr.Name += "/"
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(tw, f)
	return err
}
