package daemon

import (
	"context"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/portfwd"
)

// autoForwardInterval is how often the guest's listening ports are polled.
const autoForwardInterval = 2 * time.Second

// reconcile implements vmNetwork. It runs after the VMs were re-adopted:
// addresses are re-reserved, taps of VMs that are not running (and taps
// nobody records) are deleted, the table is rebuilt from the running VMs,
// DNS is rebuilt, and the forwards of running VMs start again.
func (h *hostNetwork) reconcile(ctx context.Context, vms []*model.VM) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	keep := map[string]bool{}
	for _, vm := range vms {
		running := h.d.vms.get(vm.ID) != nil
		changed := false
		if fs := manualForwards(vm.Network.Forwards); len(fs) != len(vm.Network.Forwards) {
			vm.Network.Forwards, changed = fs, true
		}
		if h.host != nil && vm.Network.IP != "" {
			ip, err := netip.ParseAddr(vm.Network.IP)
			if err == nil {
				err = h.host.alloc.Reserve(vm.ID, ip)
			}
			if err != nil {
				h.log.Warn("vm address dropped", "vm", vm.Name, "ip", vm.Network.IP, "err", err)
				if !running {
					vm.Network.IP, vm.Network.MAC, changed = "", "", true
				}
			}
		}
		if vm.Network.Tap != "" {
			switch {
			case running:
				keep[vm.Network.Tap] = true
			case h.host != nil:
				vm.Network.Tap, changed = "", true // deleted below with the orphans
			}
		}
		if changed {
			if err := h.d.store.UpdateVM(ctx, vm); err != nil {
				return err
			}
		}
		if !running {
			continue
		}
		a := &attachedVM{id: vm.ID, name: vm.Name, allowHosts: vm.Network.AllowHosts}
		h.active[vm.ID] = a
		if ip, err := netip.ParseAddr(vm.Network.IP); err == nil && h.host != nil && vm.Network.Tap != "" {
			a.direct.Store(&ip)
		}
		dial := h.guestDialer(vm, a)
		for _, f := range vm.Network.Forwards {
			if s, ok := specOf(f); ok {
				if err := h.fwd.Add(vm.ID, s, dial); err != nil {
					h.log.Warn("forward not restored", "vm", vm.Name, "forward", s.String(), "err", err)
				}
			}
		}
		if vm.Network.AutoForward {
			h.startAuto(a, vm)
		}
		mode := hostnet.Mode(vm.Network.Mode)
		if h.host == nil || vm.Network.Tap == "" || (mode != hostnet.ModeNAT && mode != hostnet.ModePrivate) {
			continue
		}
		ip, err := netip.ParseAddr(vm.Network.IP)
		if err != nil {
			continue
		}
		a.nic = true
		mac, _ := net.ParseMAC(vm.Network.MAC)
		a.rules = hostnet.VMRules{ID: vm.ID, Addr: ip, Tap: vm.Network.Tap, MAC: mac, Mode: mode}
		if err := a.applyAllowList(vm.Network); err != nil {
			h.log.Warn("vm allow-list unreadable", "vm", vm.Name, "err", err)
		}
		h.host.taps.Adopt(vm.Network.Tap)
		if mode == hostnet.ModeNAT && !h.host.forwardOn {
			if err := h.host.links.EnableForwarding(); err != nil {
				h.log.Warn("enabling forwarding", "err", err)
			} else {
				h.host.forwardOn = true
			}
		}
	}
	if h.host == nil {
		return nil
	}
	deleted, err := h.host.taps.Reconcile(keep)
	for _, t := range deleted {
		h.log.Info("deleted orphan tap", "tap", t)
	}
	if err != nil {
		h.log.Warn("deleting orphan taps", "err", err)
	}
	if err := h.applyLocked(); err != nil {
		h.log.Error("rebuilding the firewall table", "table", h.host.table, "err", err)
	}
	records := map[string]netip.Addr{}
	for _, a := range h.active {
		if a.nic {
			records[a.name] = a.rules.Addr
		}
	}
	h.host.dns.Replace(records)
	return nil
}

// applyLocked replaces the table with the rules of the attached VMs.
func (h *hostNetwork) applyLocked() error {
	hs := h.host
	rs := hostnet.Ruleset{Table: hs.table, Bridge: h.cfg.Bridge, Subnet: hs.subnet.Prefix}
	now := time.Now()
	for _, a := range h.active {
		if a.nic {
			r := a.rules
			if r.Restricted {
				r.HostAddrs = a.learntAddrs(now)
			}
			rs.VMs = append(rs.VMs, r)
		}
	}
	sort.Slice(rs.VMs, func(i, j int) bool { return rs.VMs[i].ID < rs.VMs[j].ID })
	return hs.fw.Apply(rs)
}

