// Package testenv is the shared support code for banger's tests: a real
// docker-registry on loopback, a busybox OCI image built from the host's
// busybox-static, a persistent cache for heavy fixtures, the project
// binaries built once per test process, and capability checks that skip a
// test only when a capability is truly absent.
//
// It is imported only from _test.go files and e2e packages, and depends on
// no daemon package.
//
// Under CI (env CI=true) a missing tool that scripts/setup.sh installs is a
// test failure, not a skip: CI must not pass by skipping.
//
// A typical end-to-end test:
//
//	func TestMain(m *testing.M) { testenv.Main(m) } // removes built binaries
//
//	func TestPull(t *testing.T) {
//		reg := testenv.StartRegistry(t)        // stopped by t.Cleanup
//		ref := testenv.PushBusybox(t, reg)     // "127.0.0.1:PORT/busybox:latest"
//		bins := testenv.BuildBinaries(t)       // bins.Banger, bins.Bangerd, bins.Agent
//		...
//		for _, p := range testenv.BusyboxFiles(t) { /* debugfs -R "stat "+p */ }
//	}
package testenv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/lookpath"
)

// DefaultCacheDir is the persistent fixture cache used when BANGER_TEST_CACHE
// is unset. scripts/setup.sh fills it (the Debian cloud kernel .deb under
// kernel/).
const DefaultCacheDir = "/var/cache/banger-test"

// CacheEnv names the environment variable that overrides DefaultCacheDir.
const CacheEnv = "BANGER_TEST_CACHE"

// InCI reports whether the tests run under CI (env CI=true), where missing
// tools that the setup script installs fail tests instead of skipping them.
func InCI() bool {
	return os.Getenv("CI") == "true"
}

// CacheDir returns the persistent cache directory for heavy fixtures
// ($BANGER_TEST_CACHE, default /var/cache/banger-test), creating it 0755.
// When the default cannot be created because the user lacks permission, it
// falls back to <user cache dir>/banger-test.
func CacheDir() (string, error) {
	if dir := os.Getenv(CacheEnv); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("creating test cache %s: %w", dir, err)
		}
		return dir, nil
	}
	err := os.MkdirAll(DefaultCacheDir, 0o755)
	if err == nil {
		return DefaultCacheDir, nil
	}
	if !errors.Is(err, fs.ErrPermission) {
		return "", fmt.Errorf("creating test cache %s: %w", DefaultCacheDir, err)
	}
	base, uerr := os.UserCacheDir()
	if uerr != nil {
		return "", fmt.Errorf("creating test cache %s: %w", DefaultCacheDir, err)
	}
	dir := filepath.Join(base, "banger-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating test cache %s: %w", dir, err)
	}
	return dir, nil
}

// CacheSubdir returns CacheDir()/name, created 0755, failing t on error.
func CacheSubdir(t testing.TB, name string) string {
	t.Helper()
	root, err := CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("creating test cache %s: %v", dir, err)
	}
	return dir
}

// setupPackages maps the binaries tests look for to the Debian package that
// scripts/setup.sh installs for them (list in scripts/lib/packages.txt).
// A test in this package checks the two stay in sync.
var setupPackages = map[string]string{
	"qemu-system-x86_64": "qemu-system-x86",
	"depmod":             "kmod",
	"mke2fs":             "e2fsprogs",
	"mkfs.ext4":          "e2fsprogs",
	"e2fsck":             "e2fsprogs",
	"debugfs":            "e2fsprogs",
	"tune2fs":            "e2fsprogs",
	"resize2fs":          "e2fsprogs",
	"dumpe2fs":           "e2fsprogs",
	"docker-registry":    "docker-registry",
	"busybox":            "busybox-static",
	"debootstrap":        "debootstrap",
	"skopeo":             "skopeo",
	"umoci":              "umoci",
	"tmux":               "tmux",
	"git":                "git",
	"jq":                 "jq",
	"curl":               "curl",
	"cpio":               "cpio",
	"lz4":                "lz4",
	"zstd":               "zstd",
	"xz":                 "xz-utils",
	"ip":                 "iproute2",
	"nft":                "nftables",
	"ssh":                "openssh-client",
	"ssh-keygen":         "openssh-client",
}

// LookBinary finds name on PATH or in the sbin directories.
func LookBinary(name string) (string, error) { return lookpath.Find(name) }

// RequireBinary returns the path of the named executable. When it is absent
// the test is skipped, or fails under CI if scripts/setup.sh installs it.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := LookBinary(name)
	if err == nil {
		return p
	}
	if pkg, ok := setupPackages[name]; ok {
		missing(t, true, "%s not found (Debian package %s; run scripts/setup.sh)", name, pkg)
	} else {
		missing(t, false, "%s not found", name)
	}
	return ""
}

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, false, "needs root (euid is %d)", os.Geteuid())
	}
}

// Accel is the QEMU accelerator a guest can use on this host.
type Accel string

// Accelerators.
const (
	AccelKVM Accel = "kvm"
	AccelTCG Accel = "tcg"
)

// RequireKVMOrTCG makes sure a guest can boot here: QEMU must be present
// (TCG works everywhere; KVM is used when real). It returns AccelKVM when
// /dev/kvm is usable hardware virtualisation and AccelTCG otherwise,
// including under PVM, where stock kernels do not boot.
func RequireKVMOrTCG(t testing.TB) Accel {
	t.Helper()
	RequireBinary(t, "qemu-system-x86_64")
	return DetectAccel()
}

// DetectAccel reports which accelerator QEMU should use on this host.
func DetectAccel() Accel {
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		return AccelTCG
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return AccelTCG
	}
	f.Close()
	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return AccelTCG
	}
	for _, line := range strings.Split(string(cpuinfo), "\n") {
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		for _, flag := range strings.Fields(line) {
			if flag == "vmx" || flag == "svm" {
				return AccelKVM
			}
		}
		break
	}
	return AccelTCG
}

// missing ends the test for an absent capability: a skip with the reason,
// or, under CI and when the setup script provides the capability, a failure.
func missing(t testing.TB, installedBySetup bool, format string, args ...any) {
	t.Helper()
	reason := fmt.Sprintf(format, args...)
	if installedBySetup && InCI() {
		t.Fatalf("%s (CI=true: not skipping)", reason)
	}
	t.Skip(reason)
}

// ModuleRoot returns the directory holding banger's go.mod, found by walking
// up from the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding module root: no go.mod above the working directory")
		}
		dir = parent
	}
}
