// Package vmdns is banger's DNS server: it answers A queries for
// <name>.vm from the daemon's VM records, and forwards the guests' other
// queries to the host's resolvers, reporting the addresses it forwards
// back so allowed names can be opened in the firewall before the guest
// sees the answer.
package vmdns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Zone is the domain VMs are named under.
const Zone = "vm."

// recordTTL is the TTL of <name>.vm answers: short, since VMs come and go.
const recordTTL = 5

// AnswerFunc sees the A records of a forwarded answer before the client
// does. client is the querying address, qname the question (lowercase,
// without the final dot), ttl the smallest TTL of the records.
type AnswerFunc func(client netip.Addr, qname string, addrs []netip.Addr, ttl time.Duration)

// Options configure a Server.
type Options struct {
	// Upstreams are "host:port" resolvers for forwarded queries.
	Upstreams []string
	// OnAnswer is called synchronously for every forwarded answer with A
	// records.
	OnAnswer AnswerFunc
	// ForwardFrom, when set, limits forwarding to clients in these
	// prefixes (the VM subnet), so the listener is no open resolver.
	ForwardFrom []netip.Prefix
	// Timeout bounds one upstream exchange (default 3 s).
	Timeout time.Duration
	Logger  *slog.Logger
}

// Server serves the .vm zone on any number of listeners.
type Server struct {
	opts Options

	mu      sync.RWMutex
	records map[string]netip.Addr // lowercase name without zone → address
	servers []*dns.Server
	addrs   []string
}

// New returns a server with no records and no listener.
func New(opts Options) *Server {
	if opts.Timeout <= 0 {
		opts.Timeout = 3 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts, records: map[string]netip.Addr{}}
}

// Set adds or changes the record of name.
func (s *Server) Set(name string, ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[strings.ToLower(name)] = ip
}

// Remove deletes the record of name.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, strings.ToLower(name))
}

// Replace swaps all records at once.
func (s *Server) Replace(records map[string]netip.Addr) {
	m := make(map[string]netip.Addr, len(records))
	for k, v := range records {
		m[strings.ToLower(k)] = v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = m
}

// Lookup returns the address of name (without the zone).
func (s *Server) Lookup(name string) (netip.Addr, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ip, ok := s.records[strings.ToLower(name)]
	return ip, ok
}

// Records returns a copy of the records.
func (s *Server) Records() map[string]netip.Addr {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]netip.Addr, len(s.records))
	for k, v := range s.records {
		out[k] = v
	}
	return out
}

// Listen serves UDP and TCP on addr ("ip:port"; port 0 picks one, the
// same for both). With forward, queries outside the zone go upstream;
// without, they are refused. It returns the bound address.
func (s *Server) Listen(addr string, forward bool) (string, error) {
	pc, ln, err := listenBoth(addr)
	if err != nil {
		return "", err
	}
	h := &handler{s: s, forward: forward}
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: ln, Handler: h}
	for _, srv := range []*dns.Server{udp, tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				s.opts.Logger.Warn("dns server stopped", "addr", addr, "err", err)
			}
		}()
		<-started
	}
	bound := pc.LocalAddr().String()
	s.mu.Lock()
	s.servers = append(s.servers, udp, tcp)
	s.addrs = append(s.addrs, bound)
	s.mu.Unlock()
	return bound, nil
}

// listenBoth binds UDP and TCP on the same port.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	for attempt := 0; attempt < 20; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listening on udp %s: %w", addr, err)
		}
		tcpAddr := pc.LocalAddr().String()
		ln, err := net.Listen("tcp", tcpAddr)
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if _, port, _ := net.SplitHostPort(addr); port != "0" {
			return nil, nil, fmt.Errorf("listening on tcp %s: %w", addr, err)
		}
		// Port 0: the UDP port's TCP twin was taken; try another.
	}
	return nil, nil, fmt.Errorf("no port free for both udp and tcp on %s", addr)
}

// Addrs returns the bound listener addresses.
func (s *Server) Addrs() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]string(nil), s.addrs...)
}

