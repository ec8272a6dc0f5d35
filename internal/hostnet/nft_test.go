package hostnet_test

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/hostnet/hostnettest"
	"github.com/bangerdev/banger/internal/testenv"
)

func TestNetlinkInNamespace(t *testing.T) {
	ns := hostnettest.NewNS(t)
	l := hostnet.NewNetlinkAt(ns.Netlink(), ns.Handle, ns.Sysctl)
	addr := netip.MustParsePrefix("10.77.0.1/24")
	for range 2 { // idempotent
		if err := l.EnsureBridge("bgbr", addr); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.AddTap("bgbr-0", "bgbr", "banger /tmp/x"); err != nil {
		t.Fatal(err)
	}
	if err := l.AddTap("bgbr-0", "bgbr", ""); err == nil {
		t.Fatal("second AddTap with the same name succeeded")
	}
	links, err := l.List()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]hostnet.Link{}
	for _, k := range links {
		got[k.Name] = k
	}
	if br := got["bgbr"]; br.Kind != "bridge" || !br.Up || len(br.Addrs) != 1 || br.Addrs[0] != addr {
		t.Fatalf("bridge: %+v", br)
	}
	if tap := got["bgbr-0"]; tap.Kind != "tuntap" || tap.Master != "bgbr" || !tap.Up || tap.Alias != "banger /tmp/x" {
		t.Fatalf("tap: %+v", tap)
	}
	if v := strings.TrimSpace(ns.Must("cat", "/proc/sys/net/ipv6/conf/bgbr-0/disable_ipv6")); v != "1" {
		t.Fatalf("tap disable_ipv6 = %s", v)
	}
	// Changing the subnet replaces the bridge address.
	if err := l.EnsureBridge("bgbr", netip.MustParsePrefix("10.78.0.1/24")); err != nil {
		t.Fatal(err)
	}
	if out := ns.Must("ip", "-4", "-o", "addr", "show", "dev", "bgbr"); strings.Contains(out, "10.77.") || !strings.Contains(out, "10.78.0.1/24") {
		t.Fatalf("bridge addresses after change: %s", out)
	}
	routes, err := l.Routes()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range routes {
		found = found || (r.Dst.String() == "10.78.0.0/24" && r.Dev == "bgbr")
	}
	if !found {
		t.Fatalf("bridge route missing from %v", routes)
	}
	ns.Must("ip", "link", "add", "dummy9", "type", "veth", "peer", "name", "dummy9p")
	ns.Must("ip", "addr", "add", "10.78.0.129/25", "dev", "dummy9")
	ns.Must("ip", "link", "set", "dummy9", "up")
	routes, _ = l.Routes()
	if err := hostnet.CheckSubnet(netip.MustParsePrefix("10.78.0.0/24"), "bgbr", routes); err == nil || !strings.Contains(err.Error(), "10.78.0.128/25 dev dummy9") {
		t.Fatalf("collision not reported: %v", err)
	}
	if err := l.EnsureBridge("dummy9", addr); err == nil {
		t.Fatal("EnsureBridge accepted a non-bridge interface")
	}
	if err := l.EnableForwarding(); err != nil {
		t.Fatal(err)
	}
	if v := strings.TrimSpace(ns.Must("cat", "/proc/sys/net/ipv4/ip_forward")); v != "1" {
		t.Fatalf("ip_forward = %s", v)
	}
	for range 2 {
		if err := l.DeleteLink("bgbr-0"); err != nil {
			t.Fatal(err)
		}
	}
	if out := ns.Must("ip", "-o", "link"); strings.Contains(out, "bgbr-0") {
		t.Fatalf("tap still there: %s", out)
	}
}

func nftList(t *testing.T, ns *hostnettest.NS, table string) string {
	t.Helper()
	out, err := ns.Exec("nft", "list", "table", "ip", table)
	if err != nil {
		return ""
	}
	return out
}