// onDNSAnswer opens a restricted VM's firewall to the addresses answered
// for its allowed names, before the guest sees the answer.
func (h *hostNetwork) onDNSAnswer(client netip.Addr, qname string, addrs []netip.Addr, ttl time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.host == nil {
		return
	}
	var a *attachedVM
	for _, v := range h.active {
		if v.nic && v.rules.Addr == client {
			a = v
			break
		}
	}
	if a == nil || !a.rules.Restricted || !hostAllowed(a.allowHosts, qname) {
		return
	}
	timeout := min(max(2*ttl, 5*time.Minute), 24*time.Hour)
	var add []hostnet.TimedAddr
	for _, ip := range addrs {
		if ip.Is4() {
			add = append(add, hostnet.TimedAddr{Addr: ip, Timeout: timeout})
		}
	}
	if len(add) == 0 {
		return
	}
	// Remember them so a table rebuild keeps them until they expire.
	if a.learnt == nil {
		a.learnt = map[netip.Addr]time.Time{}
	}
	for _, t := range add {
		a.learnt[t.Addr] = time.Now().Add(t.Timeout)
	}
	if err := h.host.fw.AllowAddrs(h.host.table, a.id, add); err != nil {
		h.log.Warn("adding allowed addresses", "vm", a.name, "name", qname, "err", err)
		return
	}
	h.log.Debug("allowed addresses", "vm", a.name, "name", qname, "addrs", addrs)
}

// learntAddrs returns the still valid addresses learnt from DNS.
func (a *attachedVM) learntAddrs(now time.Time) []hostnet.TimedAddr {
	var out []hostnet.TimedAddr
	for ip, exp := range a.learnt {
		if left := exp.Sub(now).Truncate(time.Second); left >= time.Second {
			out = append(out, hostnet.TimedAddr{Addr: ip, Timeout: left})
		} else {
			delete(a.learnt, ip)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out
}

// startAuto starts the auto-forward poller of a VM. h.mu is held.
func (h *hostNetwork) startAuto(a *attachedVM, vm *model.VM) {
	ctx, cancel := context.WithCancel(h.d.ctx)
	a.cancelAuto, a.autoDone = cancel, make(chan struct{})
	ref := &model.VM{ID: vm.ID, Name: vm.Name, State: model.StateRunning}
	ports := func(ctx context.Context) ([]portfwd.GuestPort, error) {
		c, err := h.d.agentFor(ctx, ref)
		if err != nil {
			return nil, err
		}
		ps, err := c.Ports(ctx)
		if err != nil {
			return nil, err
		}
		return guestPorts(ps), nil
	}
	dial := h.guestDialer(vm, a)
	go func() {
		defer close(a.autoDone)
		h.fwd.AutoForward(ctx, vm.ID, ports, dial, autoForwardInterval, func(specs []portfwd.Spec) {
			h.persistAuto(ctx, vm.ID, specs)
		})
	}()
}

func guestPorts(ps []agentproto.Port) []portfwd.GuestPort {
	out := make([]portfwd.GuestPort, 0, len(ps))
	for _, p := range ps {
		out = append(out, portfwd.GuestPort{Proto: p.Proto, Address: p.Address, Port: p.Port})
	}
	return out
}

// persistAuto records the automatic forwards on the VM row (for `vm
// show`), under the VM's lock. It gives up if ctx ends first (the VM is
// being stopped by whoever holds the lock).
func (h *hostNetwork) persistAuto(ctx context.Context, id string, specs []portfwd.Spec) {
	unlock, err := h.d.lockVMContext(ctx, id)
	if err != nil {
		return
	}
	defer unlock()
	if ctx.Err() != nil {
		return
	}
	vm, err := h.d.store.GetVM(ctx, id)
	if err != nil {
		return
	}
	vm.Network.Forwards = manualForwards(vm.Network.Forwards)
	for _, s := range specs {
		vm.Network.Forwards = append(vm.Network.Forwards, forwardOf(s, true))
	}
	if err := h.d.store.UpdateVM(ctx, vm); err != nil {
		h.log.Warn("recording automatic forwards", "vm", vm.Name, "err", err)
	}
}

// lockVMContext takes a VM's lifecycle lock unless ctx ends first.
func (d *Daemon) lockVMContext(ctx context.Context, id string) (func(), error) {
	got := make(chan func())
	go func() {
		unlock := d.vms.lock(id)
		select {
		case got <- unlock:
		case <-ctx.Done():
			unlock()
		}
	}()
	select {
	case u := <-got:
		return u, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
