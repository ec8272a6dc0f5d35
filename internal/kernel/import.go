package kernel

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/fsatomic"
	"github.com/bangerdev/banger/internal/vmlinux"
)

// Files are the inputs of ImportFiles. At least one of Vmlinuz and Vmlinux
// is required; each is recognised by content, so a bzImage passed as
// Vmlinux (or an ELF passed as Vmlinuz) is accepted.
type Files struct {
	Vmlinuz    string // bzImage; vmlinux is extracted from it when Vmlinux is empty
	Vmlinux    string // uncompressed ELF kernel
	Initrd     string // optional initrd, stored as is
	ModulesDir string // optional lib/modules/<release> (or a lib/modules holding one release)
	Config     string // optional kernel build config
}

// ImportFiles stores a kernel from files on the host under name.
func (s *Store) ImportFiles(ctx context.Context, name string, f Files) (Kernel, error) {
	if f.Vmlinuz == "" && f.Vmlinux == "" {
		return Kernel{}, errkind.New(errkind.InvalidArgument, "importing kernel %s: a vmlinuz (bzImage) or vmlinux (ELF) file is required", name)
	}
	for _, p := range []string{f.Vmlinuz, f.Vmlinux, f.Initrd, f.Config} {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			return Kernel{}, errkind.New(errkind.NotFound, "importing kernel %s: file %s not found", name, p)
		}
	}
	modules := ""
	if f.ModulesDir != "" {
		var err error
		if modules, err = modulesRoot(f.ModulesDir); err != nil {
			return Kernel{}, fmt.Errorf("importing kernel %s: %w", name, err)
		}
	}
	src := f.Vmlinuz
	if src == "" {
		src = f.Vmlinux
	}
	source := "files:" + src
	return s.build(ctx, name, func(staging string) (Manifest, error) {
		m, err := installKernel(staging, f.Vmlinuz, f.Vmlinux)
		if err != nil {
			return m, err
		}
		m.Source = source
		if f.Initrd != "" {
			if err := copyFile(f.Initrd, filepath.Join(staging, InitrdFile)); err != nil {
				return m, err
			}
			m.HasInitrd = true
		}
		if f.Config != "" {
			if err := copyFile(f.Config, filepath.Join(staging, ConfigFile)); err != nil {
				return m, err
			}
		}
		if modules != "" {
			if err := copyTree(ctx, modules, filepath.Join(staging, ModulesDir)); err != nil {
				return m, err
			}
			m.HasModules = true
		}
		return m, nil
	})
}

// ImportDeb stores the kernel of a Debian linux-image package under name:
// boot/vmlinuz-<release> (vmlinux is extracted from it), boot/config-* and
// lib/modules/<release>. The package is read in pure Go (an installed xz is
// used to decompress data.tar.xz faster when present).
func (s *Store) ImportDeb(ctx context.Context, name, debPath string) (Kernel, error) {
	return s.importDeb(ctx, name, debPath, "deb:"+filepath.Base(debPath))
}

func (s *Store) importDeb(ctx context.Context, name, debPath, source string) (Kernel, error) {
	if fi, err := os.Stat(debPath); err != nil || !fi.Mode().IsRegular() {
		return Kernel{}, errkind.New(errkind.NotFound, "importing kernel %s: package %s not found", name, debPath)
	}
	return s.build(ctx, name, func(staging string) (Manifest, error) {
		tmp := filepath.Join(staging, ".deb")
		if err := os.Mkdir(tmp, 0o755); err != nil {
			return Manifest{}, err
		}
		c, err := extractDeb(ctx, debPath, tmp)
		if err != nil {
			return Manifest{}, fmt.Errorf("reading %s: %w", filepath.Base(debPath), err)
		}
		m, err := installKernel(staging, c.vmlinuz, "")
		if err != nil {
			return m, err
		}
		m.Source = source
		if m.Version == "" {
			m.Version = c.release
		}
		if c.config != "" {
			if err := os.Rename(c.config, filepath.Join(staging, ConfigFile)); err != nil {
				return m, err
			}
		}
		if c.modules != "" {
			if err := os.Rename(c.modules, filepath.Join(staging, ModulesDir)); err != nil {
				return m, err
			}
			m.HasModules = true
		}
		return m, os.RemoveAll(tmp)
	})
}