func TestNFTRulesetInNamespace(t *testing.T) {
	testenv.RequireBinary(t, "nft")
	ns := hostnettest.NewNS(t)
	fw := &hostnet.NFT{NetNS: int(ns.Handle)}
	rs := hostnet.Ruleset{
		Table: "bgtest", Bridge: "bgbr", Subnet: netip.MustParsePrefix("10.77.0.0/24"),
		VMs: []hostnet.VMRules{
			{ID: "aaaa", Addr: netip.MustParseAddr("10.77.0.2"), Tap: "bgbr-0", Mode: hostnet.ModeNAT,
				MAC: net.HardwareAddr{0x52, 0x54, 0, 0x4d, 0, 2}},
			{ID: "bbbb", Addr: netip.MustParseAddr("10.77.0.3"), Tap: "bgbr-1", Mode: hostnet.ModePrivate},
			{ID: "cccc", Addr: netip.MustParseAddr("10.77.0.4"), Tap: "bgbr-2", Mode: hostnet.ModeNAT, Restricted: true,
				AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.168.7.7/32")},
				HostAddrs:  []hostnet.TimedAddr{{Addr: netip.MustParseAddr("198.51.100.7"), Timeout: time.Hour}}},
		},
	}
	if err := fw.Apply(rs); err != nil {
		t.Fatal(err)
	}
	first := nftList(t, ns, "bgtest")
	for _, want := range []string{
		`chain forward`, `hook forward`, `ct state established,related accept`,
		`iifname "bgbr" ip saddr 10.77.0.2 jump vm_aaaa`,
		`iifname "bgbr" ip saddr 10.77.0.4 jump vm_cccc`,
		`iifname "bgbr" drop`, `oifname "bgbr" drop`,
		`oifname != "bgbr" ip saddr 10.77.0.2 masquerade`,
		`oifname != "bgbr" ip saddr 10.77.0.4 masquerade`,
		`set c_cccc`, `10.0.0.0/8`, `192.168.7.7`,
		`set h_cccc`, `198.51.100.7 timeout 1h`,
		`ip daddr @c_cccc accept`, `ip daddr @h_cccc accept`,
		`reject with tcp reset`, `reject with icmp admin-prohibited`,
	} {
		if !strings.Contains(first, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, first)
		}
	}
	if strings.Contains(first, "10.77.0.3 masquerade") {
		t.Errorf("private vm is masqueraded:\n%s", first)
	}
	br, _ := ns.Exec("nft", "list", "table", "bridge", "bgtest")
	for _, want := range []string{
		`hook prerouting`,
		`iifname "bgbr-0" ether type != ip ether type != arp drop`,
		`iifname "bgbr-0" ether saddr != 52:54:00:4d:00:02 drop`,
		`iifname "bgbr-0" ip saddr != 10.77.0.2 drop`,
		`iifname "bgbr-0" arp saddr ip != 10.77.0.2 drop`,
		`iifname "bgbr-2" ip saddr != 10.77.0.4 drop`,
	} {
		if !strings.Contains(br, want) {
			t.Errorf("bridge table lacks %q:\n%s", want, br)
		}
	}
	// Applying again changes nothing.
	if err := fw.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if again := nftList(t, ns, "bgtest"); normaliseTimeouts(again) != normaliseTimeouts(first) {
		t.Fatalf("second apply differs:\n%s\n---\n%s", first, again)
	}
	if err := fw.AllowAddrs("bgtest", "cccc", []hostnet.TimedAddr{
		{Addr: netip.MustParseAddr("203.0.113.9"), Timeout: 10 * time.Minute},
		{Addr: netip.MustParseAddr("198.51.100.7"), Timeout: 2 * time.Hour},
	}); err != nil {
		t.Fatal(err)
	}
	if out := nftList(t, ns, "bgtest"); !strings.Contains(out, "203.0.113.9 timeout 10m") || !strings.Contains(out, "198.51.100.7 timeout 2h") {
		t.Fatalf("allow set after AllowAddrs:\n%s", out)
	}
	if err := fw.AllowAddrs("bgtest", "aaaa", []hostnet.TimedAddr{{Addr: netip.MustParseAddr("203.0.113.9"), Timeout: time.Minute}}); err == nil {
		t.Fatal("AllowAddrs for an unrestricted vm succeeded")
	}
	// Dropping a VM removes its chain, sets and NAT rule.
	rs.VMs = rs.VMs[:2]
	if err := fw.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if out := nftList(t, ns, "bgtest"); strings.Contains(out, "cccc") || strings.Contains(out, "10.77.0.4") {
		t.Fatalf("removed vm left rules:\n%s", out)
	}
	if br, _ := ns.Exec("nft", "list", "table", "bridge", "bgtest"); strings.Contains(br, "bgbr-2") {
		t.Fatalf("removed vm left bridge rules:\n%s", br)
	}
	for range 2 {
		if err := fw.Delete("bgtest"); err != nil {
			t.Fatal(err)
		}
	}
	if out, _ := ns.Exec("nft", "list", "ruleset"); strings.TrimSpace(out) != "" {
		t.Fatalf("ruleset after delete:\n%s", out)
	}
}

