package daemon

import (
	"context"
	"net/netip"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/errkind"
)

// NetworkInfo reports how VMs are attached to the host.
func (d *Daemon) NetworkInfo(context.Context) api.NetworkInfo {
	h, ok := d.net.(*hostNetwork)
	if !ok {
		return api.NetworkInfo{DefaultMode: "none", Reason: "networking is not set up"}
	}
	info := api.NetworkInfo{DefaultMode: string(h.defaultMode()), Reason: h.reason}
	if hs := h.host; hs != nil {
		info.Available = true
		info.Bridge = h.cfg.Bridge
		info.CIDR = hs.subnet.Prefix.String()
		info.Gateway = hs.subnet.Gateway.String()
		info.Table = hs.table
		info.GuestDNS = hs.guestDNS
		info.HostDNS = hs.hostDNS
		info.UpstreamDNS = hs.upstreams
		info.FreeIPs = hs.alloc.Free()
		info.IdleTaps = hs.taps.Idle()
	}
	return info
}

// hostNet returns the daemon's hostNetwork (forwards need it).
func (d *Daemon) hostNet() (*hostNetwork, error) {
	h, ok := d.net.(*hostNetwork)
	if !ok {
		return nil, errkind.New(errkind.Unavailable, "port forwarding is not set up in this daemon")
	}
	return h, nil
}

// vmAddr returns the address a VM is reachable at on the bridge.
func vmAddr(ip string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(ip)
	return a, err == nil
}
