package agent

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// configureNetwork brings lo up and, when cfg has an address, configures
// the first non-loopback interface (or the one with cfg.MAC) with it and a
// default route via cfg.Gateway. The kernel has no ip= support, so this is
// done with the classic ioctls.
func configureNetwork(cfg BootConfig, logf func(string, ...any)) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening control socket: %w", err)
	}
	defer unix.Close(fd)
	if err := linkUp(fd, "lo"); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	logf("network: lo up")
	if !cfg.Addr.IsValid() {
		logf("network: no banger.ip, leaving other interfaces down")
		return nil
	}
	iface, err := waitInterface(cfg.MAC, 5*time.Second)
	if err != nil {
		return err
	}
	ifr, err := unix.NewIfreq(iface)
	if err != nil {
		return err
	}
	if err := ifr.SetInet4Addr(cfg.Addr.Addr().AsSlice()); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFADDR, ifr); err != nil {
		return fmt.Errorf("setting address of %s: %w", iface, err)
	}
	mask := net.CIDRMask(cfg.Addr.Bits(), 32)
	if err := ifr.SetInet4Addr(mask); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFNETMASK, ifr); err != nil {
		return fmt.Errorf("setting netmask of %s: %w", iface, err)
	}
	if err := linkUp(fd, iface); err != nil {
		return fmt.Errorf("bringing %s up: %w", iface, err)
	}
	logf("network: %s %s up", iface, cfg.Addr)
	if cfg.Gateway.IsValid() {
		if err := addDefaultRoute(fd, iface, cfg.Gateway); err != nil {
			return fmt.Errorf("adding default route via %s: %w", cfg.Gateway, err)
		}
		logf("network: default via %s dev %s", cfg.Gateway, iface)
	}
	return nil
}

func linkUp(fd int, name string) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_RUNNING)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// waitInterface returns the interface with mac, or the first non-loopback
// one (by index) when mac is nil, waiting for the driver to create it.
func waitInterface(mac net.HardwareAddr, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if name := pickInterface("/sys/class/net", mac); name != "" {
			return name, nil
		}
		if time.Now().After(deadline) {
			if mac != nil {
				return "", fmt.Errorf("no network interface with MAC %s", mac)
			}
			return "", fmt.Errorf("no network interface found")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pickInterface(sysNet string, mac net.HardwareAddr) string {
	ents, err := os.ReadDir(sysNet)
	if err != nil {
		return ""
	}
	type cand struct {
		name  string
		index int
	}
	var cands []cand
	for _, e := range ents {
		name := e.Name()
		if name == "lo" {
			continue
		}
		if t, _ := os.ReadFile(filepath.Join(sysNet, name, "type")); strings.TrimSpace(string(t)) != "1" {
			continue // not Ethernet
		}
		if mac != nil {
			a, _ := os.ReadFile(filepath.Join(sysNet, name, "address"))
			hw, err := net.ParseMAC(strings.TrimSpace(string(a)))
			if err != nil || !bytes.Equal(hw, mac) {
				continue
			}
		}
		idx := 0
		if b, err := os.ReadFile(filepath.Join(sysNet, name, "ifindex")); err == nil {
			fmt.Sscan(string(b), &idx)
		}
		cands = append(cands, cand{name, idx})
	}
	if len(cands) == 0 {
		return ""
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].index < cands[j].index })
	return cands[0].name
}

// rtentry is struct rtentry from <net/route.h> on 64-bit Linux.
type rtentry struct {
	pad1    uint64
	dst     unix.RawSockaddrInet4
	gateway unix.RawSockaddrInet4
	genmask unix.RawSockaddrInet4
	flags   uint16
	pad2    int16
	_       [4]byte
	pad3    uint64
	pad4    uintptr
	metric  int16
	_       [6]byte
	dev     *byte
	mtu     uint64
	window  uint64
	irtt    uint16
	_       [6]byte
}

func addDefaultRoute(fd int, iface string, gw netip.Addr) error {
	dev, err := unix.BytePtrFromString(iface)
	if err != nil {
		return err
	}
	rt := rtentry{flags: unix.RTF_UP | unix.RTF_GATEWAY, dev: dev}
	rt.dst.Family = unix.AF_INET
	rt.genmask.Family = unix.AF_INET
	rt.gateway.Family = unix.AF_INET
	rt.gateway.Addr = gw.As4()
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCADDRT, uintptr(unsafe.Pointer(&rt)))
	if errno != 0 && errno != unix.EEXIST {
		return errno
	}
	return nil
}

// HostsFile is the /etc/hosts the init writes.
func HostsFile(hostname string, addr netip.Prefix) string {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	if hostname != "" {
		short, _, _ := strings.Cut(hostname, ".")
		names := hostname
		if short != hostname {
			names += " " + short
		}
		if addr.IsValid() {
			fmt.Fprintf(&b, "%s\t%s\n", addr.Addr(), names)
		} else {
			fmt.Fprintf(&b, "127.0.1.1\t%s\n", names)
		}
	}
	return b.String()
}

// ResolvConf is the /etc/resolv.conf the init writes.
func ResolvConf(servers []netip.Addr) string {
	var b strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	return b.String()
}

// writeEtcFile replaces an /etc file, including a symlink (such as
// resolv.conf pointing at systemd-resolved's stub), with a regular file.
func writeEtcFile(path, content string) error {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		if err := os.Remove(path); err != nil {
			return err
		}
	}
	tmp := path + ".banger-tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
