package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/hostnet/hostnettest"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/vmm"
)

// netFixture is a daemon whose network is a hostNetwork over recording
// fakes: nothing on the host changes.
type netFixture struct {
	d     *Daemon
	h     *hostNetwork
	links *hostnettest.Links
	fw    *hostnettest.Firewall
	cfg   config.Network
}

func newNetFixture(t *testing.T, cidr string, routes ...hostnet.Route) *netFixture {
	t.Helper()
	home := t.TempDir()
	l := paths.Layout{
		ConfigDir: filepath.Join(home, "config"), StateDir: filepath.Join(home, "state"),
		CacheDir: filepath.Join(home, "cache"), RuntimeDir: filepath.Join(home, "run"),
	}
	cfg := config.Default()
	cfg.Network.Disabled = true // New must not touch the host
	d, err := New(context.Background(), Options{Layout: l, Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	nc := config.Default().Network
	nc.Bridge, nc.CIDR, nc.DNSListen, nc.TapPool = "bgt0", cidr, "127.0.0.1:0", 1
	nc.UpstreamDNS = []string{"127.0.0.1:1"}
	f := &netFixture{d: d, links: hostnettest.NewLinks(routes...), fw: hostnettest.NewFirewall(), cfg: nc}
	f.h = newHostNetwork(d, nc)
	hs, err := newHostSide(nc, f.h.onDNSAnswer, d.log, hostSideOptions{
		links: f.links, fw: f.fw, lockDir: t.TempDir(), guestDNSListen: "127.0.0.1:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	f.h.host = hs
	d.net.close()
	d.net = f.h
	if err := d.store.CreateImage(context.Background(), &model.Image{ID: "img", Name: "img", RootfsPath: "/nonexistent"}); err != nil {
		t.Fatal(err)
	}
	return f
}

// vm creates a VM row through validate, as CreateVM does.
func (f *netFixture) vm(t *testing.T, name string, req api.VMCreateRequest) *model.VM {
	t.Helper()
	n, err := f.h.validate(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	vm := &model.VM{ID: "id-" + name, Name: name, ImageID: "img", State: model.StateCreated, CPUs: 1, MemoryMiB: 128,
		VMM: "qemu", Dir: t.TempDir(), RunDir: t.TempDir(), Network: n}
	if err := f.d.store.CreateVM(context.Background(), vm); err != nil {
		t.Fatal(err)
	}
	return vm
}

func (f *netFixture) table(t *testing.T) hostnet.Ruleset {
	t.Helper()
	rs, ok := f.fw.Table("banger_bgt0")
	if !ok {
		t.Fatal("no banger_bgt0 table")
	}
	return rs
}

func (f *netFixture) resolve(t *testing.T, name string) (string, int) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, err := dns.Exchange(m, f.h.host.hostDNS)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) == 0 {
		return "", r.Rcode
	}
	return r.Answer[0].(*dns.A).A.String(), r.Rcode
}

func param(params []string, key string) string {
	for _, p := range params {
		if v, ok := strings.CutPrefix(p, key+"="); ok {
			return v
		}
	}
	return ""
}

func TestNetworkSetupRefusesCollidingSubnet(t *testing.T) {
	home := t.TempDir()
	cfg := config.Default().Network
	cfg.Bridge, cfg.CIDR = "bgt0", "10.40.0.0/24"
	links := hostnettest.NewLinks(hostnet.Route{Dst: netip.MustParsePrefix("10.0.0.0/8"), Dev: "wg0"})
	_, err := newHostSide(cfg, nil, slog.New(slog.DiscardHandler), hostSideOptions{links: links, fw: hostnettest.NewFirewall(), lockDir: home})
	if errkind.Of(err) != errkind.Conflict || !strings.Contains(err.Error(), "10.0.0.0/8 dev wg0") {
		t.Fatalf("got %v", err)
	}
	if len(links.Names()) != 1 {
		t.Fatalf("links made despite the collision: %v", links.Names())
	}
	// The lock was released: a second attempt on a free subnet works.
	cfg.CIDR = "172.31.9.0/24"
	hs, err := newHostSide(cfg, nil, slog.New(slog.DiscardHandler), hostSideOptions{links: links, fw: hostnettest.NewFirewall(),
		lockDir: home, guestDNSListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.close()
	// A second daemon on the same bridge is refused.
	_, err = newHostSide(cfg, nil, slog.New(slog.DiscardHandler), hostSideOptions{links: links, fw: hostnettest.NewFirewall(), lockDir: home})
	if errkind.Of(err) != errkind.Conflict || !strings.Contains(err.Error(), "managed by another bangerd") {
		t.Fatalf("second daemon: %v", err)
	}
}

func TestValidate(t *testing.T) {
	f := newNetFixture(t, "10.40.0.0/29") // 5 addresses
	ctx := context.Background()
	n, err := f.h.validate(ctx, api.VMCreateRequest{})
	if err != nil || n.Mode != "nat" {
		t.Fatalf("default: %+v %v", n, err)
	}
	for _, tc := range []struct {
		req  api.VMCreateRequest
		kind *errkind.Kind
		msg  string
	}{
		{api.VMCreateRequest{Net: "bridge"}, errkind.InvalidArgument, "want nat, private or none"},
		{api.VMCreateRequest{Net: "private", AllowHosts: []string{"example.org"}}, errkind.InvalidArgument, "need --net nat"},
		{api.VMCreateRequest{AllowHosts: []string{"bad_host!"}}, errkind.InvalidArgument, "not a host name"},
		{api.VMCreateRequest{AllowCIDRs: []string{"fd00::/8"}}, errkind.InvalidArgument, "not an IPv4 CIDR"},
		{api.VMCreateRequest{Publish: []string{"80"}}, errkind.InvalidArgument, "HOST_PORT:GUEST_PORT"},
		{api.VMCreateRequest{Publish: []string{"18080:80", "18080:81"}}, errkind.InvalidArgument, "same host port"},
	} {
		_, err := f.h.validate(ctx, tc.req)
		if errkind.Of(err) != tc.kind || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%+v: got %v, want %s containing %q", tc.req, err, tc.kind, tc.msg)
		}
	}
	n, err = f.h.validate(ctx, api.VMCreateRequest{AllowHosts: []string{"Example.org.", "192.0.2.7"}, AllowCIDRs: []string{"10.0.0.0/8", "198.51.100.3"}})
	if err != nil || fmt.Sprint(n.AllowHosts) != "[example.org]" || fmt.Sprint(n.AllowCIDRs) != "[192.0.2.7/32 10.0.0.0/8 198.51.100.3/32]" {
		t.Fatalf("allow list: %+v %v", n, err)
	}
	// A busy host port is refused at create.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := fmt.Sprintf("%d:80", ln.Addr().(*net.TCPAddr).Port)
	if _, err := f.h.validate(ctx, api.VMCreateRequest{Publish: []string{busy}}); errkind.Of(err) != errkind.Conflict {
		t.Fatalf("busy port: %v", err)
	}
	n, err = f.h.validate(ctx, api.VMCreateRequest{Publish: []string{"0.0.0.0:18081:80/udp"}, AutoForward: true})
	if err != nil || len(n.Forwards) != 1 || n.Forwards[0] != (model.Forward{Proto: "udp", HostAddr: "0.0.0.0", HostPort: 18081, GuestPort: 80}) || !n.AutoForward {
		t.Fatalf("publish: %+v %v", n, err)
	}
	// A forward recorded on another VM is refused even while it is stopped.
	f.vm(t, "holder", api.VMCreateRequest{Publish: []string{"18082:80"}})
	if _, err := f.h.validate(ctx, api.VMCreateRequest{Publish: []string{"18082:22"}}); errkind.Of(err) != errkind.Conflict || !strings.Contains(err.Error(), "vm holder") {
		t.Fatalf("forward of another vm: %v", err)
	}
	// Exhausted pool: a clear error before anything is made.
	for i := range 5 {
		vm := f.vm(t, fmt.Sprint("v", i), api.VMCreateRequest{})
		if _, _, err := f.h.attach(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.h.validate(ctx, api.VMCreateRequest{}); errkind.Of(err) != errkind.Unavailable || !strings.Contains(err.Error(), "no free address") {
		t.Fatalf("exhausted: %v", err)
	}
	if n, err := f.h.validate(ctx, api.VMCreateRequest{Net: "none"}); err != nil || n.Mode != "none" {
		t.Fatalf("--net none with no address left: %v", err)
	}
}

func TestAttachDetachForget(t *testing.T) {
	f := newNetFixture(t, "10.40.0.0/24")
	ctx := context.Background()
	vm := f.vm(t, "web", api.VMCreateRequest{})
	f.links.Log()
	nic, params, err := f.h.attach(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	if nic == nil || nic.Mode != vmm.NetTap || nic.TapName != "bgt0-0" || nic.MAC != "52:54:00:28:00:02" {
		t.Fatalf("nic = %+v", nic)
	}
	if param(params, "banger.ip") != "10.40.0.2/24" || param(params, "banger.gw") != "10.40.0.1" ||
		param(params, "banger.dns") != "10.40.0.1" || param(params, "banger.mac") != nic.MAC {
		t.Fatalf("params = %v", params)
	}
	// What attach allocated is on the row already (crash cleanup).
	row, _ := f.d.store.GetVM(ctx, vm.ID)
	if row.Network.IP != "10.40.0.2" || row.Network.Tap != "bgt0-0" || row.Network.MAC != nic.MAC {
		t.Fatalf("persisted network: %+v", row.Network)
	}
	rs := f.table(t)
	if len(rs.VMs) != 1 || rs.VMs[0].Mode != hostnet.ModeNAT || rs.VMs[0].Addr.String() != "10.40.0.2" || rs.VMs[0].Restricted {
		t.Fatalf("rules = %+v", rs)
	}
	if !f.links.Forwarding {
		t.Fatal("nat without ip forwarding")
	}
	if ip, _ := f.resolve(t, "web.vm"); ip != "10.40.0.2" {
		t.Fatalf("web.vm = %q", ip)
	}
	first := rs

	if err := f.h.detach(ctx, vm); err != nil {
		t.Fatal(err)
	}
	if vm.Network.Tap != "" || vm.Network.IP != "10.40.0.2" {
		t.Fatalf("after detach: %+v", vm.Network)
	}
	if slices.Contains(f.links.Names(), "bgt0-0") {
		t.Fatal("tap left after detach")
	}
	if rs := f.table(t); len(rs.VMs) != 0 {
		t.Fatalf("rules left after detach: %+v", rs)
	}
	if _, rcode := f.resolve(t, "web.vm"); rcode != dns.RcodeNameError {
		t.Fatal("web.vm still resolves after stop")
	}
	// Stop/start: same address, same rules (another tap).
	if _, params, err = f.h.attach(ctx, vm); err != nil {
		t.Fatal(err)
	}
	rs = f.table(t)
	if param(params, "banger.ip") != "10.40.0.2/24" || len(rs.VMs) != 1 || rs.VMs[0].Addr != first.VMs[0].Addr || rs.VMs[0].Mode != first.VMs[0].Mode {
		t.Fatalf("restart: %v %+v", params, rs)
	}
	if err := f.h.forget(ctx, vm); err != nil {
		t.Fatal(err)
	}
	if vm.Network.IP != "" || vm.Network.Tap != "" {
		t.Fatalf("after forget: %+v", vm.Network)
	}
	for _, n := range f.links.Names() {
		if n != "lo" && n != "bgt0" && !slices.Contains(f.h.host.taps.Idle(), n) {
			t.Errorf("link left after forget: %s", n)
		}
	}
	other := f.vm(t, "other", api.VMCreateRequest{})
	if _, params, _ := f.h.attach(ctx, other); param(params, "banger.ip") != "10.40.0.2/24" {
		t.Fatalf("freed address not reused: %v", params)
	}
}

func TestAttachModes(t *testing.T) {
	f := newNetFixture(t, "10.40.0.0/24")
	ctx := context.Background()
	priv := f.vm(t, "priv", api.VMCreateRequest{Net: "private"})
	_, params, err := f.h.attach(ctx, priv)
	if err != nil {
		t.Fatal(err)
	}
	if param(params, "banger.gw") != "" || param(params, "banger.dns") != "10.40.0.1" {
		t.Fatalf("private params: %v", params)
	}
	if f.links.Forwarding {
		t.Fatal("ip forwarding enabled for a private vm")
	}
	none := f.vm(t, "none", api.VMCreateRequest{Net: "none"})
	nic, params, err := f.h.attach(ctx, none)
	if err != nil || nic != nil || len(params) != 0 || none.Network.IP != "" {
		t.Fatalf("none: %+v %v %v", nic, params, err)
	}
	rs := f.table(t)
	if len(rs.VMs) != 1 || rs.VMs[0].Mode != hostnet.ModePrivate {
		t.Fatalf("rules: %+v", rs)
	}
}

func TestAttachFailureLeavesNothing(t *testing.T) {
	f := newNetFixture(t, "10.40.0.0/24")
	ctx := context.Background()
	vm := f.vm(t, "web", api.VMCreateRequest{})
	for _, tap := range f.h.host.taps.Idle() { // empty the pool
		f.links.DeleteLink(tap)
	}
	f.h.host.taps.Reconcile(nil)
	f.h.host.taps.Close()
	f.links.FailAddTap = fmt.Errorf("no /dev/net/tun")
	if _, _, err := f.h.attach(ctx, vm); err == nil {
		t.Fatal("attach succeeded without a tap")
	}
	f.links.FailAddTap = nil
	if vm.Network.IP != "" || vm.Network.Tap != "" || f.h.host.alloc.Free() != 253 {
		t.Fatalf("half-made attachment: %+v, free %d", vm.Network, f.h.host.alloc.Free())
	}
	f.fw.FailApply = fmt.Errorf("nf_tables: operation not permitted")
	if _, _, err := f.h.attach(ctx, vm); err == nil {
		t.Fatal("attach succeeded without firewall")
	}
	f.fw.FailApply = nil
	if vm.Network.Tap != "" || slices.ContainsFunc(f.links.Names(), func(n string) bool {
		return strings.HasPrefix(n, "bgt0-") && !slices.Contains(f.h.host.taps.Idle(), n)
	}) {
		t.Fatalf("tap left after a failed attach: %v", f.links.Names())
	}
}

func TestEgressAllowListFedByDNS(t *testing.T) {
	f := newNetFixture(t, "10.40.0.0/24")
	ctx := context.Background()
	vm := f.vm(t, "locked", api.VMCreateRequest{AllowHosts: []string{"example.org"}, AllowCIDRs: []string{"192.0.2.0/24"}})
	if _, _, err := f.h.attach(ctx, vm); err != nil {
		t.Fatal(err)
	}
	free := f.vm(t, "free", api.VMCreateRequest{})
	if _, _, err := f.h.attach(ctx, free); err != nil {
		t.Fatal(err)
	}
	rs := f.table(t)
	var locked hostnet.VMRules
	for _, r := range rs.VMs {
		if r.ID == vm.ID {
			locked = r
		}
	}
	if !locked.Restricted || fmt.Sprint(locked.AllowCIDRs) != "[192.0.2.0/24]" {
		t.Fatalf("rules: %+v", locked)
	}
	ip := netip.MustParseAddr(vm.Network.IP)
	a := []netip.Addr{netip.MustParseAddr("198.51.100.1")}
	f.h.onDNSAnswer(ip, "evil.test", a, time.Minute)
	f.h.onDNSAnswer(netip.MustParseAddr(free.Network.IP), "example.org", a, time.Minute)
	if got := f.fw.Allowed("banger_bgt0", vm.ID); len(got) != 0 {
		t.Fatalf("unrelated answers opened the set: %v", got)
	}
	f.h.onDNSAnswer(ip, "www.Example.org", a, time.Minute)
	f.h.onDNSAnswer(ip, "example.org", []netip.Addr{netip.MustParseAddr("198.51.100.2")}, 0)
	f.h.onDNSAnswer(ip, "notexample.org", []netip.Addr{netip.MustParseAddr("198.51.100.3")}, 0)
	if got := fmt.Sprint(f.fw.Allowed("banger_bgt0", vm.ID)); got != "[198.51.100.1 198.51.100.2]" {
		t.Fatalf("allowed = %s", got)
	}
	// A rebuild of the table (another VM stopping) keeps what was learnt.
	if err := f.h.detach(ctx, free); err != nil {
		t.Fatal(err)
	}
	rs = f.table(t)
	if len(rs.VMs) != 1 || len(rs.VMs[0].HostAddrs) != 2 || rs.VMs[0].HostAddrs[0].Timeout < 4*time.Minute {
		t.Fatalf("learnt addresses lost on rebuild: %+v", rs.VMs)
	}
}

func TestReconcileAfterCrash(t *testing.T) {
	f := newNetFixture(t, "10.40.0.0/24")
	ctx := context.Background()
	// A VM the previous daemon left "attached" (its VMM is gone) and an
	// orphan tap nobody records.
	vm := f.vm(t, "ghost", api.VMCreateRequest{Publish: []string{"18090:80"}})
	if _, _, err := f.h.attach(ctx, vm); err != nil {
		t.Fatal(err)
	}
	vm.Network.Forwards = append(vm.Network.Forwards, model.Forward{Proto: "tcp", HostAddr: "127.0.0.1", HostPort: 18091, GuestPort: 3000, Auto: true})
	if err := f.d.store.UpdateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	f.links.AddLink(hostnet.Link{Name: "bgt0-77", Kind: "tuntap", Master: "bgt0"})
	tap := vm.Network.Tap

	// Restart: a fresh hostNetwork over the same (fake) host.
	f.h.fwd.Close()
	h2 := newHostNetwork(f.d, f.cfg)
	hs, err := newHostSide(f.cfg, h2.onDNSAnswer, f.d.log, hostSideOptions{links: f.links, fw: f.fw, lockDir: t.TempDir(), guestDNSListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	h2.host = hs
	f.d.net = h2
	vms, _ := f.d.store.ListVMs(ctx)
	if err := h2.reconcile(ctx, vms); err != nil {
		t.Fatal(err)
	}
	defer h2.close()
	for _, gone := range []string{tap, "bgt0-77"} {
		if slices.Contains(f.links.Names(), gone) {
			t.Errorf("orphan tap %s not deleted", gone)
		}
	}
	if rs, _ := f.fw.Table("banger_bgt0"); len(rs.VMs) != 0 {
		t.Fatalf("orphan rules: %+v", rs)
	}
	row, _ := f.d.store.GetVM(ctx, vm.ID)
	if row.Network.Tap != "" || row.Network.IP != "10.40.0.2" || len(row.Network.Forwards) != 1 || row.Network.Forwards[0].Auto {
		t.Fatalf("row after reconcile: %+v", row.Network)
	}
	// The stopped VM keeps its address: a new VM gets another one.
	nv := f.vm(t, "new", api.VMCreateRequest{})
	if _, params, err := h2.attach(ctx, nv); err != nil || param(params, "banger.ip") != "10.40.0.3/24" {
		t.Fatalf("new vm: %v %v", params, err)
	}
	// Forwards of a VM that is not running are not listening.
	if c, err := net.Dial("tcp", "127.0.0.1:18090"); err == nil {
		c.Close()
		t.Fatal("forward of a stopped vm listens")
	}
}

func TestForwardsFollowAttachment(t *testing.T) {
	f := newNetFixture(t, "10.40.0.0/24")
	ctx := context.Background()
	vm := f.vm(t, "fw", api.VMCreateRequest{Net: "none", Publish: []string{"18095:80", "18095:53/udp"}})
	if _, _, err := f.h.attach(ctx, vm); err != nil {
		t.Fatal(err)
	}
	if got := len(f.h.fwd.List(vm.ID)); got != 2 {
		t.Fatalf("%d forwards active", got)
	}
	c, err := net.Dial("tcp", "127.0.0.1:18095")
	if err != nil {
		t.Fatal(err)
	}
	// Not running: the agent cannot be reached, so the connection closes.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read through a forward to a stopped guest: %v", err)
	}
	c.Close()
	if err := f.h.detach(ctx, vm); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", "127.0.0.1:18095"); err == nil {
		t.Fatal("forward listens after detach")
	}
	if len(vm.Network.Forwards) != 2 {
		t.Fatal("requested forwards dropped by detach")
	}
}

func TestHostAllowed(t *testing.T) {
	allowed := []string{"example.org", "api.test"}
	for name, want := range map[string]bool{
		"example.org": true, "www.example.org.": true, "EXAMPLE.org": true, "badexample.org": false,
		"example.org.evil": false, "api.test": true, "test": false,
	} {
		if hostAllowed(allowed, name) != want {
			t.Errorf("hostAllowed(%q) != %v", name, want)
		}
	}
}

func TestDisabledNetworkStillForwards(t *testing.T) {
	home := t.TempDir()
	l := paths.Layout{
		ConfigDir: filepath.Join(home, "config"), StateDir: filepath.Join(home, "state"),
		CacheDir: filepath.Join(home, "cache"), RuntimeDir: filepath.Join(home, "run"),
	}
	cfg := config.Default()
	cfg.Network.Disabled = true
	d, err := New(context.Background(), Options{Layout: l, Config: cfg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	info := d.NetworkInfo(context.Background())
	if info.Available || !strings.Contains(info.Reason, "disabled") || info.DefaultMode != "none" {
		t.Fatalf("info = %+v", info)
	}
	n, err := d.net.validate(context.Background(), api.VMCreateRequest{Publish: []string{"18097:80"}})
	if err != nil || n.Mode != "none" || len(n.Forwards) != 1 {
		t.Fatalf("forward without host networking: %+v %v", n, err)
	}
	_, err = d.net.validate(context.Background(), api.VMCreateRequest{Net: "nat"})
	if errkind.Of(err) != errkind.Unavailable || !strings.Contains(err.Error(), "disabled in the configuration") {
		t.Fatalf("--net nat: %v", err)
	}
}

func TestForwardPrefersTheBridge(t *testing.T) {
	f := newNetFixture(t, "10.40.0.0/24")
	ctx := context.Background()
	// The "guest" server: loopback stands in for the VM's bridge address.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "via the bridge\n")
			c.Close()
		}
	}()
	guestPort := ln.Addr().(*net.TCPAddr).Port
	vm := f.vm(t, "fast", api.VMCreateRequest{Publish: []string{fmt.Sprintf("18099:%d", guestPort)}})
	if _, _, err := f.h.attach(ctx, vm); err != nil {
		t.Fatal(err)
	}
	defer f.h.detach(ctx, vm)
	lo := netip.MustParseAddr("127.0.0.1")
	f.h.mu.Lock()
	f.h.active[vm.ID].direct.Store(&lo)
	f.h.mu.Unlock()
	read := func() string {
		c, err := net.Dial("tcp", "127.0.0.1:18099")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		return string(b)
	}
	if got := read(); got != "via the bridge\n" {
		t.Fatalf("direct forward answered %q", got)
	}
	// forward_direct off: only the agent channel (unreachable here).
	f.h.forwardDirect.Store(false)
	if got := read(); got != "" {
		t.Fatalf("forward bypassed the agent with forward_direct off: %q", got)
	}
}

func TestAddRemoveForwardOnStoppedVM(t *testing.T) {
	f := newNetFixture(t, "10.40.0.0/24")
	ctx := context.Background()
	f.vm(t, "one", api.VMCreateRequest{})
	f.vm(t, "two", api.VMCreateRequest{})
	fw, err := f.d.AddForward(ctx, "one", "18200:80")
	if err != nil || fw != (model.Forward{Proto: "tcp", HostAddr: "127.0.0.1", HostPort: 18200, GuestPort: 80}) {
		t.Fatalf("AddForward: %+v %v", fw, err)
	}
	if _, err := f.d.AddForward(ctx, "one", "127.0.0.1:18200:80/tcp"); err != nil {
		t.Fatalf("re-adding the same forward: %v", err)
	}
	if _, err := f.d.AddForward(ctx, "one", "18200:81"); errkind.Of(err) != errkind.Conflict {
		t.Fatalf("same host port, other guest port: %v", err)
	}
	if _, err := f.d.AddForward(ctx, "two", "0.0.0.0:18200:80"); errkind.Of(err) != errkind.Conflict || !strings.Contains(err.Error(), "vm one") {
		t.Fatalf("host port of another vm: %v", err)
	}
	if _, err := f.d.AddForward(ctx, "one", "18200:80/udp"); err != nil {
		t.Fatalf("udp on the same port number: %v", err)
	}
	vm, _ := f.d.store.GetVM(ctx, "one")
	if len(vm.Network.Forwards) != 2 {
		t.Fatalf("recorded forwards: %+v", vm.Network.Forwards)
	}
	if err := f.d.RemoveForward(ctx, "one", "18200/udp"); err != nil {
		t.Fatal(err)
	}
	if err := f.d.RemoveForward(ctx, "one", "18200"); err != nil {
		t.Fatal(err)
	}
	if err := f.d.RemoveForward(ctx, "one", "18200"); errkind.Of(err) != errkind.NotFound {
		t.Fatalf("removing twice: %v", err)
	}
	vm, _ = f.d.store.GetVM(ctx, "one")
	if len(vm.Network.Forwards) != 0 {
		t.Fatalf("forwards left: %+v", vm.Network.Forwards)
	}
	if _, err := f.d.VMPorts(ctx, "one"); errkind.Of(err) != errkind.Conflict {
		t.Fatalf("ports of a stopped vm: %v", err)
	}
}
