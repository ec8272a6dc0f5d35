// Package paths defines every file and directory banger uses, in one place.
//
// User mode follows XDG (config in $XDG_CONFIG_HOME/banger, state in
// $XDG_STATE_HOME/banger, cache in $XDG_CACHE_HOME/banger, runtime in
// $XDG_RUNTIME_DIR/banger). System mode uses /etc/banger, /var/lib/banger,
// /var/cache/banger and /run/banger. BANGER_HOME puts everything under one
// directory, which tests use so parallel tests never share a daemon.
package paths

import (
	"fmt"
	"os"
	"path/filepath"
)

// Layout is the set of base directories for one banger installation.
type Layout struct {
	ConfigDir  string `json:"config_dir"`
	StateDir   string `json:"state_dir"`
	CacheDir   string `json:"cache_dir"`
	RuntimeDir string `json:"runtime_dir"`
	System     bool   `json:"system"`
}

// EnvHome overrides every base directory when set.
const EnvHome = "BANGER_HOME"

// User returns the user-mode layout for the current environment.
func User() (Layout, error) {
	if h := os.Getenv(EnvHome); h != "" {
		h, err := filepath.Abs(h)
		if err != nil {
			return Layout{}, fmt.Errorf("resolving %s: %w", EnvHome, err)
		}
		return Layout{
			ConfigDir:  filepath.Join(h, "config"),
			StateDir:   filepath.Join(h, "state"),
			CacheDir:   filepath.Join(h, "cache"),
			RuntimeDir: filepath.Join(h, "run"),
		}, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return Layout{}, fmt.Errorf("finding home directory: %w", err)
	}
	xdg := func(env, def string) string {
		if v := os.Getenv(env); v != "" && filepath.IsAbs(v) {
			return filepath.Join(v, "banger")
		}
		return filepath.Join(home, def, "banger")
	}
	rt := os.Getenv("XDG_RUNTIME_DIR")
	if rt == "" || !filepath.IsAbs(rt) {
		rt = filepath.Join(os.TempDir(), fmt.Sprintf("banger-%d", os.Getuid()))
	} else {
		rt = filepath.Join(rt, "banger")
	}
	return Layout{
		ConfigDir:  xdg("XDG_CONFIG_HOME", ".config"),
		StateDir:   xdg("XDG_STATE_HOME", ".local/state"),
		CacheDir:   xdg("XDG_CACHE_HOME", ".cache"),
		RuntimeDir: rt,
	}, nil
}

// System returns the layout used when bangerd runs as a system service.
func System() Layout {
	return Layout{
		ConfigDir:  "/etc/banger",
		StateDir:   "/var/lib/banger",
		CacheDir:   "/var/cache/banger",
		RuntimeDir: "/run/banger",
		System:     true,
	}
}

// ConfigFile is the TOML configuration file.
func (l Layout) ConfigFile() string { return filepath.Join(l.ConfigDir, "config.toml") }

// DBPath is the SQLite database.
func (l Layout) DBPath() string { return filepath.Join(l.StateDir, "banger.db") }

// Socket is the daemon's API socket.
func (l Layout) Socket() string { return filepath.Join(l.RuntimeDir, "bangerd.sock") }

// LockFile guards against two daemons on one layout.
func (l Layout) LockFile() string { return filepath.Join(l.RuntimeDir, "bangerd.lock") }

// DaemonLog is where a daemon started by the CLI writes its log.
func (l Layout) DaemonLog() string { return filepath.Join(l.StateDir, "bangerd.log") }

// ImagesDir holds managed images: images/<id>/{rootfs.ext4,vmlinux,initrd.img,modules/}.
func (l Layout) ImagesDir() string { return filepath.Join(l.StateDir, "images") }

// KernelsDir holds managed kernels: kernels/<name>/....
func (l Layout) KernelsDir() string { return filepath.Join(l.StateDir, "kernels") }

// VMsDir holds per-VM disks and metadata: vms/<id>/....
func (l Layout) VMsDir() string { return filepath.Join(l.StateDir, "vms") }

// VMRunDir holds a running VM's sockets, pidfile and console log. It lives
// under the runtime dir so socket paths stay short.
func (l Layout) VMRunDir(id string) string { return filepath.Join(l.RuntimeDir, "vm", id) }

// SSHDir holds banger's own SSH key and known_hosts file.
func (l Layout) SSHDir() string { return filepath.Join(l.StateDir, "ssh") }

// OCICacheDir is the shared, digest-verified OCI blob cache (an OCI layout).
func (l Layout) OCICacheDir() string { return filepath.Join(l.CacheDir, "oci") }

// InitrdCacheDir caches generated initrds per kernel and agent version.
func (l Layout) InitrdCacheDir() string { return filepath.Join(l.CacheDir, "initrd") }

// BuildCacheDir holds the step cache of `image build`.
func (l Layout) BuildCacheDir() string { return filepath.Join(l.CacheDir, "build") }

// BuildRunDir holds the sockets and logs of build VMs.
func (l Layout) BuildRunDir() string { return filepath.Join(l.RuntimeDir, "build") }

// PublishedDirs are the directories whose "*.staging" leftovers the daemon
// removes at startup.
func (l Layout) PublishedDirs() []string {
	return []string{l.StateDir, l.ImagesDir(), l.KernelsDir(), l.VMsDir(), l.CacheDir, l.InitrdCacheDir()}
}

// Ensure creates the base directories with private permissions.
func (l Layout) Ensure() error {
	for _, d := range []string{l.StateDir, l.CacheDir, l.ImagesDir(), l.KernelsDir(), l.VMsDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
	}
	if err := os.MkdirAll(l.RuntimeDir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", l.RuntimeDir, err)
	}
	return os.Chmod(l.RuntimeDir, 0o700)
}
