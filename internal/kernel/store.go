// Package kernel manages kernels as artifacts in a directory store:
//
//	<dir>/<name>/vmlinux        uncompressed ELF (what Firecracker and QEMU PVH boot)
//	<dir>/<name>/vmlinuz        the bzImage, when one was imported
//	<dir>/<name>/initrd.img     an initrd imported with the kernel, if any
//	<dir>/<name>/config         the kernel's build config, if the source had one
//	<dir>/<name>/modules/       the content of lib/modules/<release>, if any
//	<dir>/<name>/manifest.json
//
// Kernels come from files, from a Debian package, or from the embedded
// catalog (Pull). Every import is staged at <dir>/<name>.staging and renamed
// into place, so a name either holds a complete kernel or nothing.
package kernel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/fsatomic"
	"github.com/bangerdev/banger/internal/model"
)

// File names inside a kernel directory.
const (
	ManifestFile = "manifest.json"
	VmlinuxFile  = "vmlinux"
	VmlinuzFile  = "vmlinuz"
	InitrdFile   = "initrd.img"
	ConfigFile   = "config"
	ModulesDir   = "modules"
)

// Manifest describes a stored kernel (manifest.json).
type Manifest struct {
	Name       string    `json:"name"`
	Version    string    `json:"version"` // kernel release, e.g. 6.1.0-56-cloud-amd64
	SHA256     string    `json:"sha256"`  // of vmlinux
	Source     string    `json:"source"`  // e.g. "deb:linux-image-…_amd64.deb", "catalog:debian-cloud (apt …)", "files:/path/vmlinuz"
	ImportedAt time.Time `json:"imported_at"`
	HasModules bool      `json:"has_modules"`
	HasVmlinuz bool      `json:"has_vmlinuz"`
	HasInitrd  bool      `json:"has_initrd"`
	Codec      string    `json:"codec,omitempty"` // bzImage payload codec, when extracted from one
	Size       int64     `json:"size"`            // vmlinux bytes
}

// Kernel is a stored kernel with the paths of its files (empty when absent).
type Kernel struct {
	Manifest
	Dir        string `json:"dir"`
	Vmlinux    string `json:"vmlinux"`
	Vmlinuz    string `json:"vmlinuz,omitempty"`
	Initrd     string `json:"initrd,omitempty"`
	Config     string `json:"config,omitempty"`
	ModulesDir string `json:"modules_dir,omitempty"`
}

// Model returns the kernel as the API's domain type.
func (k Kernel) Model() model.Kernel {
	return model.Kernel{Name: k.Name, Version: k.Version, SHA256: k.SHA256, Source: k.Source, Dir: k.Dir, ImportedAt: k.ImportedAt}
}

// Store is a kernel store rooted at a directory (the daemon's
// <state>/kernels).
type Store struct {
	dir string
	now func() time.Time
}

// NewStore returns a store rooted at dir, creating dir if needed. It does
// not remove leftover staging directories: the daemon does that at startup
// (fsatomic.RemoveStaging), when no import can be running.
func NewStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating kernel store %s: %w", dir, err)
	}
	return &Store{dir: dir, now: time.Now}, nil
}

// Dir returns the store's root directory.
func (s *Store) Dir() string { return s.dir }

// ValidateName checks a kernel name: lowercase letters, digits, '.', '_'
// and '-', starting and ending with a letter or digit, at most 63 bytes.
func ValidateName(name string) error {
	if err := model.ValidateImageName("kernel", name); err != nil {
		return err
	}
	if len(name) > 63 || strings.HasSuffix(name, fsatomic.StagingSuffix) || strings.Contains(name, "..") {
		return errkind.New(errkind.InvalidArgument, "kernel name %q is invalid: at most 63 characters, no '..', no %q suffix", name, fsatomic.StagingSuffix)
	}
	return nil
}

