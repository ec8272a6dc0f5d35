package hostnet

import (
	"net"
	"net/netip"
	"time"
)

// Ruleset is the whole desired content of banger's nftables table. The
// firewall replaces the table atomically with it, so applying the same
// ruleset twice changes nothing and a VM missing from it has no rule left.
type Ruleset struct {
	Table  string
	Bridge string
	Subnet netip.Prefix
	VMs    []VMRules
}

// VMRules is one attached VM.
type VMRules struct {
	ID   string // VM id; names the VM's chain and sets
	Addr netip.Addr
	Tap  string
	// MAC, when set, is the only source MAC accepted from the tap.
	MAC  net.HardwareAddr
	Mode Mode // ModeNAT or ModePrivate
	// Restricted means only AllowCIDRs and HostAddrs may be reached
	// (besides the host and other VMs).
	Restricted bool
	AllowCIDRs []netip.Prefix
	// HostAddrs are addresses learnt from DNS answers for allowed names.
	HostAddrs []TimedAddr
}

// TimedAddr is an address allowed for a while.
type TimedAddr struct {
	Addr    netip.Addr
	Timeout time.Duration
}

// Firewall programs the host's packet filter. A table name covers two
// nftables tables: "ip NAME" (forwarding, NAT, egress) and "bridge NAME"
// (anti-spoofing on each VM's tap).
type Firewall interface {
	// Apply replaces the table rs.Table with rs in one transaction.
	Apply(rs Ruleset) error
	// AllowAddrs adds addresses to a restricted VM's allow set (answers
	// of the DNS forwarder for allowed names).
	AllowAddrs(table, vmID string, addrs []TimedAddr) error
	// Delete removes the tables; missing tables are not an error.
	Delete(table string) error
}

// Chain and set names of a VM.
func vmChain(id string) string { return "vm_" + id }
func hostSet(id string) string { return "h_" + id }
func cidrSet(id string) string { return "c_" + id }
