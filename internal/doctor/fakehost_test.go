package doctor

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
	"sync"
)

// fakeHost describes a host for the probes. Its zero value is an empty
// machine; healthyIntelHost returns one where every check passes.
type fakeHost struct {
	machine string
	files   map[string]string // ReadFile contents
	exists  map[string]bool   // paths that exist (besides files)
	openErr error             // OpenReadWrite result
	tools   map[string]string // LookPath: name -> path
	outputs map[string]string // Run: "path arg..." -> combined output
	env     map[string]string
	euid    int
	free    map[string]uint64 // FreeBytes by path
	nftErr  error

	mu   sync.Mutex
	runs []string // commands Run was asked for
}

const intelCPUInfo = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr vmx sse sse2 avx\n\nprocessor\t: 1\nflags\t\t: fpu vme de pse tsc msr vmx sse sse2 avx\n"
const noVirtCPUInfo = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr sse sse2 avx hypervisor\n"
const amdCPUInfo = "processor\t: 0\nflags\t\t: fpu vme svm sse sse2\n"

func healthyIntelHost() *fakeHost {
	return &fakeHost{
		machine: "x86_64",
		files: map[string]string{
			"/proc/cpuinfo":     intelCPUInfo,
			"/proc/self/status": "Name:\tbanger\nCapEff:\t0000000000000000\n",
		},
		exists: map[string]bool{
			"/dev/kvm":              true,
			"/sys/module/kvm_intel": true,
			"/dev/net/tun":          true,
			"/usr/lib/x86_64-linux-gnu/libarchive.so.13": true,
		},
		tools: map[string]string{
			"qemu-system-x86_64": "/usr/bin/qemu-system-x86_64",
			"mke2fs":             "/usr/sbin/mke2fs",
			"e2fsck":             "/usr/sbin/e2fsck",
			"debugfs":            "/usr/sbin/debugfs",
			"depmod":             "/usr/sbin/depmod",
		},
		outputs: map[string]string{
			"/usr/bin/qemu-system-x86_64 --version":       "QEMU emulator version 8.2.2 (Debian)\n",
			"/usr/bin/qemu-system-x86_64 -M microvm,help": "microvm-machine options:\n  acpi=<OnOffAuto>       - Enable ACPI\n",
			"/usr/sbin/mke2fs -V":                         "mke2fs 1.47.2 (1-Jan-2025)\n\tUsing EXT2FS Library version 1.47.2\n",
		},
		env:  map[string]string{},
		euid: 0,
		free: map[string]uint64{"/state": 100 << 30, "/cache": 100 << 30},
	}
}

func (h *fakeHost) probes() Probes {
	return Probes{
		Machine: func() (string, error) {
			if h.machine == "" {
				return "", fmt.Errorf("uname: no machine")
			}
			return h.machine, nil
		},
		ReadFile: func(path string) ([]byte, error) {
			s, ok := h.files[path]
			if !ok {
				return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
			}
			return []byte(s), nil
		},
		Exists: func(path string) bool {
			_, isFile := h.files[path]
			return h.exists[path] || isFile
		},
		OpenReadWrite: func(path string) error {
			if !h.exists[path] {
				return &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
			}
			return h.openErr
		},
		LookPath: func(name string) (string, error) {
			if p, ok := h.tools[name]; ok {
				return p, nil
			}
			return "", fmt.Errorf("exec: %q: executable file not found in $PATH", name)
		},
		Run: func(ctx context.Context, name string, args ...string) (string, error) {
			cmd := strings.Join(append([]string{name}, args...), " ")
			h.mu.Lock()
			h.runs = append(h.runs, cmd)
			h.mu.Unlock()
			out, ok := h.outputs[cmd]
			if !ok {
				return "", fmt.Errorf("running %s: no such command on the fake host", name)
			}
			return out, nil
		},
		Getenv:  func(key string) string { return h.env[key] },
		Geteuid: func() int { return h.euid },
		FreeBytes: func(path string) (uint64, error) {
			n, ok := h.free[path]
			if !ok {
				return 0, fmt.Errorf("statfs %s: no such file or directory", path)
			}
			return n, nil
		},
		Nftables: func(context.Context) (int, error) {
			if h.nftErr != nil {
				return 0, h.nftErr
			}
			return 2, nil
		},
	}
}

// makePVM turns h into this lab's host: /dev/kvm backed by kvm_pvm, no
// vmx/svm flag.
func (h *fakeHost) makePVM() *fakeHost {
	h.files["/proc/cpuinfo"] = noVirtCPUInfo
	delete(h.exists, "/sys/module/kvm_intel")
	h.exists["/sys/module/kvm_pvm"] = true
	return h
}

func (h *fakeHost) addFirecracker(path, version string) *fakeHost {
	h.exists[path] = true
	h.outputs[path+" --version"] = "Firecracker v" + version + "\n\n"
	return h
}

func (h *fakeHost) options() Options {
	return Options{
		StateDir:   "/state",
		CacheDir:   "/cache",
		StoreCheck: func(context.Context) error { return nil },
		Probes:     h.probes(),
	}
}
