package portfwd

import (
	"context"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
)

// Manager holds the active forwards of every VM.
type Manager struct {
	log *slog.Logger

	mu    sync.Mutex
	byVM  map[string]map[string]*Forwarder // vm → Spec.Key() → forward
	autos map[string]map[string]bool       // vm → keys started by auto-forward
}

// NewManager returns a manager with no forwards.
func NewManager(log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{log: log, byVM: map[string]map[string]*Forwarder{}, autos: map[string]map[string]bool{}}
}

// conflictLocked returns the VM and forward holding a host socket spec
// needs, if any.
func (m *Manager) conflictLocked(spec Spec) (string, *Forwarder) {
	for vm, fs := range m.byVM {
		for _, f := range fs {
			if f.spec.Conflicts(spec) {
				return vm, f
			}
		}
	}
	return "", nil
}

// Add starts a forward for vm. Adding a forward that is already active
// for the same VM is a no-op.
func (m *Manager) Add(vm string, spec Spec, dial DialFunc) error {
	_, err := m.add(vm, spec, dial, false)
	return err
}

func (m *Manager) add(vm string, spec Spec, dial DialFunc, auto bool) (*Forwarder, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f, ok := m.byVM[vm][spec.Key()]; ok {
		if f.spec == spec {
			if !auto {
				delete(m.autos[vm], spec.Key()) // now wanted explicitly
			}
			return f, nil
		}
	}
	if owner, f := m.conflictLocked(spec); f != nil {
		return nil, errkind.New(errkind.Conflict, "host port %s/%s is already forwarded (to vm %s port %d)",
			spec.HostEndpoint(), spec.Proto, owner, f.spec.GuestPort)
	}
	f, err := Start(spec, dial, m.log)
	if err != nil {
		return nil, err
	}
	if m.byVM[vm] == nil {
		m.byVM[vm] = map[string]*Forwarder{}
	}
	m.byVM[vm][spec.Key()] = f
	if auto {
		if m.autos[vm] == nil {
			m.autos[vm] = map[string]bool{}
		}
		m.autos[vm][spec.Key()] = true
	}
	return f, nil
}

// Remove stops one forward of vm.
func (m *Manager) Remove(vm string, spec Spec) error {
	m.mu.Lock()
	f, ok := m.byVM[vm][spec.Key()]
	if ok {
		delete(m.byVM[vm], spec.Key())
		delete(m.autos[vm], spec.Key())
	}
	m.mu.Unlock()
	if !ok {
		return errkind.New(errkind.NotFound, "no forward %s", spec.String())
	}
	return f.Close()
}

// StopVM stops every forward of vm.
func (m *Manager) StopVM(vm string) {
	m.mu.Lock()
	fs := m.byVM[vm]
	delete(m.byVM, vm)
	delete(m.autos, vm)
	m.mu.Unlock()
	for _, f := range fs {
		f.Close()
	}
}

// Active is an active forward.
type Active struct {
	Spec Spec
	Auto bool
}

// List returns vm's active forwards, sorted by host port.
func (m *Manager) List(vm string) []Active {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Active
	for k, f := range m.byVM[vm] {
		out = append(out, Active{Spec: f.spec, Auto: m.autos[vm][k]})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Spec.HostPort != out[j].Spec.HostPort {
			return out[i].Spec.HostPort < out[j].Spec.HostPort
		}
		return out[i].Spec.Key() < out[j].Spec.Key()
	})
	return out
}

// Close stops everything.
func (m *Manager) Close() {
	m.mu.Lock()
	vms := make([]string, 0, len(m.byVM))
	for vm := range m.byVM {
		vms = append(vms, vm)
	}
	m.mu.Unlock()
	for _, vm := range vms {
		m.StopVM(vm)
	}
}

// GuestPort is a listening socket in the guest.
type GuestPort struct {
	Proto   string
	Address string
	Port    int
}

// PortsFunc lists the guest's listening sockets.
type PortsFunc func(ctx context.Context) ([]GuestPort, error)

// reachable reports whether the agent, which dials the guest's loopback,
// can reach a socket bound to address.
func reachable(address string) bool {
	a, err := netip.ParseAddr(address)
	if err != nil {
		return false
	}
	return a.IsUnspecified() || a.IsLoopback()
}

// AutoForward polls the guest's listening TCP ports every interval and
// keeps a forward from 127.0.0.1:P to guest port P for each one reachable
// over the guest's loopback, skipping ports already forwarded and ports
// taken on the host. onChange gets the automatic forwards whenever they
// change. It returns when ctx ends, stopping the automatic forwards.
func (m *Manager) AutoForward(ctx context.Context, vm string, ports PortsFunc, dial DialFunc, interval time.Duration, onChange func([]Spec)) {
	skipped := map[int]bool{} // host ports found busy (logged once)
	var last []Spec
	defer func() {
		m.mu.Lock()
		keys := m.autos[vm]
		delete(m.autos, vm)
		var fs []*Forwarder
		for k := range keys {
			if f, ok := m.byVM[vm][k]; ok {
				fs = append(fs, f)
				delete(m.byVM[vm], k)
			}
		}
		m.mu.Unlock()
		for _, f := range fs {
			f.Close()
		}
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if cur, ok := m.autoOnce(ctx, vm, ports, dial, skipped); ok && !sameSpecs(cur, last) {
			last = cur
			if onChange != nil && ctx.Err() == nil {
				onChange(cur)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Manager) autoOnce(ctx context.Context, vm string, ports PortsFunc, dial DialFunc, skipped map[int]bool) ([]Spec, bool) {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ps, err := ports(pctx)
	cancel()
	if err != nil {
		return nil, false
	}
	want := map[int]bool{}
	for _, p := range ps {
		if p.Proto == "tcp" && reachable(p.Address) {
			want[p.Port] = true
		}
	}
	// Drop automatic forwards whose guest port went away.
	m.mu.Lock()
	var stale []*Forwarder
	for k := range m.autos[vm] {
		f := m.byVM[vm][k]
		if f == nil || !want[f.spec.GuestPort] {
			delete(m.autos[vm], k)
			if f != nil {
				delete(m.byVM[vm], k)
				stale = append(stale, f)
			}
		}
	}
	forwarded := map[int]bool{}
	for _, f := range m.byVM[vm] {
		if f.spec.Proto == "tcp" {
			forwarded[f.spec.GuestPort] = true
		}
	}
	m.mu.Unlock()
	for _, f := range stale {
		f.Close()
	}
	for port := range want {
		if forwarded[port] || ctx.Err() != nil {
			continue
		}
		spec := Spec{Proto: "tcp", HostAddr: DefaultHostAddr, HostPort: port, GuestPort: port}
		if _, err := m.add(vm, spec, dial, true); err != nil {
			if !skipped[port] {
				m.log.Info("auto-forward skipped", "vm", vm, "port", port, "err", err)
				skipped[port] = true
			}
			continue
		}
		delete(skipped, port)
	}
	var cur []Spec
	for _, a := range m.List(vm) {
		if a.Auto {
			cur = append(cur, a.Spec)
		}
	}
	return cur, true
}

func sameSpecs(a, b []Spec) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
