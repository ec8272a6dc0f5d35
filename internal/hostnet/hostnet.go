// Package hostnet attaches microVMs to the host network: a bridge holding
// the host's address on the VM subnet, one tap per VM taken from a
// pre-warmed pool, per-VM IPv4 addresses, and the nftables rules (one
// banger table) that give each VM outbound NAT, host-only access or an
// egress allow-list. Kernel state is reached through the small Links and
// Firewall interfaces so callers can be tested with recording fakes.
package hostnet

import (
	"net"
	"net/netip"
	"strings"

	"github.com/bangerdev/banger/internal/errkind"
)

// Mode is a VM's network mode.
type Mode string

// Network modes.
const (
	// ModeNAT gives the VM outbound access through masquerading.
	ModeNAT Mode = "nat"
	// ModePrivate lets the VM reach the host (and other VMs) only.
	ModePrivate Mode = "private"
	// ModeNone gives the VM no NIC at all.
	ModeNone Mode = "none"
)

// ParseMode checks a --net value.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case ModeNAT, ModePrivate, ModeNone:
		return Mode(s), nil
	}
	return "", errkind.New(errkind.InvalidArgument, "--net %q: want nat, private or none", s)
}

// Route is one host route, as much as the collision check needs.
type Route struct {
	Dst    netip.Prefix // invalid for a default route
	Dev    string
	Table  int
	Source string // human-readable form
}

func (r Route) String() string {
	if r.Source != "" {
		return r.Source
	}
	s := "default"
	if r.Dst.IsValid() {
		s = r.Dst.String()
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	return s
}

// CheckSubnet refuses a VM subnet that overlaps a host route other than
// the default route and the routes of the bridge itself, naming the route.
func CheckSubnet(subnet netip.Prefix, bridge string, routes []Route) error {
	for _, r := range routes {
		if !r.Dst.IsValid() || r.Dst.Bits() == 0 || r.Dev == bridge {
			continue
		}
		if !r.Dst.Addr().Is4() {
			continue
		}
		if r.Dst.Overlaps(subnet) {
			return errkind.WithHint(
				errkind.New(errkind.Conflict, "network cidr %s overlaps the host route %q", subnet, r.String()),
				"set another private range in the [network] cidr key of banger's config")
		}
	}
	return nil
}

// Subnet is the VM network: its prefix and the host (gateway) address.
type Subnet struct {
	Prefix  netip.Prefix
	Gateway netip.Addr
}

// ParseSubnet parses a CIDR such as 172.30.0.0/24; the gateway is the
// first host address.
func ParseSubnet(cidr string) (Subnet, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return Subnet{}, errkind.Wrap(errkind.InvalidArgument, err, "network cidr %q", cidr)
	}
	if !p.Addr().Is4() {
		return Subnet{}, errkind.New(errkind.InvalidArgument, "network cidr %q is not IPv4", cidr)
	}
	if p.Bits() < 8 || p.Bits() > 29 {
		return Subnet{}, errkind.New(errkind.InvalidArgument, "network cidr %q: prefix length must be between 8 and 29", cidr)
	}
	p = p.Masked()
	return Subnet{Prefix: p, Gateway: p.Addr().Next()}, nil
}

// GatewayPrefix is the bridge address with the subnet's length.
func (s Subnet) GatewayPrefix() netip.Prefix { return netip.PrefixFrom(s.Gateway, s.Prefix.Bits()) }

// broadcast is the last address of p.
func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	for i := 3; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		a[i] |= byte(1<<n - 1)
		host -= n
	}
	return netip.AddrFrom4(a)
}

// MACFor derives a stable, locally administered MAC from a VM address
// (unique within any subnet of /8 or smaller).
func MACFor(ip netip.Addr) string {
	a := ip.As4()
	return net.HardwareAddr{0x52, 0x54, 0x00, a[1], a[2], a[3]}.String()
}

// ValidateLinkName checks an interface name (IFNAMSIZ and the characters
// the kernel refuses).
func ValidateLinkName(what, n string) error {
	if n == "" || len(n) > 15 || strings.ContainsAny(n, "/ :\t\n") || n == "." || n == ".." {
		return errkind.New(errkind.InvalidArgument, "%s %q is not a valid interface name (1-15 characters, no '/', ':' or spaces)", what, n)
	}
	return nil
}

// Names returns the names derived from the bridge, so that two daemons
// with different bridges never touch each other's state: the nftables
// table ("banger" for the default bridge) and the tap name prefix.
func Names(bridge string) (table, tapPrefix string) {
	table = "banger"
	if bridge != "banger0" {
		table = "banger_" + bridge
	}
	return table, bridge + "-"
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
