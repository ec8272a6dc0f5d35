package hostnet_test

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/hostnet/hostnettest"
)

func TestParseSubnet(t *testing.T) {
	s, err := hostnet.ParseSubnet("172.30.0.9/24")
	if err != nil {
		t.Fatal(err)
	}
	if s.Prefix.String() != "172.30.0.0/24" || s.Gateway.String() != "172.30.0.1" || s.GatewayPrefix().String() != "172.30.0.1/24" {
		t.Fatalf("got %+v", s)
	}
	for _, bad := range []string{"", "172.30.0.0", "fd00::/64", "10.0.0.0/30", "10.0.0.0/4", "300.1.1.1/24"} {
		if _, err := hostnet.ParseSubnet(bad); errkind.Of(err) != errkind.InvalidArgument {
			t.Errorf("ParseSubnet(%q) = %v, want invalid argument", bad, err)
		}
	}
}

func TestCheckSubnetNamesTheRoute(t *testing.T) {
	sub := netip.MustParsePrefix("172.30.0.0/24")
	routes := []hostnet.Route{
		{Dev: "eth0"}, // default route: ignored
		{Dst: netip.MustParsePrefix("192.0.2.0/24"), Dev: "eth0"},
		{Dst: netip.MustParsePrefix("172.30.0.0/24"), Dev: "banger0"}, // our own bridge
	}
	if err := hostnet.CheckSubnet(sub, "banger0", routes); err != nil {
		t.Fatalf("no collision expected: %v", err)
	}
	routes = append(routes, hostnet.Route{Dst: netip.MustParsePrefix("172.16.0.0/12"), Dev: "docker0"})
	err := hostnet.CheckSubnet(sub, "banger0", routes)
	if errkind.Of(err) != errkind.Conflict || !strings.Contains(err.Error(), "172.16.0.0/12 dev docker0") {
		t.Fatalf("want a conflict naming the route, got %v", err)
	}
	// A more specific route inside the subnet collides too.
	err = hostnet.CheckSubnet(sub, "banger0", []hostnet.Route{{Dst: netip.MustParsePrefix("172.30.0.128/25"), Dev: "wg0"}})
	if err == nil || !strings.Contains(err.Error(), "172.30.0.128/25 dev wg0") {
		t.Fatalf("got %v", err)
	}
}

func TestMACForIsStableAndUnicast(t *testing.T) {
	a := hostnet.MACFor(netip.MustParseAddr("172.30.0.2"))
	if a != hostnet.MACFor(netip.MustParseAddr("172.30.0.2")) || a == hostnet.MACFor(netip.MustParseAddr("172.30.0.3")) {
		t.Fatalf("MAC not stable/unique: %s", a)
	}
	if a != "52:54:00:1e:00:02" {
		t.Fatalf("MACFor = %s", a)
	}
}

func TestNames(t *testing.T) {
	if tb, tap := hostnet.Names("banger0"); tb != "banger" || tap != "banger0-" {
		t.Fatalf("default names: %s %s", tb, tap)
	}
	if tb, tap := hostnet.Names("bge2e"); tb != "banger_bge2e" || tap != "bge2e-" {
		t.Fatalf("other bridge: %s %s", tb, tap)
	}
}

