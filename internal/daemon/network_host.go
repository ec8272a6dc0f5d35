package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/portfwd"
	"github.com/bangerdev/banger/internal/vmdns"
	"github.com/bangerdev/banger/internal/vmm"
)

// hostNetwork is the real vmNetwork: port forwards over the agent channel
// always, and, when the host allows it (root, free subnet, nf_tables), a
// bridge with one tap per VM, NAT or host-only rules, egress allow-lists
// and the .vm DNS server.
type hostNetwork struct {
	d    *Daemon
	log  *slog.Logger
	cfg  config.Network
	host *hostSide // nil when host networking is unavailable
	// reason says why host is nil.
	reason string
	fwd    *portfwd.Manager
	// forwardDirect is cfg.ForwardDirect (atomic: forwards read it).
	forwardDirect atomic.Bool

	mu     sync.Mutex
	active map[string]*attachedVM // by VM id, while attached
}

// hostSide is the kernel-facing half of hostNetwork.
type hostSide struct {
	links     hostnet.Links
	fw        hostnet.Firewall
	subnet    hostnet.Subnet
	table     string
	alloc     *hostnet.Allocator
	taps      *hostnet.TapPool
	dns       *vmdns.Server
	guestDNS  string // ip:port guests resolve through
	hostDNS   string // loopback listener ("" when off or failed)
	upstreams []string
	lock      *os.File
	forwardOn bool // ip_forward enabled by us
}

// attachedVM is the in-memory state of a VM between attach and detach.
type attachedVM struct {
	id, name   string
	nic        bool
	rules      hostnet.VMRules
	allowHosts []string
	learnt     map[netip.Addr]time.Time   // allowed by DNS answers, until
	direct     atomic.Pointer[netip.Addr] // bridge address forwards may dial
	noDirect   sync.Map                   // guest port → time.Time until which it goes over the agent
	cancelAuto context.CancelFunc
	autoDone   chan struct{}
}

// hostSideOptions are the seams of newHostSide (tests pass fakes).
type hostSideOptions struct {
	links   hostnet.Links
	fw      hostnet.Firewall
	lockDir string
	// guestDNSListen overrides gateway:53 (tests, where the bridge is fake).
	guestDNSListen string
	resolvConf     string
	// owner marks the taps (the daemon's state directory).
	owner string
}

// setupNetwork picks the daemon's network: hostNetwork, with its host side
// when the host can do it (the reason is logged when not).
func (d *Daemon) setupNetwork(ctx context.Context) vmNetwork {
	h := newHostNetwork(d, d.cfg.Network)
	if d.cfg.Network.Disabled {
		h.reason = "host networking is disabled in the configuration ([network] disabled = true)"
	} else if os.Geteuid() != 0 {
		h.reason = "bangerd is not running as root (bridge, taps and nftables need CAP_NET_ADMIN)"
	} else {
		links, err := hostnet.NewNetlink()
		if err != nil {
			h.reason = err.Error()
		} else {
			hs, err := newHostSide(d.cfg.Network, h.onDNSAnswer, d.log, hostSideOptions{
				links: links, fw: &hostnet.NFT{}, lockDir: "/run/lock", resolvConf: "/etc/resolv.conf", owner: d.layout.StateDir,
			})
			if err != nil {
				links.Close()
				h.reason = err.Error()
			} else {
				h.host = hs
			}
		}
	}
	if h.host == nil {
		d.log.Warn("host networking unavailable; VMs get --net none (port forwards still work)", "reason", h.reason)
	} else {
		d.log.Info("host networking ready", "bridge", d.cfg.Network.Bridge, "cidr", h.host.subnet.Prefix,
			"guest_dns", h.host.guestDNS, "host_dns", h.host.hostDNS, "upstream_dns", h.host.upstreams)
	}
	return h
}

func newHostNetwork(d *Daemon, cfg config.Network) *hostNetwork {
	h := &hostNetwork{d: d, log: d.log, cfg: cfg, fwd: portfwd.NewManager(d.log), active: map[string]*attachedVM{}}
	h.forwardDirect.Store(cfg.ForwardDirect)
	return h
}

