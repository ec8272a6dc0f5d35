package hostnet

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/errkind"
)

// Link is a network interface, as much as banger needs to know.
type Link struct {
	Name   string
	Kind   string // "bridge", "tuntap", "veth", …
	Master string // bridge the link is enslaved to
	Up     bool
	Addrs  []netip.Prefix
	Alias  string // ifalias: banger marks its taps with their owner
}

// Links changes the host's interfaces and reads its routes.
type Links interface {
	// EnsureBridge creates the bridge if needed, gives it addr (and no other
	// IPv4 address) and brings it up. It is idempotent.
	EnsureBridge(name string, addr netip.Prefix) error
	// AddTap creates a persistent tap enslaved to bridge, marked with
	// owner (its ifalias), and brings it up.
	AddTap(name, bridge, owner string) error
	// DeleteLink removes a link; a missing link is not an error.
	DeleteLink(name string) error
	// List returns every link.
	List() ([]Link, error)
	// Routes returns the IPv4 routes of every table.
	Routes() ([]Route, error)
	// EnableForwarding turns IPv4 forwarding on (needed for NAT).
	EnableForwarding() error
}

// Netlink implements Links with rtnetlink.
type Netlink struct {
	h  *netlink.Handle
	ns netns.NsHandle // target namespace when not the current one (tests)
	// Sysctl writes a /proc/sys/net key (such as "ipv4/ip_forward").
	Sysctl func(key, value string) error
}

// NewNetlink returns Links for the current network namespace.
func NewNetlink() (*Netlink, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening rtnetlink: %w", err)
	}
	return &Netlink{h: h, ns: netns.None(), Sysctl: writeSysctl}, nil
}

// NewNetlinkAt returns Links for another network namespace (tests): h is
// an rtnetlink handle in it, ns the namespace itself (taps are created
// with an ioctl, from a thread switched into it).
func NewNetlinkAt(h *netlink.Handle, ns netns.NsHandle, sysctl func(key, value string) error) *Netlink {
	return &Netlink{h: h, ns: ns, Sysctl: sysctl}
}

// inNS runs fn on a thread in the target namespace.
func (n *Netlink) inNS(fn func() error) error {
	if !n.ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is not unlocked: it dies with the goroutine rather than
		// going back to the pool in the wrong namespace.
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(n.ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Close releases the netlink socket.
func (n *Netlink) Close() { n.h.Close() }

func writeSysctl(key, value string) error {
	return os.WriteFile(filepath.Join("/proc/sys/net", key), []byte(value+"\n"), 0o644)
}

// disableIPv6 keeps banger's links IPv4-only (no link-local chatter, no
// route the firewall does not cover). A kernel without IPv6 is fine.
func (n *Netlink) disableIPv6(name string) error {
	err := n.Sysctl("ipv6/conf/"+name+"/disable_ipv6", "1")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disabling IPv6 on %s: %w", name, err)
	}
	return nil
}

// EnsureBridge implements Links.
func (n *Netlink) EnsureBridge(name string, addr netip.Prefix) error {
	l, err := n.h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := n.h.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("creating bridge %s: %w", name, err)
		}
		if l, err = n.h.LinkByName(name); err != nil {
			return fmt.Errorf("finding bridge %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("finding bridge %s: %w", name, err)
	case l.Type() != "bridge":
		return errkind.New(errkind.Conflict, "interface %s exists and is a %s, not a bridge", name, l.Type())
	}
	if err := n.disableIPv6(name); err != nil {
		return err
	}
	addrs, err := n.h.AddrList(l, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", name, err)
	}
	have := false
	for _, a := range addrs {
		p, ok := prefixOf(a)
		if ok && p == addr {
			have = true
			continue
		}
		if err := n.h.AddrDel(l, &a); err != nil {
			return fmt.Errorf("removing stale address %s from %s: %w", a.IPNet, name, err)
		}
	}
	if !have {
		a := &netlink.Addr{IPNet: ipNet(addr)}
		if err := n.h.AddrAdd(l, a); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding %s to %s: %w", addr, name, err)
		}
	}
	if err := n.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bringing %s up: %w", name, err)
	}
	return nil
}

// AddTap implements Links.
func (n *Netlink) AddTap(name, bridge, owner string) error {
	br, err := n.h.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("finding bridge %s: %w", bridge, err)
	}
	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: br.Attrs().Index},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_TUN_EXCL,
	}
	if err := n.inNS(func() error { return n.h.LinkAdd(tap) }); err != nil {
		return fmt.Errorf("creating tap %s: %w", name, err)
	}
	if err := n.disableIPv6(name); err != nil {
		_ = n.DeleteLink(name)
		return err
	}
	if owner != "" {
		if err := n.h.LinkSetAlias(tap, owner); err != nil {
			_ = n.DeleteLink(name)
			return fmt.Errorf("marking %s: %w", name, err)
		}
	}
	if err := n.h.LinkSetUp(tap); err != nil {
		_ = n.DeleteLink(name)
		return fmt.Errorf("bringing %s up: %w", name, err)
	}
	return nil
}

// DeleteLink implements Links.
func (n *Netlink) DeleteLink(name string) error {
	l, err := n.h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("finding %s: %w", name, err)
	}
	if err := n.h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	return nil
}

// List implements Links.
func (n *Netlink) List() ([]Link, error) {
	ls, err := n.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	byIndex := map[int]string{}
	for _, l := range ls {
		byIndex[l.Attrs().Index] = l.Attrs().Name
	}
	out := make([]Link, 0, len(ls))
	for _, l := range ls {
		a := l.Attrs()
		link := Link{Name: a.Name, Kind: l.Type(), Up: a.Flags&unix.IFF_UP != 0, Alias: a.Alias}
		if a.MasterIndex != 0 {
			link.Master = byIndex[a.MasterIndex]
		}
		if addrs, err := n.h.AddrList(l, unix.AF_INET); err == nil {
			for _, ad := range addrs {
				if p, ok := prefixOf(ad); ok {
					link.Addrs = append(link.Addrs, p)
				}
			}
		}
		out = append(out, link)
	}
	return out, nil
}

// Routes implements Links.
func (n *Netlink) Routes() ([]Route, error) {
	rs, err := n.h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	names := map[int]string{}
	if ls, err := n.h.LinkList(); err == nil {
		for _, l := range ls {
			names[l.Attrs().Index] = l.Attrs().Name
		}
	}
	out := make([]Route, 0, len(rs))
	for _, r := range rs {
		rt := Route{Dev: names[r.LinkIndex], Table: r.Table}
		if r.Dst != nil {
			if a, ok := netip.AddrFromSlice(r.Dst.IP); ok {
				ones, _ := r.Dst.Mask.Size()
				rt.Dst = netip.PrefixFrom(a.Unmap(), ones)
			}
		}
		rt.Source = rt.String()
		if r.Table != unix.RT_TABLE_MAIN && r.Table != 0 {
			rt.Source += fmt.Sprintf(" table %d", r.Table)
		}
		out = append(out, rt)
	}
	return out, nil
}

// EnableForwarding implements Links.
func (n *Netlink) EnableForwarding() error {
	if err := n.Sysctl("ipv4/ip_forward", "1"); err != nil {
		return fmt.Errorf("enabling IPv4 forwarding: %w", err)
	}
	return nil
}

func prefixOf(a netlink.Addr) (netip.Prefix, bool) {
	if a.IPNet == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(a.IPNet.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := a.IPNet.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}
