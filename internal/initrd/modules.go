package initrd

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/bangerdev/banger/internal/errkind"
)

// DefaultModules returns the module roots a banger guest needs: virtio-mmio
// discovery, block, network, console/serial, vsock and overlayfs, plus ext4
// for kernels that build it as a module. Roots that are built into the
// kernel are skipped by Build.
func DefaultModules() []string {
	return []string{
		"virtio_mmio",
		"virtio_blk",
		"virtio_console",
		"virtio_net",
		"vmw_vsock_virtio_transport",
		"overlay",
		"ext4",
		// ACPI power button events (QEMU system_powerdown) reach the agent
		// through an evdev input device.
		"button",
		"evdev",
	}
}

// moduleExts are the module file suffixes indexed, longest first.
var moduleExts = [...]string{".ko.xz", ".ko.zst", ".ko.gz", ".ko"}

// ModuleName normalises a module name the way the kernel does: '-' and '_'
// are interchangeable, canonically '_'.
func ModuleName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// moduleIndex maps module names to files under a modules directory
// (lib/modules/<release>), with the built-in module list when present.
type moduleIndex struct {
	dir        string
	files      map[string]string
	builtin    map[string]bool
	hasBuiltin bool
}

// indexModules walks dir for *.ko[.xz|.zst|.gz] files and reads
// modules.builtin if it exists.
func indexModules(dir string) (*moduleIndex, error) {
	idx := &moduleIndex{dir: dir, files: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if name, ok := moduleFileName(d.Name()); ok {
			if _, dup := idx.files[name]; !dup {
				idx.files[name] = p
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("indexing modules in %s: %w", dir, err)
	}
	f, err := os.Open(filepath.Join(dir, "modules.builtin"))
	if err == nil {
		defer f.Close()
		idx.hasBuiltin = true
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if name, ok := moduleFileName(filepath.Base(strings.TrimSpace(sc.Text()))); ok {
				idx.builtin[name] = true
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("reading %s: %w", f.Name(), err)
		}
	} else if !os.IsNotExist(err) {
		return nil, fmt.Errorf("reading modules.builtin: %w", err)
	}
	return idx, nil
}

func moduleFileName(base string) (string, bool) {
	for _, ext := range moduleExts {
		if n, ok := strings.CutSuffix(base, ext); ok && n != "" {
			return ModuleName(n), true
		}
	}
	return "", false
}

// loadModule reads a module file, decompressing .xz, .zst and .gz.
func loadModule(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r io.Reader
	switch {
	case strings.HasSuffix(path, ".ko.xz"):
		xr, err := xz.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("decompressing %s: %w", path, err)
		}
		r = xr
	case strings.HasSuffix(path, ".ko.zst"):
		zr, err := zstd.NewReader(bytes.NewReader(raw), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("decompressing %s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(path, ".ko.gz"):
		gr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("decompressing %s: %w", path, err)
		}
		r = gr
	default:
		return raw, nil
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("decompressing %s: %w", path, err)
	}
	return out, nil
}

// Modinfo is the part of a module's .modinfo section the builder uses.
type Modinfo struct {
	Name     string   // name=, when present
	Depends  []string // depends=, normalised names
	Vermagic string
}

// ReadModinfo parses the .modinfo section of an uncompressed module ELF.
func ReadModinfo(ko []byte) (Modinfo, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return Modinfo{}, errkind.Wrap(errkind.InvalidArgument, err, "reading module ELF")
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return Modinfo{}, errkind.New(errkind.InvalidArgument, "module has no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return Modinfo{}, fmt.Errorf("reading .modinfo: %w", err)
	}
	var mi Modinfo
	for _, field := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(field), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			mi.Name = ModuleName(v)
		case "vermagic":
			mi.Vermagic = strings.TrimSpace(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.Depends = append(mi.Depends, ModuleName(d))
				}
			}
		}
	}
	return mi, nil
}

// Module is one module to load, in load order.
type Module struct {
	Name string
	Path string // source file (possibly compressed)
	Data []byte // uncompressed ELF
}

// Plan is the resolved module set for an initrd.
type Plan struct {
	Modules []Module // dependencies first
	Builtin []string // requested roots that are built into the kernel
	Absent  []string // requested roots not found, with no modules.builtin to tell
}

// Order returns the module names in load order.
func (p Plan) Order() []string {
	names := make([]string, len(p.Modules))
	for i, m := range p.Modules {
		names[i] = m.Name
	}
	return names
}

// Resolve works out which modules to load, and in what order, for the given
// roots from the modules under dir: each module's dependencies (read from
// .modinfo depends=) come before it. A root with no module file is skipped
// when modules.builtin lists it, or when there is no modules.builtin to
// consult (reported in Plan.Absent); otherwise it is a NotFound error. A
// missing dependency is always an error.
func Resolve(dir string, roots []string) (Plan, error) {
	var plan Plan
	if dir == "" || len(roots) == 0 {
		return plan, nil
	}
	idx, err := indexModules(dir)
	if err != nil {
		return plan, err
	}
	state := map[string]int{} // 1: visiting, 2: done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 2:
			return nil
		case 1:
			return errkind.New(errkind.InvalidArgument, "module dependency cycle: %s -> %s", strings.Join(chain, " -> "), name)
		}
		path, ok := idx.files[name]
		if !ok {
			if len(chain) > 0 {
				return errkind.New(errkind.NotFound, "module %s (needed by %s) not found in %s", name, chain[len(chain)-1], dir)
			}
			return errkind.New(errkind.NotFound, "module %s not found in %s", name, dir)
		}
		state[name] = 1
		data, err := loadModule(path)
		if err != nil {
			return fmt.Errorf("loading module %s: %w", name, err)
		}
		mi, err := ReadModinfo(data)
		if err != nil {
			return fmt.Errorf("module %s (%s): %w", name, path, err)
		}
		for _, dep := range mi.Depends {
			if err := visit(dep, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		plan.Modules = append(plan.Modules, Module{Name: name, Path: path, Data: data})
		return nil
	}
	for _, r := range roots {
		name := ModuleName(r)
		if _, ok := idx.files[name]; !ok {
			switch {
			case idx.builtin[name]:
				plan.Builtin = append(plan.Builtin, name)
				continue
			case !idx.hasBuiltin:
				plan.Absent = append(plan.Absent, name)
				continue
			}
		}
		if err := visit(name, nil); err != nil {
			return Plan{}, err
		}
	}
	return plan, nil
}