// Close stops every listener.
func (s *Server) Close() error {
	s.mu.Lock()
	servers := s.servers
	s.servers, s.addrs = nil, nil
	s.mu.Unlock()
	var errs []error
	for _, srv := range servers {
		if err := srv.Shutdown(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type handler struct {
	s       *Server
	forward bool
}

func (h *handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := h.answer(w, req)
	if resp == nil {
		return
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		resp.Truncate(size)
	}
	_ = w.WriteMsg(resp)
}

func (h *handler) answer(w dns.ResponseWriter, req *dns.Msg) *dns.Msg {
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeNotImplemented)
		return m
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if local, ok := h.local(req, q, name); ok {
		return local
	}
	if !h.forward || !h.s.forwardsFor(addrOf(w.RemoteAddr())) {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeRefused)
		return m
	}
	return h.upstream(w, req, name)
}

// local answers names in the zone and reverse names of known VMs.
func (h *handler) local(req *dns.Msg, q dns.Question, name string) (*dns.Msg, bool) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = h.forward
	switch {
	case name == Zone:
		return m, true
	case strings.HasSuffix(name, "."+Zone):
		label := strings.TrimSuffix(name, "."+Zone)
		ip, ok := h.s.Lookup(label)
		if !ok {
			m.SetRcode(req, dns.RcodeNameError)
			m.Authoritative = true
			return m, true
		}
		if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: recordTTL},
				A:   ip.AsSlice(),
			})
		}
		return m, true
	case q.Qtype == dns.TypePTR && strings.HasSuffix(name, ".in-addr.arpa."):
		for label, ip := range h.s.Records() {
			arpa, err := dns.ReverseAddr(ip.String())
			if err == nil && arpa == name {
				m.Answer = append(m.Answer, &dns.PTR{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: recordTTL},
					Ptr: label + "." + Zone,
				})
				return m, true
			}
		}
	}
	return nil, false
}

func (h *handler) upstream(w dns.ResponseWriter, req *dns.Msg, name string) *dns.Msg {
	fail := func() *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
		return m
	}
	if len(h.s.opts.Upstreams) == 0 {
		return fail()
	}
	netw := "udp"
	if _, tcp := w.RemoteAddr().(*net.TCPAddr); tcp {
		netw = "tcp"
	}
	c := &dns.Client{Net: netw, Timeout: h.s.opts.Timeout}
	var resp *dns.Msg
	for _, up := range h.s.opts.Upstreams {
		ctx, cancel := context.WithTimeout(context.Background(), h.s.opts.Timeout)
		r, _, err := c.ExchangeContext(ctx, req, up)
		cancel()
		if err != nil {
			h.s.opts.Logger.Debug("dns upstream failed", "upstream", up, "name", name, "err", err)
			continue
		}
		resp = r
		if r.Rcode != dns.RcodeServerFailure && r.Rcode != dns.RcodeRefused {
			break
		}
	}
	if resp == nil {
		return fail()
	}
	if h.s.opts.OnAnswer != nil {
		var addrs []netip.Addr
		var ttl uint32
		for _, rr := range resp.Answer {
			if a, ok := rr.(*dns.A); ok {
				if ip, ok := netip.AddrFromSlice(a.A); ok {
					addrs = append(addrs, ip.Unmap())
					if ttl == 0 || a.Hdr.Ttl < ttl {
						ttl = a.Hdr.Ttl
					}
				}
			}
		}
		if len(addrs) > 0 {
			client := addrOf(w.RemoteAddr())
			h.s.opts.OnAnswer(client, strings.TrimSuffix(name, "."), addrs, time.Duration(ttl)*time.Second)
		}
	}
	resp.Id = req.Id
	return resp
}

func (s *Server) forwardsFor(client netip.Addr) bool {
	if len(s.opts.ForwardFrom) == 0 {
		return true
	}
	for _, p := range s.opts.ForwardFrom {
		if p.Contains(client) {
			return true
		}
	}
	return false
}

func addrOf(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// HostResolvers returns the nameservers of a resolv.conf as "ip:53",
// leaving out the addresses in exclude (banger's own listeners).
func HostResolvers(resolvConf string, exclude ...string) ([]string, error) {
	cfg, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", resolvConf, err)
	}
	skip := map[string]bool{}
	for _, e := range exclude {
		if h, _, err := net.SplitHostPort(e); err == nil {
			skip[h] = true
		} else {
			skip[e] = true
		}
	}
	var out []string
	for _, s := range cfg.Servers {
		if skip[s] {
			continue
		}
		out = append(out, net.JoinHostPort(s, cfg.Port))
	}
	return out, nil
}
