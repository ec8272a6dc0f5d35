// Package portfwd forwards host ports to guest ports over the guest
// agent's channel (no guest NIC needed): a TCP listener or UDP socket on
// the host per forward, one agent stream per TCP connection or UDP peer.
package portfwd

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/internal/errkind"
)

// DefaultHostAddr is where forwards listen unless told otherwise.
var DefaultHostAddr = netip.MustParseAddr("127.0.0.1")

// Spec is one forward: HostAddr:HostPort on the host to GuestPort in the
// guest, over Proto ("tcp" or "udp").
type Spec struct {
	Proto     string
	HostAddr  netip.Addr
	HostPort  int
	GuestPort int
}

// ParseSpec parses "[HOST_ADDR:]HOST_PORT:GUEST_PORT[/udp|/tcp]"; an IPv6
// host address goes in brackets ("[::1]:8080:80").
func ParseSpec(s string) (Spec, error) {
	bad := func(format string, args ...any) (Spec, error) {
		return Spec{}, errkind.WithHint(
			errkind.New(errkind.InvalidArgument, "forward %q: "+format, append([]any{s}, args...)...),
			"write [HOST_ADDR:]HOST_PORT:GUEST_PORT[/udp], e.g. 8080:80 or 0.0.0.0:5353:53/udp")
	}
	spec := Spec{Proto: "tcp", HostAddr: DefaultHostAddr}
	rest := s
	if i := strings.LastIndex(rest, "/"); i >= 0 {
		spec.Proto = strings.ToLower(rest[i+1:])
		rest = rest[:i]
		if spec.Proto != "tcp" && spec.Proto != "udp" {
			return bad("protocol must be tcp or udp")
		}
	}
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]:")
		if end < 0 {
			return bad("unclosed '['")
		}
		a, err := netip.ParseAddr(rest[1:end])
		if err != nil {
			return bad("bad host address %q", rest[1:end])
		}
		spec.HostAddr = a
		rest = rest[end+2:]
	}
	parts := strings.Split(rest, ":")
	switch len(parts) {
	case 2:
	case 3:
		if spec.HostAddr != DefaultHostAddr {
			return bad("two host addresses")
		}
		a, err := netip.ParseAddr(parts[0])
		if err != nil {
			return bad("bad host address %q", parts[0])
		}
		spec.HostAddr = a
		parts = parts[1:]
	default:
		return bad("want HOST_PORT:GUEST_PORT")
	}
	var err error
	if spec.HostPort, err = parsePort(parts[0]); err != nil {
		return bad("host port: %v", err)
	}
	if spec.GuestPort, err = parsePort(parts[1]); err != nil {
		return bad("guest port: %v", err)
	}
	spec.HostAddr = spec.HostAddr.Unmap()
	return spec, nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", s)
	}
	return p, nil
}

// HostEndpoint is "addr:port" of the host side.
func (s Spec) HostEndpoint() string {
	return net.JoinHostPort(s.HostAddr.String(), strconv.Itoa(s.HostPort))
}

// String is the canonical form, "127.0.0.1:8080:80/tcp".
func (s Spec) String() string {
	return fmt.Sprintf("%s:%d/%s", s.HostEndpoint(), s.GuestPort, s.Proto)
}

// Key identifies the host side of a forward: two forwards with the same
// key cannot both be active.
func (s Spec) Key() string { return s.Proto + " " + s.HostEndpoint() }

// Conflicts reports whether two forwards need the same host socket (a
// wildcard address conflicts with every address of the same port).
func (s Spec) Conflicts(o Spec) bool {
	if s.Proto != o.Proto || s.HostPort != o.HostPort {
		return false
	}
	return s.HostAddr == o.HostAddr || s.HostAddr.IsUnspecified() || o.HostAddr.IsUnspecified()
}
