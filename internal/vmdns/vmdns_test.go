package vmdns_test

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/bangerdev/banger/internal/vmdns"
)

// fakeUpstream is a resolver on loopback that answers allowed.test and a
// CNAME chain, and counts queries.
func fakeUpstream(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		n.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		switch strings.ToLower(q.Name) {
		case "allowed.test.":
			m.Answer = append(m.Answer, mustRR(t, "allowed.test. 300 IN A 10.213.0.2"), mustRR(t, "allowed.test. 60 IN A 10.213.0.4"))
		case "www.alias.test.":
			m.Answer = append(m.Answer, mustRR(t, "www.alias.test. 300 IN CNAME edge.cdn.test."), mustRR(t, "edge.cdn.test. 30 IN A 10.213.0.9"))
		default:
			m.SetRcode(r, dns.RcodeNameError)
		}
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return pc.LocalAddr().String(), &n
}

func mustRR(t *testing.T, s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

func query(t *testing.T, server, name string, qtype uint16, netw string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: netw, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		t.Fatalf("query %s %s over %s: %v", name, dns.TypeToString[qtype], netw, err)
	}
	return r
}

func aRecords(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

func TestZoneAnswers(t *testing.T) {
	s := vmdns.New(vmdns.Options{})
	t.Cleanup(func() { s.Close() })
	s.Set("web", netip.MustParseAddr("172.30.0.2"))
	s.Set("DB", netip.MustParseAddr("172.30.0.3"))
	addr, err := s.Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, netw := range []string{"udp", "tcp"} {
		r := query(t, addr, "web.vm", dns.TypeA, netw)
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative || strings.Join(aRecords(r), ",") != "172.30.0.2" {
			t.Fatalf("web.vm over %s: %v", netw, r)
		}
	}
	if r := query(t, addr, "Db.VM", dns.TypeA, "udp"); strings.Join(aRecords(r), ",") != "172.30.0.3" {
		t.Fatalf("case-insensitive lookup: %v", r)
	}
	if r := query(t, addr, "web.vm", dns.TypeAAAA, "udp"); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("AAAA should be empty NOERROR: %v", r)
	}
	if r := query(t, addr, "nope.vm", dns.TypeA, "udp"); r.Rcode != dns.RcodeNameError {
		t.Fatalf("unknown name: %v", r)
	}
	if r := query(t, addr, "3.0.30.172.in-addr.arpa", dns.TypePTR, "udp"); len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "db.vm." {
		t.Fatalf("PTR: %v", r)
	}
	// The host listener does not forward.
	if r := query(t, addr, "example.org", dns.TypeA, "udp"); r.Rcode != dns.RcodeRefused {
		t.Fatalf("non-zone name on a non-forwarding listener: %v", r)
	}
	s.Remove("web")
	if r := query(t, addr, "web.vm", dns.TypeA, "udp"); r.Rcode != dns.RcodeNameError {
		t.Fatalf("removed record still answered: %v", r)
	}
	s.Replace(map[string]netip.Addr{"new": netip.MustParseAddr("172.30.0.9")})
	if r := query(t, addr, "db.vm", dns.TypeA, "udp"); r.Rcode != dns.RcodeNameError {
		t.Fatalf("replaced record still answered: %v", r)
	}
	if r := query(t, addr, "new.vm", dns.TypeA, "udp"); strings.Join(aRecords(r), ",") != "172.30.0.9" {
		t.Fatalf("new record: %v", r)
	}
}

