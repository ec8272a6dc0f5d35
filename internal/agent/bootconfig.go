package agent

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Default values of the kernel command line keys.
const (
	DefaultSerialPort = "org.banger.agent"
	DefaultVsockPort  = 1024
)

// Channel says how the host reaches the agent.
type Channel struct {
	// Kind is "serial", "vsock" or "" (both: the serial port named
	// DefaultSerialPort if it appears, and vsock port DefaultVsockPort).
	Kind string
	Name string // virtio-serial port name
	Port uint32 // vsock port
}

// BootConfig is what the kernel command line asks of the guest init.
type BootConfig struct {
	Root     string // banger.root: read-only base disk
	Overlay  string // banger.overlay: writable disk holding upper/ and work/; empty means a tmpfs
	Work     string // banger.work: persistent disk mounted at /root
	Modules  string // banger.modules: read-only disk of the kernel's modules, mounted at /lib/modules/<release>
	Hostname string
	Addr     netip.Prefix // banger.ip, e.g. 172.30.0.2/24
	Gateway  netip.Addr   // banger.gw
	DNS      []netip.Addr // banger.dns
	MAC      net.HardwareAddr
	Chan     Channel
	Init     string // "auto", "agent" or "systemd"
	Exit     string // "poweroff" or "reboot"
	// Warnings lists values that were ignored because they were invalid.
	Warnings []string
}

// SplitCmdline splits a kernel command line the way the kernel does:
// on spaces, with double quotes grouping (and removed).
func SplitCmdline(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case (r == ' ' || r == '\t' || r == '\n') && !inQuote:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// ParseCmdline reads the banger.* keys of a kernel command line. Unknown
// keys are ignored; invalid values are reported in Warnings and ignored.
func ParseCmdline(cmdline string) BootConfig {
	cfg := BootConfig{Init: "auto", Exit: "poweroff"}
	warn := func(format string, args ...any) {
		cfg.Warnings = append(cfg.Warnings, fmt.Sprintf(format, args...))
	}
	for _, arg := range SplitCmdline(cmdline) {
		key, val, _ := strings.Cut(arg, "=")
		name, ok := strings.CutPrefix(key, "banger.")
		if !ok {
			continue
		}
		switch name {
		case "root":
			cfg.Root = devPath(val)
		case "overlay":
			cfg.Overlay = devPath(val)
		case "work":
			cfg.Work = devPath(val)
		case "modules":
			cfg.Modules = devPath(val)
		case "hostname":
			if validHostname(val) {
				cfg.Hostname = val
			} else {
				warn("banger.hostname=%q is not a valid host name", val)
			}
		case "ip":
			p, err := netip.ParsePrefix(val)
			if err != nil || !p.Addr().Is4() {
				warn("banger.ip=%q is not an IPv4 address/prefix", val)
				continue
			}
			cfg.Addr = p
		case "gw":
			a, err := netip.ParseAddr(val)
			if err != nil || !a.Is4() {
				warn("banger.gw=%q is not an IPv4 address", val)
				continue
			}
			cfg.Gateway = a
		case "dns":
			cfg.DNS = nil
			for _, s := range strings.Split(val, ",") {
				if s == "" {
					continue
				}
				a, err := netip.ParseAddr(s)
				if err != nil {
					warn("banger.dns: %q is not an IP address", s)
					continue
				}
				cfg.DNS = append(cfg.DNS, a)
			}
		case "mac":
			if val == "" {
				continue
			}
			m, err := net.ParseMAC(val)
			if err != nil {
				warn("banger.mac=%q is not a MAC address", val)
				continue
			}
			cfg.MAC = m
		case "chan":
			ch, err := ParseChannel(val)
			if err != nil {
				warn("banger.chan=%q: %v", val, err)
				continue
			}
			cfg.Chan = ch
		case "init":
			switch val {
			case "auto", "agent", "systemd":
				cfg.Init = val
			default:
				warn("banger.init=%q: want auto, agent or systemd", val)
			}
		case "exit":
			switch val {
			case "poweroff", "reboot":
				cfg.Exit = val
			default:
				warn("banger.exit=%q: want poweroff or reboot", val)
			}
		}
	}
	if cfg.Gateway.IsValid() && cfg.Addr.IsValid() && !cfg.Addr.Masked().Contains(cfg.Gateway) {
		warn("gateway %s is outside %s; no default route", cfg.Gateway, cfg.Addr)
		cfg.Gateway = netip.Addr{}
	}
	return cfg
}

// ParseChannel parses "serial:NAME" or "vsock:PORT" (the value of banger.chan).
func ParseChannel(val string) (Channel, error) {
	kind, arg, _ := strings.Cut(val, ":")
	switch kind {
	case "serial":
		if arg == "" {
			arg = DefaultSerialPort
		}
		return Channel{Kind: "serial", Name: arg}, nil
	case "vsock":
		port := uint64(DefaultVsockPort)
		if arg != "" {
			var err error
			if port, err = strconv.ParseUint(arg, 10, 32); err != nil {
				return Channel{}, fmt.Errorf("bad vsock port %q", arg)
			}
		}
		return Channel{Kind: "vsock", Port: uint32(port)}, nil
	}
	return Channel{}, fmt.Errorf("want serial:NAME or vsock:PORT")
}

// devPath accepts "vda" as well as "/dev/vda".
func devPath(v string) string {
	if v == "" || strings.HasPrefix(v, "/") {
		return v
	}
	return "/dev/" + v
}

func validHostname(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
