package hostnettest

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/bangerdev/banger/internal/hostnet"
)

// Links is a recording hostnet.Links: it keeps an in-memory set of links
// and logs every change as a line ("add tap banger0-0 master banger0").
type Links struct {
	mu     sync.Mutex
	links  map[string]hostnet.Link
	routes []hostnet.Route
	log    []string
	// FailAddTap makes AddTap fail (pool and attach error paths).
	FailAddTap error
	Forwarding bool
}

// NewLinks returns a fake with only lo and the given host routes.
func NewLinks(routes ...hostnet.Route) *Links {
	return &Links{links: map[string]hostnet.Link{"lo": {Name: "lo", Kind: "device", Up: true}}, routes: routes}
}

func (l *Links) record(format string, args ...any) {
	l.log = append(l.log, fmt.Sprintf(format, args...))
}

// EnsureBridge implements hostnet.Links.
func (l *Links) EnsureBridge(name string, addr netip.Prefix) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if have, ok := l.links[name]; ok {
		if have.Kind != "bridge" {
			return fmt.Errorf("interface %s exists and is a %s, not a bridge", name, have.Kind)
		}
		if len(have.Addrs) == 1 && have.Addrs[0] == addr && have.Up {
			return nil
		}
	}
	l.links[name] = hostnet.Link{Name: name, Kind: "bridge", Up: true, Addrs: []netip.Prefix{addr}}
	l.record("bridge %s %s", name, addr)
	return nil
}

// AddTap implements hostnet.Links.
func (l *Links) AddTap(name, bridge, owner string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.FailAddTap != nil {
		return l.FailAddTap
	}
	if _, ok := l.links[name]; ok {
		return fmt.Errorf("creating tap %s: file exists", name)
	}
	if _, ok := l.links[bridge]; !ok {
		return fmt.Errorf("finding bridge %s: link not found", bridge)
	}
	l.links[name] = hostnet.Link{Name: name, Kind: "tuntap", Master: bridge, Up: true, Alias: owner}
	l.record("add tap %s master %s", name, bridge)
	return nil
}

// DeleteLink implements hostnet.Links.
func (l *Links) DeleteLink(name string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.links[name]; !ok {
		return nil
	}
	delete(l.links, name)
	l.record("del %s", name)
	return nil
}

// List implements hostnet.Links.
func (l *Links) List() ([]hostnet.Link, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]hostnet.Link, 0, len(l.links))
	for _, v := range l.links {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Routes implements hostnet.Links.
func (l *Links) Routes() ([]hostnet.Route, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]hostnet.Route(nil), l.routes...), nil
}

// EnableForwarding implements hostnet.Links.
func (l *Links) EnableForwarding() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.Forwarding {
		l.Forwarding = true
		l.record("ip_forward 1")
	}
	return nil
}

// AddLink plants a link (a leftover tap, a foreign interface).
func (l *Links) AddLink(link hostnet.Link) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.links[link.Name] = link
}

// Names returns the names of the current links, sorted.
func (l *Links) Names() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for n := range l.links {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Log returns the recorded changes and clears the log.
func (l *Links) Log() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.log
	l.log = nil
	return out
}

// Firewall is a recording hostnet.Firewall holding the current tables.
type Firewall struct {
	mu      sync.Mutex
	tables  map[string]hostnet.Ruleset
	allowed map[string][]hostnet.TimedAddr // table/vm → addresses
	applies int
	// FailApply makes Apply fail.
	FailApply error
}

// NewFirewall returns an empty fake firewall.
func NewFirewall() *Firewall {
	return &Firewall{tables: map[string]hostnet.Ruleset{}, allowed: map[string][]hostnet.TimedAddr{}}
}

// Apply implements hostnet.Firewall.
func (f *Firewall) Apply(rs hostnet.Ruleset) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.FailApply != nil {
		return f.FailApply
	}
	f.applies++
	f.tables[rs.Table] = rs
	for k := range f.allowed {
		if strings.HasPrefix(k, rs.Table+"/") {
			delete(f.allowed, k)
		}
	}
	for _, vm := range rs.VMs {
		if len(vm.HostAddrs) > 0 {
			f.allowed[rs.Table+"/"+vm.ID] = append([]hostnet.TimedAddr(nil), vm.HostAddrs...)
		}
	}
	return nil
}

// AllowAddrs implements hostnet.Firewall.
func (f *Firewall) AllowAddrs(table, vmID string, addrs []hostnet.TimedAddr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	rs, ok := f.tables[table]
	if !ok {
		return fmt.Errorf("table %s does not exist", table)
	}
	found := false
	for _, vm := range rs.VMs {
		found = found || (vm.ID == vmID && vm.Restricted)
	}
	if !found {
		return fmt.Errorf("set h_%s does not exist", vmID)
	}
	f.allowed[table+"/"+vmID] = append(f.allowed[table+"/"+vmID], addrs...)
	return nil
}

// Delete implements hostnet.Firewall.
func (f *Firewall) Delete(table string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tables, table)
	return nil
}

// Table returns the current ruleset of a table.
func (f *Firewall) Table(name string) (hostnet.Ruleset, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rs, ok := f.tables[name]
	return rs, ok
}

// Allowed returns the addresses in a VM's allow set.
func (f *Firewall) Allowed(table, vmID string) []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netip.Addr
	for _, a := range f.allowed[table+"/"+vmID] {
		out = append(out, a.Addr)
	}
	return out
}

// Applies counts Apply calls.
func (f *Firewall) Applies() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applies
}