func TestForwardingFeedsAnswersBeforeReplying(t *testing.T) {
	up, count := fakeUpstream(t)
	type seen struct {
		client netip.Addr
		qname  string
		addrs  []netip.Addr
		ttl    time.Duration
	}
	var mu sync.Mutex
	var calls []seen
	snapshot := func() []seen {
		mu.Lock()
		defer mu.Unlock()
		return append([]seen(nil), calls...)
	}
	var replied atomic.Bool
	s := vmdns.New(vmdns.Options{
		Upstreams: []string{"127.0.0.1:1", up}, // the first one is dead
		Timeout:   500 * time.Millisecond,
		OnAnswer: func(client netip.Addr, qname string, addrs []netip.Addr, ttl time.Duration) {
			if replied.Load() {
				t.Error("OnAnswer called after the reply")
			}
			mu.Lock()
			calls = append(calls, seen{client, qname, addrs, ttl})
			mu.Unlock()
		},
	})
	t.Cleanup(func() { s.Close() })
	addr, err := s.Listen("127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	r := query(t, addr, "Allowed.Test", dns.TypeA, "udp")
	replied.Store(true)
	if strings.Join(aRecords(r), ",") != "10.213.0.2,10.213.0.4" {
		t.Fatalf("forwarded answer: %v", r)
	}
	got := snapshot()
	if len(got) != 1 || got[0].qname != "allowed.test" || len(got[0].addrs) != 2 || got[0].ttl != time.Minute || got[0].client.String() != "127.0.0.1" {
		t.Fatalf("OnAnswer calls: %+v", got)
	}
	replied.Store(false)
	r = query(t, addr, "www.alias.test", dns.TypeA, "tcp")
	replied.Store(true)
	got = snapshot()
	if strings.Join(aRecords(r), ",") != "10.213.0.9" || len(got) != 2 || got[1].qname != "www.alias.test" || got[1].addrs[0].String() != "10.213.0.9" {
		t.Fatalf("CNAME chain: %v %+v", r, got)
	}
	if r := query(t, addr, "missing.test", dns.TypeA, "udp"); r.Rcode != dns.RcodeNameError || len(snapshot()) != 2 {
		t.Fatalf("NXDOMAIN forwarded: %v (%d calls)", r, len(snapshot()))
	}
	if count.Load() != 3 {
		t.Fatalf("upstream saw %d queries", count.Load())
	}
	// Zone names never go upstream.
	if r := query(t, addr, "ghost.vm", dns.TypeA, "udp"); r.Rcode != dns.RcodeNameError || count.Load() != 3 {
		t.Fatalf("zone query forwarded: %v", r)
	}
}

func TestForwardOnlyForTheSubnet(t *testing.T) {
	up, count := fakeUpstream(t)
	s := vmdns.New(vmdns.Options{Upstreams: []string{up}, ForwardFrom: []netip.Prefix{netip.MustParsePrefix("172.30.0.0/24")}})
	t.Cleanup(func() { s.Close() })
	s.Set("web", netip.MustParseAddr("172.30.0.2"))
	addr, err := s.Listen("127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	if r := query(t, addr, "allowed.test", dns.TypeA, "udp"); r.Rcode != dns.RcodeRefused || count.Load() != 0 {
		t.Fatalf("forwarded for a client outside the subnet: %v", r)
	}
	if r := query(t, addr, "web.vm", dns.TypeA, "udp"); strings.Join(aRecords(r), ",") != "172.30.0.2" {
		t.Fatalf("zone answers for anyone: %v", r)
	}
}

func TestNoUpstreamIsServfail(t *testing.T) {
	s := vmdns.New(vmdns.Options{Upstreams: []string{"127.0.0.1:1"}, Timeout: 200 * time.Millisecond})
	t.Cleanup(func() { s.Close() })
	addr, err := s.Listen("127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	if r := query(t, addr, "example.test", dns.TypeA, "udp"); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("dead upstream: %v", r)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if len(s.Addrs()) != 0 {
		t.Fatal("addresses kept after close")
	}
}

func TestListenBusyPort(t *testing.T) {
	a := vmdns.New(vmdns.Options{})
	t.Cleanup(func() { a.Close() })
	addr, err := a.Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	b := vmdns.New(vmdns.Options{})
	if _, err := b.Listen(addr, false); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("second listener on %s: %v", addr, err)
	}
}

func TestHostResolvers(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(p, []byte("# comment\nnameserver 10.255.255.53\nnameserver 172.30.0.1\nnameserver 127.0.0.53\nsearch example\n"), 0o644)
	got, err := vmdns.HostResolvers(p, "172.30.0.1:53")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "10.255.255.53:53,127.0.0.53:53" {
		t.Fatalf("resolvers: %v", got)
	}
	if _, err := vmdns.HostResolvers(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
}
