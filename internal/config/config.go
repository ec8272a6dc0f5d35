// Package config loads banger's TOML configuration. Every key is optional;
// unknown keys are rejected with the key named so typos never pass silently.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/bangerdev/banger/internal/errkind"
)

// Config is the whole configuration file.
type Config struct {
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// FirecrackerBin is the Firecracker binary (else BANGER_FIRECRACKER_BIN, else PATH).
	FirecrackerBin string `toml:"firecracker_bin"`
	// JailerBin is the Firecracker jailer binary; empty disables the jailer.
	JailerBin string `toml:"jailer_bin"`
	// QEMUBin is the QEMU system emulator (default qemu-system-x86_64 from PATH).
	QEMUBin string `toml:"qemu_bin"`
	// DefaultVMM is qemu or firecracker.
	DefaultVMM string `toml:"default_vmm"`
	// DefaultImage is the image `vm run` and `vm create` use without
	// --image; empty means the image catalog's default (debian-bookworm).
	DefaultImage string `toml:"default_image"`
	// DefaultKernel is the kernel used for images pulled without kernel flags.
	DefaultKernel string `toml:"default_kernel"`
	// InsecureRegistries may be reached over plain HTTP (loopback always may).
	InsecureRegistries []string `toml:"insecure_registries"`
	// CatalogURL is where image catalog bundles are fetched from, overriding
	// the catalog's own base URL (a team's or CI's mirror).
	CatalogURL string `toml:"catalog_url"`
	// ImageCatalog is an image catalog file (same format as the embedded
	// one) whose entries are added to, or replace, the embedded ones.
	ImageCatalog string `toml:"image_catalog"`
	// GuestCACerts are PEM files on the host (absolute paths, each holding
	// one or more certificates) that every VM trusts: they are installed
	// into the guest's trust store when its agent first answers on each
	// start. Build VMs of `image build` do not get them.
	GuestCACerts []string `toml:"guest_ca_certs"`
	// VMDefaults size new VMs when flags are omitted.
	VMDefaults VMDefaults `toml:"vm_defaults"`
	// Network configures the bridge and NAT.
	Network Network `toml:"network"`
}

// VMDefaults are the sizing defaults for new VMs.
type VMDefaults struct {
	CPUs      int    `toml:"cpus"`
	MemoryMiB int    `toml:"memory_mib"`
	DiskSize  string `toml:"disk_size"`
}

// Network configures host networking for VMs.
type Network struct {
	// Bridge is the host bridge VMs' taps join (at most 10 characters: taps
	// are named after it).
	Bridge string `toml:"bridge"`
	// CIDR is the VM subnet; the bridge takes its first address.
	CIDR string `toml:"cidr"`
	// Disabled turns host networking off: VMs get --net none (forwards over
	// the agent channel still work).
	Disabled bool `toml:"disabled"`
	// DefaultMode is the --net mode of VMs created without one.
	DefaultMode string `toml:"default_mode"`
	// DNSListen is the host-side listener of the .vm DNS zone (ip:port on
	// loopback); empty turns it off.
	DNSListen string `toml:"dns_listen"`
	// UpstreamDNS are the resolvers guests' other queries go to (ip or
	// ip:port); empty means the nameservers of /etc/resolv.conf.
	UpstreamDNS []string `toml:"upstream_dns"`
	// TapPool is how many idle taps are kept ready.
	TapPool int `toml:"tap_pool"`
	// ForwardDirect lets TCP forwards of a VM with an address connect to
	// the guest over the bridge when the guest port answers there (faster
	// than the agent channel, which stays the path for everything else).
	ForwardDirect bool `toml:"forward_direct"`
}

// Default returns the built-in configuration.
func Default() Config {
	return Config{
		LogLevel:      "info",
		DefaultVMM:    "qemu",
		DefaultKernel: "debian-cloud",
		Network: Network{Bridge: "banger0", CIDR: "172.30.0.0/24", DefaultMode: "nat",
			DNSListen: "127.0.0.1:42069", TapPool: 2, ForwardDirect: true},
	}
}

// Load reads the file at path over the defaults. A missing file is not an
// error; a malformed one is, naming the file, line and key.
func Load(path string) (Config, error) {
	cfg := Default()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("reading config %s: %w", path, err)
	}
	if err := Parse(data, &cfg); err != nil {
		return cfg, errkind.Wrap(errkind.InvalidArgument, err, "config %s", path)
	}
	return cfg, nil
}

// Parse decodes TOML data into cfg, rejecting unknown keys, then validates.
func Parse(data []byte, cfg *Config) error {
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) && len(sm.Errors) > 0 {
			var keys []string
			for _, e := range sm.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return fmt.Errorf("unknown key %s", strings.Join(keys, ", "))
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return fmt.Errorf("line %d column %d: %s", row, col, de.Error())
		}
		return err
	}
	return cfg.Validate()
}

// Validate checks value ranges and enumerations.
func (c *Config) Validate() error {
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	switch c.DefaultVMM {
	case "qemu", "firecracker":
	default:
		return fmt.Errorf("default_vmm %q: want qemu or firecracker", c.DefaultVMM)
	}
	if c.VMDefaults.CPUs < 0 || c.VMDefaults.CPUs > 256 {
		return fmt.Errorf("vm_defaults.cpus %d out of range", c.VMDefaults.CPUs)
	}
	if c.CatalogURL != "" {
		u, err := url.Parse(c.CatalogURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("catalog_url %q: want an http(s) URL", c.CatalogURL)
		}
	}
	if c.ImageCatalog != "" && !filepath.IsAbs(c.ImageCatalog) {
		return fmt.Errorf("image_catalog %q: want an absolute path", c.ImageCatalog)
	}
	for _, p := range c.GuestCACerts {
		if _, err := ReadCACerts(p); err != nil {
			return err
		}
	}
	if c.VMDefaults.MemoryMiB < 0 {
		return fmt.Errorf("vm_defaults.memory_mib %d out of range", c.VMDefaults.MemoryMiB)
	}
	return c.Network.validate()
}

func (n *Network) validate() error {
	if n.Bridge == "" || len(n.Bridge) > 10 || strings.ContainsAny(n.Bridge, "/ :\t") {
		return fmt.Errorf("network.bridge %q: want an interface name of 1-10 characters", n.Bridge)
	}
	p, err := netip.ParsePrefix(n.CIDR)
	if err != nil || !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 29 {
		return fmt.Errorf("network.cidr %q: want an IPv4 prefix between /8 and /29", n.CIDR)
	}
	switch n.DefaultMode {
	case "nat", "private", "none":
	default:
		return fmt.Errorf("network.default_mode %q: want nat, private or none", n.DefaultMode)
	}
	if n.DNSListen != "" {
		if _, err := netip.ParseAddrPort(n.DNSListen); err != nil {
			return fmt.Errorf("network.dns_listen %q: want ip:port", n.DNSListen)
		}
	}
	for _, u := range n.UpstreamDNS {
		if _, err := netip.ParseAddr(u); err == nil {
			continue
		}
		if _, err := netip.ParseAddrPort(u); err != nil {
			return fmt.Errorf("network.upstream_dns %q: want ip or ip:port", u)
		}
	}
	if n.TapPool < 0 || n.TapPool > 64 {
		return fmt.Errorf("network.tap_pool %d out of range (0-64)", n.TapPool)
	}
	return nil
}