// newHostSide takes the bridge's host-wide lock, checks the subnet against
// the host's routes, sets up the bridge, probes nf_tables and starts DNS.
func newHostSide(cfg config.Network, onAnswer vmdns.AnswerFunc, log *slog.Logger, o hostSideOptions) (_ *hostSide, err error) {
	subnet, err := hostnet.ParseSubnet(cfg.CIDR)
	if err != nil {
		return nil, err
	}
	if err := hostnet.ValidateLinkName("bridge", cfg.Bridge); err != nil {
		return nil, err
	}
	table, tapPrefix := hostnet.Names(cfg.Bridge)
	hs := &hostSide{links: o.links, fw: o.fw, subnet: subnet, table: table, alloc: hostnet.NewAllocator(subnet)}
	if hs.lock, err = lockBridge(o.lockDir, cfg.Bridge); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			hs.close()
		}
	}()
	routes, err := o.links.Routes()
	if err != nil {
		return nil, err
	}
	if err := hostnet.CheckSubnet(subnet.Prefix, cfg.Bridge, routes); err != nil {
		return nil, err
	}
	if err := o.links.EnsureBridge(cfg.Bridge, subnet.GatewayPrefix()); err != nil {
		return nil, fmt.Errorf("setting up bridge %s: %w", cfg.Bridge, err)
	}
	probe := table + "_probe"
	if err := o.fw.Apply(hostnet.Ruleset{Table: probe, Bridge: cfg.Bridge, Subnet: subnet.Prefix}); err != nil {
		return nil, fmt.Errorf("nftables unusable: %w", err)
	}
	if err := o.fw.Delete(probe); err != nil {
		return nil, err
	}
	hs.taps = hostnet.NewTapPool(o.links, cfg.Bridge, tapPrefix, "banger "+o.owner, cfg.TapPool)

	guestListen := o.guestDNSListen
	if guestListen == "" {
		guestListen = net.JoinHostPort(subnet.Gateway.String(), "53")
	}
	hs.upstreams, err = upstreamResolvers(cfg.UpstreamDNS, o.resolvConf, guestListen)
	if err != nil {
		log.Warn("no upstream resolvers; guests resolve only .vm names", "err", err)
	}
	hs.dns = vmdns.New(vmdns.Options{Upstreams: hs.upstreams, OnAnswer: onAnswer, Logger: log,
		ForwardFrom: []netip.Prefix{subnet.Prefix}})
	if hs.guestDNS, err = hs.dns.Listen(guestListen, true); err != nil {
		return nil, fmt.Errorf("serving DNS to guests: %w", err)
	}
	if cfg.DNSListen != "" {
		if hs.hostDNS, err = hs.dns.Listen(cfg.DNSListen, false); err != nil {
			log.Warn("host .vm DNS listener not started", "err", err)
			hs.hostDNS, err = "", nil
		}
	}
	return hs, nil
}

func (hs *hostSide) close() {
	if hs.dns != nil {
		hs.dns.Close()
	}
	if hs.taps != nil {
		hs.taps.Close()
	}
	if c, ok := hs.links.(interface{ Close() }); ok {
		c.Close()
	}
	if hs.lock != nil {
		hs.lock.Close()
	}
}

