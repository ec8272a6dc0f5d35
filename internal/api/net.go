package api

import "github.com/bangerdev/banger/internal/model"

// NetworkInfo answers GET /v1/network: how VMs are attached here.
type NetworkInfo struct {
	// Available is false when host networking could not be set up; Reason
	// says why (VMs then get --net none; forwards still work).
	Available   bool   `json:"available"`
	Reason      string `json:"reason,omitempty"`
	DefaultMode string `json:"default_mode"`
	Bridge      string `json:"bridge,omitempty"`
	CIDR        string `json:"cidr,omitempty"`
	Gateway     string `json:"gateway,omitempty"`
	Table       string `json:"nft_table,omitempty"`
	// GuestDNS is the resolver guests use (the bridge address); HostDNS the
	// loopback listener for resolving <name>.vm on the host.
	GuestDNS    string   `json:"guest_dns,omitempty"`
	HostDNS     string   `json:"host_dns,omitempty"`
	UpstreamDNS []string `json:"upstream_dns,omitempty"`
	FreeIPs     int      `json:"free_ips,omitempty"`
	IdleTaps    []string `json:"idle_taps,omitempty"`
}

// ForwardRequest is POST /v1/vms/{name}/forwards.
type ForwardRequest struct {
	// Spec is "[HOST_ADDR:]HOST_PORT:GUEST_PORT[/udp]".
	Spec string `json:"spec"`
}

// GuestPort is a listening socket inside a guest.
type GuestPort struct {
	Proto   string `json:"proto"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	PID     int    `json:"pid,omitempty"`
	Process string `json:"process,omitempty"`
	// Endpoint is name.vm:port when the VM has an address and the socket is
	// reachable from the host network.
	Endpoint string `json:"endpoint,omitempty"`
	// Forwarded lists host endpoints forwarding to this port.
	Forwarded []string `json:"forwarded,omitempty"`
}

// VMPorts answers GET /v1/vms/{name}/ports.
type VMPorts struct {
	VM       string          `json:"vm"`
	IP       string          `json:"ip,omitempty"`
	Ports    []GuestPort     `json:"ports"`
	Forwards []model.Forward `json:"forwards"`
}
