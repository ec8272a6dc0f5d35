package daemon

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/portfwd"
)

// validate implements vmNetwork.
func (h *hostNetwork) validate(ctx context.Context, req api.VMCreateRequest) (model.VMNetwork, error) {
	mode := h.defaultMode()
	if req.Net != "" {
		m, err := hostnet.ParseMode(req.Net)
		if err != nil {
			return model.VMNetwork{}, err
		}
		mode = m
	}
	if mode != hostnet.ModeNone && h.host == nil {
		return model.VMNetwork{}, h.unavailable("--net " + string(mode))
	}
	out := model.VMNetwork{Mode: string(mode), AutoForward: req.AutoForward}
	if len(req.AllowHosts) > 0 || len(req.AllowCIDRs) > 0 {
		if mode != hostnet.ModeNAT {
			return model.VMNetwork{}, errkind.New(errkind.InvalidArgument,
				"--allow-host and --allow-cidr restrict outbound access and need --net nat (this VM is --net %s)", mode)
		}
		hosts, cidrs, err := parseAllowList(req.AllowHosts, req.AllowCIDRs)
		if err != nil {
			return model.VMNetwork{}, err
		}
		out.AllowHosts, out.AllowCIDRs = hosts, cidrs
	}
	var specs []portfwd.Spec
	for _, p := range req.Publish {
		s, err := portfwd.ParseSpec(p)
		if err != nil {
			return model.VMNetwork{}, err
		}
		for _, o := range specs {
			if o.Conflicts(s) {
				return model.VMNetwork{}, errkind.New(errkind.InvalidArgument, "--publish %s and %s use the same host port", o, s)
			}
		}
		if err := h.checkHostPort(ctx, "", s); err != nil {
			return model.VMNetwork{}, err
		}
		specs = append(specs, s)
		out.Forwards = append(out.Forwards, forwardOf(s, false))
	}
	if mode != hostnet.ModeNone && h.host.alloc.Free() == 0 {
		_, err := h.host.alloc.Allocate("") // for its error message
		return model.VMNetwork{}, err
	}
	return out, nil
}

// checkHostPort fails if a forward's host socket is taken: by a forward of
// another VM (running or not) or by any process now.
func (h *hostNetwork) checkHostPort(ctx context.Context, vmID string, s portfwd.Spec) error {
	if err := h.checkHostPortOwners(ctx, vmID, s); err != nil {
		return err
	}
	// Probe: bind and release.
	f, err := portfwd.Start(s, func(context.Context, string, int) (net.Conn, error) {
		return nil, errors.New("probe")
	}, nil)
	if err != nil {
		return err
	}
	return f.Close()
}

// parseAllowList validates --allow-host names (an IP literal becomes a
// /32) and --allow-cidr ranges.
func parseAllowList(hosts, cidrs []string) ([]string, []string, error) {
	var outH, outC []string
	for _, hst := range hosts {
		hst = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(hst)), ".")
		if a, err := netip.ParseAddr(hst); err == nil {
			if !a.Is4() {
				return nil, nil, errkind.New(errkind.InvalidArgument, "--allow-host %s: only IPv4 is supported", hst)
			}
			outC = append(outC, netip.PrefixFrom(a, 32).String())
			continue
		}
		if !validDNSName(hst) {
			return nil, nil, errkind.New(errkind.InvalidArgument, "--allow-host %q is not a host name", hst)
		}
		outH = append(outH, hst)
	}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			if a, aerr := netip.ParseAddr(strings.TrimSpace(c)); aerr == nil {
				p, err = netip.PrefixFrom(a, a.BitLen()), nil
			}
		}
		if err != nil || !p.Addr().Is4() {
			return nil, nil, errkind.New(errkind.InvalidArgument, "--allow-cidr %q is not an IPv4 CIDR", c)
		}
		outC = append(outC, p.Masked().String())
	}
	return outH, outC, nil
}

func validDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// hostAllowed reports whether qname is one of the allowed names or a
// subdomain of one.
func hostAllowed(allowed []string, qname string) bool {
	qname = strings.TrimSuffix(strings.ToLower(qname), ".")
	for _, a := range allowed {
		if qname == a || strings.HasSuffix(qname, "."+a) {
			return true
		}
	}
	return false
}

func forwardOf(s portfwd.Spec, auto bool) model.Forward {
	return model.Forward{Proto: s.Proto, HostAddr: s.HostAddr.String(), HostPort: s.HostPort, GuestPort: s.GuestPort, Auto: auto}
}

func specOf(f model.Forward) (portfwd.Spec, bool) {
	a, err := netip.ParseAddr(f.HostAddr)
	if err != nil || (f.Proto != "tcp" && f.Proto != "udp") {
		return portfwd.Spec{}, false
	}
	return portfwd.Spec{Proto: f.Proto, HostAddr: a, HostPort: f.HostPort, GuestPort: f.GuestPort}, true
}