// Get returns the kernel called name.
func (s *Store) Get(ctx context.Context, name string) (Kernel, error) {
	if err := ValidateName(name); err != nil {
		return Kernel{}, err
	}
	k, err := s.load(filepath.Join(s.dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return Kernel{}, errkind.New(errkind.NotFound, "kernel %q not found", name)
	}
	return k, err
}

// Exists reports whether a kernel called name is stored.
func (s *Store) Exists(name string) bool {
	_, err := os.Stat(filepath.Join(s.dir, name, ManifestFile))
	return err == nil
}

// List returns the stored kernels sorted by name. Directories without a
// manifest (not kernels, or not published) are ignored.
func (s *Store) List(ctx context.Context) ([]Kernel, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("listing kernels: %w", err)
	}
	var out []Kernel
	for _, e := range entries {
		if !e.IsDir() || ValidateName(e.Name()) != nil {
			continue
		}
		k, err := s.load(filepath.Join(s.dir, e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove deletes the kernel called name. Callers check that no image or VM
// still uses it.
func (s *Store) Remove(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	dir := filepath.Join(s.dir, name)
	if _, err := os.Stat(filepath.Join(dir, ManifestFile)); err != nil {
		if os.IsNotExist(err) {
			return errkind.New(errkind.NotFound, "kernel %q not found", name)
		}
		return fmt.Errorf("removing kernel %s: %w", name, err)
	}
	// Rename first so the name disappears at once; a crash leaves only a
	// staging directory, which startup removes.
	trash, err := os.MkdirTemp(s.dir, "."+name+".removing-*"+fsatomic.StagingSuffix)
	if err != nil {
		return fmt.Errorf("removing kernel %s: %w", name, err)
	}
	target := filepath.Join(trash, name)
	if err := os.Rename(dir, target); err != nil {
		os.Remove(trash)
		if os.IsNotExist(err) {
			return errkind.New(errkind.NotFound, "kernel %q not found", name)
		}
		return fmt.Errorf("removing kernel %s: %w", name, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("removing kernel %s: %w", name, err)
	}
	return fsatomic.SyncDir(s.dir)
}

func (s *Store) load(dir string) (Kernel, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return Kernel{}, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Kernel{}, fmt.Errorf("reading manifest of kernel %s: %w", filepath.Base(dir), err)
	}
	k := Kernel{Manifest: m, Dir: dir, Vmlinux: filepath.Join(dir, VmlinuxFile)}
	if m.HasVmlinuz {
		k.Vmlinuz = filepath.Join(dir, VmlinuzFile)
	}
	if m.HasInitrd {
		k.Initrd = filepath.Join(dir, InitrdFile)
	}
	if m.HasModules {
		k.ModulesDir = filepath.Join(dir, ModulesDir)
	}
	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err == nil {
		k.Config = filepath.Join(dir, ConfigFile)
	}
	return k, nil
}

// stage creates <dir>/<name>.staging for an import of name. It fails with
// AlreadyExists when the name is taken and Conflict when another import of
// the same name is under way.
func (s *Store) stage(name string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(s.dir, name)); err == nil {
		return "", errkind.New(errkind.AlreadyExists, "kernel %q already exists", name)
	}
	staging := filepath.Join(s.dir, name+fsatomic.StagingSuffix)
	if err := os.Mkdir(staging, 0o755); err != nil {
		if os.IsExist(err) {
			return "", errkind.New(errkind.Conflict, "kernel %q is being imported already", name)
		}
		return "", fmt.Errorf("staging kernel %s: %w", name, err)
	}
	return staging, nil
}

// publish writes the manifest into staging and renames it to <dir>/<name>.
func (s *Store) publish(staging string, m Manifest) (Kernel, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Kernel{}, err
	}
	if err := fsatomic.WriteFile(filepath.Join(staging, ManifestFile), append(b, '\n'), 0o644); err != nil {
		return Kernel{}, err
	}
	if err := syncFS(staging); err != nil {
		return Kernel{}, fmt.Errorf("syncing staged kernel %s: %w", m.Name, err)
	}
	final := filepath.Join(s.dir, m.Name)
	if err := os.Rename(staging, final); err != nil {
		if errors.Is(err, os.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
			return Kernel{}, errkind.New(errkind.AlreadyExists, "kernel %q already exists", m.Name)
		}
		return Kernel{}, fmt.Errorf("publishing kernel %s: %w", m.Name, err)
	}
	if err := fsatomic.SyncDir(s.dir); err != nil {
		return Kernel{}, err
	}
	return s.load(final)
}

// syncFS flushes the filesystem holding dir, so the staged files are on disk
// before the rename publishes them.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