func TestAllocator(t *testing.T) {
	sub, _ := hostnet.ParseSubnet("10.9.0.0/29") // .1 gateway, .2-.6 usable, .7 broadcast
	a := hostnet.NewAllocator(sub)
	if a.Free() != 5 {
		t.Fatalf("free = %d", a.Free())
	}
	if err := a.Reserve("old", netip.MustParseAddr("10.9.0.3")); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"10.9.0.0", "10.9.0.1", "10.9.0.7", "10.9.1.2"} {
		if err := a.Reserve("x", netip.MustParseAddr(bad)); err == nil {
			t.Errorf("Reserve(%s) accepted", bad)
		}
	}
	if err := a.Reserve("other", netip.MustParseAddr("10.9.0.3")); errkind.Of(err) != errkind.Conflict {
		t.Fatalf("double reservation: %v", err)
	}
	var got []string
	for i := range 4 {
		ip, err := a.Allocate(fmt.Sprint("vm", i))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ip.String())
	}
	if strings.Join(got, " ") != "10.9.0.2 10.9.0.4 10.9.0.5 10.9.0.6" {
		t.Fatalf("allocated %v", got)
	}
	if ip, _ := a.Allocate("vm1"); ip.String() != "10.9.0.4" {
		t.Fatalf("re-allocate gave %s", ip)
	}
	_, err := a.Allocate("one-too-many")
	if errkind.Of(err) != errkind.Unavailable || !strings.Contains(err.Error(), "no free address left in 10.9.0.0/29") {
		t.Fatalf("exhausted pool: %v", err)
	}
	a.Release("vm2")
	if vm, ok := a.Lookup(netip.MustParseAddr("10.9.0.5")); ok {
		t.Fatalf("released address still held by %s", vm)
	}
	if ip, err := a.Allocate("new"); err != nil || ip.String() != "10.9.0.5" {
		t.Fatalf("after release: %v %v", ip, err)
	}
}

func TestAllocatorConcurrent(t *testing.T) {
	sub, _ := hostnet.ParseSubnet("10.9.0.0/24")
	a := hostnet.NewAllocator(sub)
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[netip.Addr]string{}
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vm := fmt.Sprint("vm", i)
			ip, err := a.Allocate(vm)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if o, dup := seen[ip]; dup {
				t.Errorf("%s given to %s and %s", ip, o, vm)
			}
			seen[ip] = vm
		}()
	}
	wg.Wait()
	if a.Free() != 253-200 {
		t.Fatalf("free = %d", a.Free())
	}
}

func TestTapPool(t *testing.T) {
	links := hostnettest.NewLinks()
	if err := links.EnsureBridge("br0", netip.MustParsePrefix("10.9.0.1/24")); err != nil {
		t.Fatal(err)
	}
	// Leftovers of a crashed daemon: a running VM's tap, an orphan, and a
	// foreign interface with a similar name.
	links.AddLink(hostnet.Link{Name: "br0-3", Kind: "tuntap", Master: "br0"})
	links.AddLink(hostnet.Link{Name: "br0-7", Kind: "tuntap", Master: "br0"})
	links.AddLink(hostnet.Link{Name: "br0-x", Kind: "veth"})
	links.AddLink(hostnet.Link{Name: "br0-20", Kind: "tuntap", Master: "br0", Alias: "banger /other/home"})
	links.Log()

	p := hostnet.NewTapPool(links, "br0", "br0-", "banger /my/home", 2)
	deleted, err := p.Reconcile(map[string]bool{"br0-3": true})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(deleted, ",") != "br0-7" {
		t.Fatalf("deleted %v", deleted)
	}
	if got := strings.Join(links.Log(), "; "); got != "del br0-7; add tap br0-21 master br0; add tap br0-22 master br0" {
		t.Fatalf("log: %s", got)
	}
	tap, err := p.Take()
	if err != nil || tap != "br0-21" {
		t.Fatalf("Take = %s, %v", tap, err)
	}
	if _, err := p.Take(); err != nil {
		t.Fatal(err)
	}
	// Pool empty: Take creates one on demand.
	tap, err = p.Take()
	if err != nil || tap != "br0-23" {
		t.Fatalf("Take on empty pool = %s, %v", tap, err)
	}
	p.Fill()
	if len(p.Idle()) != 2 {
		t.Fatalf("idle after fill: %v", p.Idle())
	}
	links.Log()
	if err := p.Release("br0-21"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(links.Log(), "; "); got != "del br0-21" {
		t.Fatalf("release log: %s", got)
	}
	links.FailAddTap = errors.New("no tun device")
	p.Take()
	p.Take()
	if _, err := p.Take(); err == nil {
		t.Fatal("Take succeeded without taps")
	}
	links.FailAddTap = nil
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	names := links.Names()
	if !slices.Contains(names, "br0-20") {
		t.Fatal("another home's tap was deleted")
	}
	for _, n := range names {
		switch n {
		case "lo", "br0", "br0-x", "br0-3", "br0-20", "br0-22", "br0-23", "br0-24", "br0-25":
		default:
			t.Errorf("unexpected link left: %s", n)
		}
	}
}