// normaliseTimeouts drops "expires …" parts, which tick.
func normaliseTimeouts(s string) string {
	var out []string
	for _, f := range strings.Fields(s) {
		out = append(out, f)
	}
	joined := strings.Join(out, " ")
	for {
		i := strings.Index(joined, "expires ")
		if i < 0 {
			return joined
		}
		j := strings.IndexAny(joined[i+8:], " ,}")
		if j < 0 {
			return joined[:i]
		}
		joined = joined[:i] + joined[i+8+j:]
	}
}

// TestNFTTrafficInNamespaces checks the rules on real packets: a "guest"
// namespace behind a bridge in a "router" namespace reaches an allowed
// server and is refused by a denied one, and is masqueraded.
func TestNFTTrafficInNamespaces(t *testing.T) {
	testenv.RequireBinary(t, "nft")
	testenv.RequireBinary(t, "busybox")
	router := hostnettest.NewNS(t)
	guest := hostnettest.NewNS(t)
	server := hostnettest.NewNS(t)
	links := hostnet.NewNetlinkAt(router.Netlink(), router.Handle, router.Sysctl)
	if err := links.EnsureBridge("bgbr", netip.MustParsePrefix("10.77.0.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := links.EnableForwarding(); err != nil {
		t.Fatal(err)
	}
	// guest: veth "gport" on the bridge stands in for the VM's tap.
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "-n", router.Name, "link", "add", "gport", "type", "veth", "peer", "name", "eth0", "netns", guest.Name)
	run("ip", "-n", router.Name, "link", "set", "gport", "master", "bgbr", "up")
	guest.Must("ip", "addr", "add", "10.77.0.2/24", "dev", "eth0")
	guest.Must("ip", "link", "set", "eth0", "up")
	guest.Must("ip", "route", "add", "default", "via", "10.77.0.1")
	// server: two addresses behind another veth, a web server on both.
	run("ip", "-n", router.Name, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", server.Name)
	router.Must("ip", "addr", "add", "10.88.0.1/24", "dev", "up0")
	router.Must("ip", "link", "set", "up0", "up")
	server.Must("ip", "addr", "add", "10.88.0.2/24", "dev", "eth0")
	server.Must("ip", "addr", "add", "10.88.0.3/24", "dev", "eth0")
	server.Must("ip", "link", "set", "eth0", "up")
	// No route back to 10.77.0.0/24: replies only work when masqueraded.
	www := t.TempDir()
	if err := writeFile(www+"/index.html", "hello\n"); err != nil {
		t.Fatal(err)
	}
	server.Start("busybox", "httpd", "-f", "-p", "8080", "-h", www)

	fw := &hostnet.NFT{NetNS: int(router.Handle)}
	macOut := strings.TrimSpace(guest.Must("cat", "/sys/class/net/eth0/address"))
	mac, err := net.ParseMAC(macOut)
	if err != nil {
		t.Fatal(err)
	}
	vm := hostnet.VMRules{ID: "g1", Addr: netip.MustParseAddr("10.77.0.2"), Tap: "gport", MAC: mac, Mode: hostnet.ModeNAT}
	apply := func(v hostnet.VMRules) {
		t.Helper()
		if err := fw.Apply(hostnet.Ruleset{Table: "bgtest", Bridge: "bgbr", Subnet: netip.MustParsePrefix("10.77.0.0/24"), VMs: []hostnet.VMRules{v}}); err != nil {
			t.Fatal(err)
		}
	}
	started := false
	fetch := func(ip string) error {
		var err error
		for range 20 { // the server may still be starting (refused)
			var out string
			out, err = guest.Exec("sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 "+ip+" 8080")
			if err == nil && strings.HasSuffix(out, "hello\n") {
				return nil
			}
			if err == nil {
				err = fmt.Errorf("unexpected answer %q", out)
			}
			if !strings.Contains(err.Error(), "refused") || started {
				return err
			}
			time.Sleep(100 * time.Millisecond)
		}
		return err
	}
	apply(vm)
	if err := fetch("10.88.0.2"); err != nil {
		t.Fatalf("nat vm cannot reach the server: %v", err)
	}
	started = true
	vm.Restricted = true
	vm.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("10.88.0.3/32")}
	apply(vm)
	if err := fetch("10.88.0.3"); err != nil {
		t.Fatalf("allowed cidr unreachable: %v", err)
	}
	if err := fetch("10.88.0.2"); err == nil {
		t.Fatal("restricted vm reached a denied address")
	}
	if err := fw.AllowAddrs("bgtest", "g1", []hostnet.TimedAddr{{Addr: netip.MustParseAddr("10.88.0.2"), Timeout: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	if err := fetch("10.88.0.2"); err != nil {
		t.Fatalf("address added to the allow set unreachable: %v", err)
	}
	// A guest taking another address (say, an unrestricted VM's) is
	// dropped on the bridge.
	guest.Must("ip", "addr", "add", "10.77.0.9/24", "dev", "eth0")
	guest.Must("ip", "route", "replace", "default", "via", "10.77.0.1", "src", "10.77.0.9")
	if out, err := guest.Exec("busybox", "ping", "-c", "1", "-W", "1", "-I", "10.77.0.9", "10.77.0.1"); err == nil {
		t.Fatalf("spoofed source reached the host: %s", out)
	}
	if err := fetch("10.88.0.3"); err == nil {
		t.Fatal("spoofed source reached the outside")
	}
	guest.Must("ip", "route", "replace", "default", "via", "10.77.0.1", "src", "10.77.0.2")
	guest.Must("ip", "addr", "del", "10.77.0.9/24", "dev", "eth0")
	vm.Restricted, vm.Mode = false, hostnet.ModePrivate
	apply(vm)
	if err := fetch("10.88.0.3"); err == nil {
		t.Fatal("private vm reached another network")
	}
	// The host (router) side stays reachable for a private VM.
	if out, err := guest.Exec("busybox", "ping", "-c", "1", "-W", "2", "10.77.0.1"); err != nil {
		t.Fatalf("private vm cannot reach the host: %v %s", err, out)
	}
}

// TestNetlinkHostNamespace runs the production constructor (taps made
// from the calling thread's namespace) on a bridge of the test's own.
func TestNetlinkHostNamespace(t *testing.T) {
	testenv.RequireRoot(t)
	l, err := hostnet.NewNetlink()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	br := fmt.Sprintf("bgt%d", time.Now().UnixNano()%1000000)
	t.Cleanup(func() { l.DeleteLink(br + "-0"); l.DeleteLink(br) })
	if err := l.EnsureBridge(br, netip.MustParsePrefix("198.18.251.1/30")); err != nil {
		t.Fatal(err)
	}
	if err := l.AddTap(br+"-0", br, ""); err != nil {
		t.Fatal(err)
	}
	links, err := l.List()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range links {
		found = found || (k.Name == br+"-0" && k.Master == br && k.Kind == "tuntap")
	}
	if !found {
		t.Fatalf("tap %s-0 not on %s: %+v", br, br, links)
	}
}
