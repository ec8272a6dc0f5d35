package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
)

// Network reports the daemon's host networking.
func (c *Client) Network(ctx context.Context) (api.NetworkInfo, error) {
	var out api.NetworkInfo
	return out, c.Do(ctx, http.MethodGet, "/network", nil, &out)
}

// VMPorts lists the listening sockets inside a running VM.
func (c *Client) VMPorts(ctx context.Context, name string) (api.VMPorts, error) {
	var out api.VMPorts
	return out, c.Do(ctx, http.MethodGet, vmPath(name, "/ports"), nil, &out)
}

// AddForward forwards a host port to a guest port
// ("[HOST_ADDR:]HOST_PORT:GUEST_PORT[/udp]").
func (c *Client) AddForward(ctx context.Context, name, spec string) (model.Forward, error) {
	var out model.Forward
	return out, c.Do(ctx, http.MethodPost, vmPath(name, "/forwards"), api.ForwardRequest{Spec: spec}, &out)
}

// RemoveForward removes a forward (spec may name only the host side).
func (c *Client) RemoveForward(ctx context.Context, name, spec string) error {
	return c.Do(ctx, http.MethodDelete, vmPath(name, "/forwards?spec="+url.QueryEscape(spec)), nil, nil)
}
