package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strconv"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/portfwd"
)

// VMPorts lists the listening sockets inside a running VM, with the
// name.vm endpoints they answer on and the host forwards reaching them.
func (d *Daemon) VMPorts(ctx context.Context, ref string) (api.VMPorts, error) {
	vm, err := d.store.GetVM(ctx, ref)
	if err != nil {
		return api.VMPorts{}, err
	}
	c, err := d.agentFor(ctx, vm)
	if err != nil {
		return api.VMPorts{}, err
	}
	ps, err := c.Ports(ctx)
	if err != nil {
		return api.VMPorts{}, fmt.Errorf("listing ports of %s: %w", vm.Name, err)
	}
	out := api.VMPorts{VM: vm.Name, IP: vm.Network.IP, Ports: []api.GuestPort{}, Forwards: vm.Network.Forwards}
	if out.Forwards == nil {
		out.Forwards = []model.Forward{}
	}
	ip, hasIP := vmAddr(vm.Network.IP)
	hasIP = hasIP && vm.Network.Mode != "none" && vm.Network.Mode != ""
	for _, p := range ps {
		gp := api.GuestPort{Proto: p.Proto, Address: p.Address, Port: p.Port, PID: p.PID, Process: p.Process}
		if a, err := netip.ParseAddr(p.Address); err == nil && hasIP && (a.IsUnspecified() || a == ip) {
			gp.Endpoint = vm.Name + ".vm:" + strconv.Itoa(p.Port)
		}
		for _, f := range vm.Network.Forwards {
			if f.Proto == p.Proto && f.GuestPort == p.Port {
				if s, ok := specOf(f); ok {
					gp.Forwarded = append(gp.Forwarded, s.HostEndpoint())
				}
			}
		}
		out.Ports = append(out.Ports, gp)
	}
	return out, nil
}

// AddForward adds a host→guest forward to a VM: it is recorded on the VM
// (so it comes back at every start) and, when the VM runs, listens now.
func (d *Daemon) AddForward(ctx context.Context, ref, spec string) (model.Forward, error) {
	h, err := d.hostNet()
	if err != nil {
		return model.Forward{}, err
	}
	s, err := portfwd.ParseSpec(spec)
	if err != nil {
		return model.Forward{}, err
	}
	var added model.Forward
	_, err = d.withVM(ctx, ref, func(vm *model.VM) error {
		for _, f := range vm.Network.Forwards {
			o, ok := specOf(f)
			if !ok || f.Auto || !o.Conflicts(s) {
				continue
			}
			if o == s {
				added = f
				return nil // already there
			}
			return errkind.New(errkind.Conflict, "vm %s already forwards host port %s/%s to port %d",
				vm.Name, o.HostEndpoint(), o.Proto, o.GuestPort)
		}
		running := d.vms.get(vm.ID) != nil
		if running {
			if err := h.checkHostPortOwners(ctx, vm.ID, s); err != nil {
				return err
			}
			// An automatic forward on the same port gives way.
			for _, a := range h.fwd.List(vm.ID) {
				if a.Auto && a.Spec.Conflicts(s) {
					_ = h.fwd.Remove(vm.ID, a.Spec)
				}
			}
			h.mu.Lock()
			a := h.active[vm.ID]
			h.mu.Unlock()
			if err := h.fwd.Add(vm.ID, s, h.guestDialer(vm, a)); err != nil {
				return err
			}
		} else if err := h.checkHostPort(ctx, vm.ID, s); err != nil {
			return err
		}
		added = forwardOf(s, false)
		fs := []model.Forward{added}
		for _, f := range vm.Network.Forwards {
			if o, ok := specOf(f); !(ok && f.Auto && o.Conflicts(s)) {
				fs = append(fs, f)
			}
		}
		sortForwards(fs)
		vm.Network.Forwards = fs
		if err := d.store.UpdateVM(ctx, vm); err != nil {
			if running {
				_ = h.fwd.Remove(vm.ID, s)
			}
			return err
		}
		return nil
	})
	return added, err
}

// checkHostPortOwners is checkHostPort without the bind probe (the
// forward manager binds for real).
func (h *hostNetwork) checkHostPortOwners(ctx context.Context, vmID string, s portfwd.Spec) error {
	vms, err := h.d.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	for _, vm := range vms {
		if vm.ID == vmID {
			continue
		}
		for _, f := range vm.Network.Forwards {
			if o, ok := specOf(f); ok && !f.Auto && o.Conflicts(s) {
				return errkind.New(errkind.Conflict, "host port %s/%s is already forwarded to vm %s port %d",
					s.HostEndpoint(), s.Proto, vm.Name, o.GuestPort)
			}
		}
	}
	return nil
}

// RemoveForward removes a forward from a VM (spec names its host side;
// the guest port may be omitted: "8080" or "127.0.0.1:8080/udp").
func (d *Daemon) RemoveForward(ctx context.Context, ref, spec string) error {
	h, err := d.hostNet()
	if err != nil {
		return err
	}
	_, err = d.withVM(ctx, ref, func(vm *model.VM) error {
		var keep []model.Forward
		var gone *model.Forward
		for _, f := range vm.Network.Forwards {
			if gone == nil && !f.Auto && forwardMatches(f, spec) {
				gone = &f
				continue
			}
			keep = append(keep, f)
		}
		if gone == nil {
			return errkind.New(errkind.NotFound, "vm %s has no forward %q", vm.Name, spec)
		}
		if s, ok := specOf(*gone); ok {
			if err := h.fwd.Remove(vm.ID, s); err != nil && errkind.Of(err) != errkind.NotFound {
				return err
			}
		}
		vm.Network.Forwards = keep
		return d.store.UpdateVM(ctx, vm)
	})
	return err
}

// forwardMatches accepts a full spec, or a host side only.
func forwardMatches(f model.Forward, spec string) bool {
	s, ok := specOf(f)
	if !ok {
		return false
	}
	if full, err := portfwd.ParseSpec(spec); err == nil {
		return full == s
	}
	// HOST_PORT[/proto] or HOST_ADDR:HOST_PORT[/proto]: parse with a dummy
	// guest port.
	proto := ""
	host := spec
	if i := len(spec) - 4; i > 0 && (spec[i:] == "/tcp" || spec[i:] == "/udp") {
		proto, host = spec[i+1:], spec[:i]
	}
	probe, err := portfwd.ParseSpec(host + ":1")
	if err != nil {
		return false
	}
	if proto != "" && proto != s.Proto {
		return false
	}
	return probe.HostAddr == s.HostAddr && probe.HostPort == s.HostPort
}

func sortForwards(fs []model.Forward) {
	sort.SliceStable(fs, func(i, j int) bool {
		if fs[i].Auto != fs[j].Auto {
			return !fs[i].Auto
		}
		if fs[i].HostPort != fs[j].HostPort {
			return fs[i].HostPort < fs[j].HostPort
		}
		return fs[i].Proto < fs[j].Proto
	})
}