// build stages an import of name, runs fill in the staging directory and
// publishes the result; on failure nothing is left behind.
func (s *Store) build(ctx context.Context, name string, fill func(staging string) (Manifest, error)) (Kernel, error) {
	staging, err := s.stage(name)
	if err != nil {
		return Kernel{}, err
	}
	m, err := fill(staging)
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		m.Name = name
		m.ImportedAt = s.now().UTC()
		var k Kernel
		if k, err = s.publish(staging, m); err == nil {
			return k, nil
		}
	}
	os.RemoveAll(staging)
	return Kernel{}, fmt.Errorf("importing kernel %s: %w", name, err)
}

// installKernel writes vmlinux (and vmlinuz, when a bzImage is given) into
// dir and returns the manifest fields it knows. A vmlinux extracted from a
// bzImage is streamed to disk, not held in memory.
func installKernel(dir, vmlinuzPath, vmlinuxPath string) (Manifest, error) {
	var bz, elfImg []byte
	for _, p := range []string{vmlinuzPath, vmlinuxPath} {
		if p == "" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return Manifest{}, fmt.Errorf("reading kernel: %w", err)
		}
		switch {
		case vmlinux.IsELF(b) && elfImg == nil:
			elfImg = b
		case vmlinux.IsBzImage(b) && bz == nil:
			bz = b
		case vmlinux.IsELF(b) || vmlinux.IsBzImage(b):
			return Manifest{}, errkind.New(errkind.InvalidArgument, "%s and %s are the same kind of kernel image; give one bzImage and/or one ELF vmlinux", vmlinuzPath, vmlinuxPath)
		default:
			return Manifest{}, errkind.New(errkind.InvalidArgument, "%s is not a kernel (neither an ELF vmlinux nor an x86 bzImage)", filepath.Base(p))
		}
	}
	var m Manifest
	if bz != nil {
		if err := fsatomic.WriteFile(filepath.Join(dir, VmlinuzFile), bz, 0o644); err != nil {
			return m, err
		}
		m.HasVmlinuz = true
		m.Version = vmlinux.Release(bz)
	}
	if elfImg == nil && bz != nil {
		h := sha256.New()
		err := fsatomic.WriteFrom(filepath.Join(dir, VmlinuxFile), 0o644, func(w io.Writer) error {
			var err error
			m.Codec, m.Size, err = vmlinux.WriteTo(io.MultiWriter(w, h), bz)
			return err
		})
		if err != nil {
			return m, fmt.Errorf("extracting vmlinux: %w", err)
		}
		m.SHA256 = hex.EncodeToString(h.Sum(nil))
	} else {
		if m.Version == "" {
			m.Version = vmlinux.Release(elfImg)
		}
		sum := sha256.Sum256(elfImg)
		m.SHA256 = hex.EncodeToString(sum[:])
		m.Size = int64(len(elfImg))
		if err := fsatomic.WriteFile(filepath.Join(dir, VmlinuxFile), elfImg, 0o644); err != nil {
			return m, err
		}
	}
	return m, checkELF(filepath.Join(dir, VmlinuxFile))
}

// checkELF makes sure a vmlinux is a readable executable ELF.
func checkELF(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return errkind.Wrap(errkind.InvalidArgument, err, "vmlinux is not a valid ELF file")
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC {
		return errkind.New(errkind.InvalidArgument, "vmlinux is an ELF %v, not an executable kernel", f.Type)
	}
	return nil
}

// modulesRoot returns the lib/modules/<release> directory for dir: dir
// itself when it holds modules, or its single release subdirectory when dir
// is a lib/modules holding exactly one release.
func modulesRoot(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return "", errkind.New(errkind.NotFound, "modules directory %s not found", dir)
		}
		return "", fmt.Errorf("reading modules directory: %w", err)
	}
	var subdirs []string
	for _, e := range entries {
		n := e.Name()
		if n == "kernel" || strings.HasPrefix(n, "modules.") || strings.Contains(n, ".ko") {
			return dir, nil
		}
		if e.IsDir() {
			subdirs = append(subdirs, n)
		}
	}
	if len(subdirs) == 1 && filepath.Base(filepath.Clean(dir)) == "modules" {
		return modulesRoot(filepath.Join(dir, subdirs[0]))
	}
	return "", errkind.New(errkind.InvalidArgument, "%s does not look like a lib/modules/<release> directory", dir)
}

// copyTree copies directories and regular files from src to dst; symlinks
// (build/, source/ in distro trees) are skipped.
func copyTree(ctx context.Context, src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			return copyFile(p, target)
		}
		return nil
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return out.Close()
}