// lockBridge takes a host-wide lock for a bridge, so two daemons (two
// BANGER_HOMEs) never manage the same bridge, taps and table.
func lockBridge(dir, bridge string) (*os.File, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	p := filepath.Join(dir, "banger-net-"+bridge+".lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", p, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		return nil, errkind.WithHint(
			errkind.New(errkind.Conflict, "bridge %s is managed by another bangerd (pid %s)", bridge, strings.TrimSpace(string(b[:n]))),
			"give this daemon another [network] bridge and cidr")
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

func upstreamResolvers(configured []string, resolvConf, self string) ([]string, error) {
	if len(configured) > 0 {
		out := make([]string, 0, len(configured))
		for _, u := range configured {
			if _, err := netip.ParseAddr(u); err == nil {
				u = net.JoinHostPort(u, "53")
			}
			out = append(out, u)
		}
		return out, nil
	}
	ups, err := vmdns.HostResolvers(resolvConf, self)
	if err == nil && len(ups) == 0 {
		err = fmt.Errorf("%s lists no other nameserver", resolvConf)
	}
	return ups, err
}

func (h *hostNetwork) defaultMode() hostnet.Mode {
	if h.host == nil {
		return hostnet.ModeNone
	}
	m, err := hostnet.ParseMode(h.cfg.DefaultMode)
	if err != nil {
		return hostnet.ModeNAT
	}
	return m
}

func (h *hostNetwork) unavailable(what string) error {
	return errkind.WithHint(errkind.New(errkind.Unavailable, "%s is not available: %s", what, h.reason),
		"see `banger network` and docs/networking.md")
}

// directDialTimeout bounds a forward's attempt to reach the guest over
// the bridge before it falls back to the agent channel.
const directDialTimeout = time.Second

// noDirectFor is how long a guest port that did not answer on the bridge
// goes straight to the agent channel.
const noDirectFor = 30 * time.Second

// guestDialer dials guest ports for forwards: TCP straight to the guest's
// bridge address when it has one and the port answers there (and
// forward_direct is on), otherwise through the VM's agent session, which
// reaches the guest's loopback and works without a NIC.
func (h *hostNetwork) guestDialer(vm *model.VM, a *attachedVM) portfwd.DialFunc {
	ref := &model.VM{ID: vm.ID, Name: vm.Name, State: model.StateRunning}
	return func(ctx context.Context, network string, port int) (net.Conn, error) {
		if network == "tcp" && h.forwardDirect.Load() && a != nil {
			if c := a.dialDirect(ctx, port); c != nil {
				return c, nil
			}
		}
		c, err := h.d.agentFor(ctx, ref)
		if err != nil {
			return nil, err
		}
		return c.Dial(ctx, network, port)
	}
}

func (a *attachedVM) dialDirect(ctx context.Context, port int) net.Conn {
	ip := a.direct.Load()
	if ip == nil {
		return nil
	}
	if until, ok := a.noDirect.Load(port); ok && time.Now().Before(until.(time.Time)) {
		return nil
	}
	d := net.Dialer{Timeout: directDialTimeout}
	c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(*ip, uint16(port)).String())
	if err != nil {
		a.noDirect.Store(port, time.Now().Add(noDirectFor))
		return nil
	}
	return c
}

// attach implements vmNetwork.
func (h *hostNetwork) attach(ctx context.Context, vm *model.VM) (_ *vmm.Net, _ []string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.active[vm.ID]; old != nil {
		h.detachLocked(ctx, vm) // a stale attachment (should not happen)
	}
	a := &attachedVM{id: vm.ID, name: vm.Name, allowHosts: vm.Network.AllowHosts}
	h.active[vm.ID] = a
	defer func() {
		if err != nil {
			h.detachLocked(context.WithoutCancel(ctx), vm)
		}
	}()
	vm.Network.Forwards = manualForwards(vm.Network.Forwards)
	dial := h.guestDialer(vm, a)
	for _, f := range vm.Network.Forwards {
		s, ok := specOf(f)
		if !ok {
			continue
		}
		if err := h.fwd.Add(vm.ID, s, dial); err != nil {
			return nil, nil, fmt.Errorf("forward %s: %w", s, err)
		}
	}
	if vm.Network.AutoForward {
		h.startAuto(a, vm)
	}
	mode := hostnet.Mode(vm.Network.Mode)
	if mode == "" || mode == hostnet.ModeNone {
		return nil, nil, nil
	}
	if h.host == nil {
		return nil, nil, h.unavailable("--net " + string(mode))
	}
	hs := h.host
	var ip netip.Addr
	if vm.Network.IP != "" {
		if ip, err = netip.ParseAddr(vm.Network.IP); err == nil {
			err = hs.alloc.Reserve(vm.ID, ip)
		}
		if err != nil {
			h.log.Warn("vm address not reusable; allocating another", "vm", vm.Name, "ip", vm.Network.IP, "err", err)
			ip = netip.Addr{}
		}
	}
	if !ip.IsValid() {
		if ip, err = hs.alloc.Allocate(vm.ID); err != nil {
			return nil, nil, err
		}
		defer func() {
			if err != nil && vm.Network.IP != ip.String() {
				hs.alloc.Release(vm.ID) // never recorded: give it back
			}
		}()
	}
	tap, err := hs.taps.Take()
	if err != nil {
		return nil, nil, fmt.Errorf("taking a tap: %w", err)
	}
	vm.Network.IP, vm.Network.MAC, vm.Network.Tap = ip.String(), hostnet.MACFor(ip), tap
	// Persist now, so a crash from here on still finds the tap to delete.
	if err := h.d.store.UpdateVM(ctx, vm); err != nil {
		return nil, nil, err
	}
	a.nic = true
	a.direct.Store(&ip)
	mac, _ := net.ParseMAC(vm.Network.MAC)
	a.rules = hostnet.VMRules{ID: vm.ID, Addr: ip, Tap: tap, MAC: mac, Mode: mode}
	if err := a.applyAllowList(vm.Network); err != nil {
		return nil, nil, err
	}
	if mode == hostnet.ModeNAT && !hs.forwardOn {
		if err := hs.links.EnableForwarding(); err != nil {
			return nil, nil, err
		}
		hs.forwardOn = true
	}
	if err := h.applyLocked(); err != nil {
		return nil, nil, err
	}
	hs.dns.Set(vm.Name, ip)
	go hs.taps.Fill()
	params := []string{
		"banger.ip=" + netip.PrefixFrom(ip, hs.subnet.Prefix.Bits()).String(),
		"banger.mac=" + vm.Network.MAC,
		"banger.dns=" + hs.subnet.Gateway.String(),
	}
	if mode == hostnet.ModeNAT {
		params = append(params, "banger.gw="+hs.subnet.Gateway.String())
	}
	return &vmm.Net{Mode: vmm.NetTap, TapName: tap, MAC: vm.Network.MAC}, params, nil
}

func (a *attachedVM) applyAllowList(n model.VMNetwork) error {
	if len(n.AllowHosts) == 0 && len(n.AllowCIDRs) == 0 {
		return nil
	}
	a.rules.Restricted = true
	for _, c := range n.AllowCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return fmt.Errorf("allow-cidr %q: %w", c, err)
		}
		a.rules.AllowCIDRs = append(a.rules.AllowCIDRs, p)
	}
	return nil
}

