package hostnet

import (
	"net/netip"
	"sync"

	"github.com/bangerdev/banger/internal/errkind"
)

// Allocator hands out VM addresses from a subnet under a lock. The
// durable record of an allocation is the VM row (the caller persists it);
// the allocator is rebuilt from those rows at startup with Reserve.
type Allocator struct {
	subnet Subnet

	mu    sync.Mutex
	owner map[netip.Addr]string // address → VM id
	byVM  map[string]netip.Addr
}

// NewAllocator returns an allocator for subnet with nothing allocated.
func NewAllocator(subnet Subnet) *Allocator {
	return &Allocator{subnet: subnet, owner: map[netip.Addr]string{}, byVM: map[string]netip.Addr{}}
}

// usable reports whether a can be given to a VM: inside the subnet, not
// the network, gateway or broadcast address.
func (a *Allocator) usable(ip netip.Addr) bool {
	p := a.subnet.Prefix
	return p.Contains(ip) && ip != p.Addr() && ip != a.subnet.Gateway && ip != broadcast(p)
}

// Reserve records that vm holds ip (an allocation read back from the
// store). It fails if the address is outside the subnet or held by
// another VM.
func (a *Allocator) Reserve(vm string, ip netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.usable(ip) {
		return errkind.New(errkind.Conflict, "address %s of vm %s is not usable in %s", ip, vm, a.subnet.Prefix)
	}
	if o, ok := a.owner[ip]; ok && o != vm {
		return errkind.New(errkind.Conflict, "address %s is held by vm %s and vm %s", ip, o, vm)
	}
	if old, ok := a.byVM[vm]; ok && old != ip {
		delete(a.owner, old)
	}
	a.owner[ip] = vm
	a.byVM[vm] = ip
	return nil
}

// Allocate returns vm's address, giving it the lowest free one if it has
// none.
func (a *Allocator) Allocate(vm string) (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ip, ok := a.byVM[vm]; ok {
		return ip, nil
	}
	p := a.subnet.Prefix
	for ip := p.Addr().Next(); p.Contains(ip); ip = ip.Next() {
		if !a.usable(ip) {
			continue
		}
		if _, taken := a.owner[ip]; taken {
			continue
		}
		a.owner[ip] = vm
		a.byVM[vm] = ip
		return ip, nil
	}
	return netip.Addr{}, errkind.WithHint(
		errkind.New(errkind.Unavailable, "no free address left in %s (%d VMs hold one)", p, len(a.byVM)),
		"delete unused VMs (`banger vm prune`) or configure a larger [network] cidr")
}

// Release frees vm's address.
func (a *Allocator) Release(vm string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ip, ok := a.byVM[vm]; ok {
		delete(a.owner, ip)
		delete(a.byVM, vm)
	}
}

// Free is the number of addresses still available.
func (a *Allocator) Free() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	total := 1<<(32-a.subnet.Prefix.Bits()) - 3 // network, gateway, broadcast
	return total - len(a.owner)
}

// Lookup returns the VM holding ip.
func (a *Allocator) Lookup(ip netip.Addr) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	vm, ok := a.owner[ip]
	return vm, ok
}
