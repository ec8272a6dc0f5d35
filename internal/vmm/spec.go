package vmm

import (
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/internal/errkind"
)

// BaseCmdline is the kernel command line every driver starts from
// (measured in notes/boot-lab.md §5; mitigations stay on).
const BaseCmdline = "console=ttyS0 quiet cryptomgr.notests 8250.nr_uarts=1 i8042.noaux i8042.nomux " +
	"i8042.nopnp i8042.dumbkbd random.trust_cpu=on audit=0 nowatchdog panic=-1"

// driverOwnedKeys are command-line keys the driver sets itself.
var driverOwnedKeys = []string{"banger.chan=", "banger.exit=", "tsc_early_khz=", "console="}

// Cmdline joins BaseCmdline, the driver's own parameters and the spec's
// extra parameters. Extra parameters may not set driver-owned keys.
func Cmdline(extra string, driverParams ...string) (string, error) {
	parts := []string{BaseCmdline}
	parts = append(parts, driverParams...)
	for _, f := range strings.Fields(extra) {
		for _, k := range driverOwnedKeys {
			if strings.HasPrefix(f, k) {
				return "", errkind.New(errkind.InvalidArgument, "kernel parameter %q is set by the VMM driver", f)
			}
		}
		parts = append(parts, f)
	}
	return strings.Join(parts, " "), nil
}

// MaxCPUs is the largest vCPU count a spec may ask for.
const MaxCPUs = 64

// Validate checks a spec for mistakes that need no host probing beyond
// stat: sizes, absolute paths, files that exist, network fields.
func (s Spec) Validate() error {
	if s.ID == "" {
		return errkind.New(errkind.InvalidArgument, "vm spec has no id")
	}
	if s.RunDir == "" || !filepath.IsAbs(s.RunDir) {
		return errkind.New(errkind.InvalidArgument, "vm run dir %q is not an absolute path", s.RunDir)
	}
	if s.CPUs < 1 || s.CPUs > MaxCPUs {
		return errkind.New(errkind.InvalidArgument, "cpus must be between 1 and %d, got %d", MaxCPUs, s.CPUs)
	}
	if s.MemoryMiB < 64 {
		return errkind.New(errkind.InvalidArgument, "memory must be at least 64 MiB, got %d MiB", s.MemoryMiB)
	}
	if err := regularFile("kernel", s.Kernel); err != nil {
		return err
	}
	if s.Initrd != "" {
		if err := regularFile("initrd", s.Initrd); err != nil {
			return err
		}
	}
	for i, d := range s.Disks {
		if err := regularFile("disk "+string(rune('a'+i)), d.Path); err != nil {
			return err
		}
	}
	if s.Net != nil {
		if err := s.Net.validate(); err != nil {
			return err
		}
	}
	return nil
}

func (n *Net) validate() error {
	switch n.Mode {
	case NetTap:
		if n.TapName == "" {
			return errkind.New(errkind.InvalidArgument, "tap network needs a tap name")
		}
		if len(n.TapName) > 15 || strings.ContainsAny(n.TapName, ",/ ") {
			return errkind.New(errkind.InvalidArgument, "invalid tap name %q", n.TapName)
		}
	case NetUser:
	default:
		return errkind.New(errkind.InvalidArgument, "unknown network mode %q", n.Mode)
	}
	if n.MAC != "" {
		hw, err := net.ParseMAC(n.MAC)
		if err != nil || len(hw) != 6 {
			return errkind.New(errkind.InvalidArgument, "invalid MAC address %q", n.MAC)
		}
	}
	return nil
}

func regularFile(what, path string) error {
	if path == "" {
		return errkind.New(errkind.InvalidArgument, "no %s path", what)
	}
	if !filepath.IsAbs(path) {
		return errkind.New(errkind.InvalidArgument, "%s path %q is not absolute", what, path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		if os.IsNotExist(err) {
			return errkind.New(errkind.NotFound, "%s %s does not exist", what, path)
		}
		return errkind.Wrap(errkind.InvalidArgument, err, "%s %s", what, path)
	}
	if !fi.Mode().IsRegular() && fi.Mode()&os.ModeDevice == 0 {
		return errkind.New(errkind.InvalidArgument, "%s %s is not a file", what, path)
	}
	return nil
}

// ShortSocketDir returns a directory through which unix sockets under runDir
// can be named within the 108-byte sun_path limit: runDir itself when
// runDir/<longest name> fits, else a symlink to runDir created in linkParent
// (e.g. /run/banger or os.TempDir()) and named after a hash of runDir. An
// existing link is reused only when it points at runDir.
func ShortSocketDir(runDir, linkParent string, names ...string) (string, error) {
	longest := 0
	for _, n := range names {
		longest = max(longest, len(n))
	}
	const maxPath = 107 // sun_path is 108 bytes including the NUL
	if len(runDir)+1+longest <= maxPath {
		return runDir, nil
	}
	short := filepath.Join(linkParent, "bgr-"+shortHash(runDir))
	if len(short)+1+longest > maxPath {
		return "", errkind.New(errkind.InvalidArgument, "socket directory %s is too long for unix sockets", short)
	}
	if target, err := os.Readlink(short); err == nil {
		if target == runDir {
			return short, nil
		}
		return "", errkind.New(errkind.Conflict, "socket link %s points at %s, not %s", short, target, runDir)
	}
	if err := os.MkdirAll(linkParent, 0o700); err != nil {
		return "", err
	}
	if err := os.Symlink(runDir, short); err != nil {
		return "", err
	}
	return short, nil
}

// shortHash is a 10-hex-digit FNV-1a hash of s.
func shortHash(s string) string {
	var h uint64 = 14695981039346656037
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	const hex = "0123456789abcdef"
	var b [10]byte
	for i := range b {
		b[i] = hex[h&0xf]
		h >>= 4
	}
	return string(b[:])
}