// manualForwards drops automatic forwards (they are re-discovered).
func manualForwards(fs []model.Forward) []model.Forward {
	var out []model.Forward
	for _, f := range fs {
		if !f.Auto {
			out = append(out, f)
		}
	}
	return out
}

// detach implements vmNetwork.
func (h *hostNetwork) detach(ctx context.Context, vm *model.VM) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.detachLocked(ctx, vm)
}

func (h *hostNetwork) detachLocked(ctx context.Context, vm *model.VM) error {
	a := h.active[vm.ID]
	delete(h.active, vm.ID)
	if a != nil && a.cancelAuto != nil {
		a.cancelAuto()
		<-a.autoDone
	}
	h.fwd.StopVM(vm.ID)
	vm.Network.Forwards = manualForwards(vm.Network.Forwards)
	if h.host == nil {
		if vm.Network.Tap != "" {
			h.log.Warn("cannot delete the tap of a vm: host networking unavailable", "vm", vm.Name, "tap", vm.Network.Tap, "reason", h.reason)
		}
		return nil
	}
	var errs []error
	if a != nil && a.nic {
		if err := h.applyLocked(); err != nil {
			errs = append(errs, err)
		}
	}
	if cur, ok := h.host.dns.Lookup(vm.Name); ok && cur.String() == vm.Network.IP {
		h.host.dns.Remove(vm.Name)
	}
	if vm.Network.Tap != "" {
		if err := h.host.taps.Release(vm.Network.Tap); err != nil {
			errs = append(errs, err)
		} else {
			vm.Network.Tap = ""
		}
	}
	return errors.Join(errs...)
}

// forget implements vmNetwork.
func (h *hostNetwork) forget(ctx context.Context, vm *model.VM) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	err := h.detachLocked(ctx, vm)
	if h.host != nil {
		h.host.alloc.Release(vm.ID)
		vm.Network.IP, vm.Network.MAC = "", ""
	}
	return err
}

// close implements vmNetwork. Running VMs keep their taps and rules; their
// forwards stop with the daemon and come back at the next start.
func (h *hostNetwork) close() error {
	h.mu.Lock()
	for _, a := range h.active {
		if a.cancelAuto != nil {
			a.cancelAuto()
		}
	}
	var waits []chan struct{}
	for _, a := range h.active {
		if a.autoDone != nil {
			waits = append(waits, a.autoDone)
		}
	}
	h.mu.Unlock()
	for _, w := range waits {
		<-w
	}
	h.fwd.Close()
	if h.host != nil {
		h.host.close()
	}
	return nil
}
