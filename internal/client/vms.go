package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"

	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/errkind"
)

func vmPath(name string, rest string) string { return "/vms/" + url.PathEscape(name) + rest }

// ListVMs lists every VM.
func (c *Client) ListVMs(ctx context.Context) ([]api.VMInfo, error) {
	var out []api.VMInfo
	return out, c.Do(ctx, http.MethodGet, "/vms", nil, &out)
}

// ShowVM returns one VM.
func (c *Client) ShowVM(ctx context.Context, name string) (api.VMInfo, error) {
	var out api.VMInfo
	return out, c.Do(ctx, http.MethodGet, vmPath(name, ""), nil, &out)
}

// CreateVM creates (and by default starts) a VM.
func (c *Client) CreateVM(ctx context.Context, req api.VMCreateRequest, onEvent func(api.Event)) (api.VMInfo, error) {
	var out api.VMInfo
	return out, c.Stream(ctx, http.MethodPost, "/vms", req, onEvent, &out)
}

// StartVM boots a stopped VM.
func (c *Client) StartVM(ctx context.Context, name string, onEvent func(api.Event)) (api.VMInfo, error) {
	var out api.VMInfo
	return out, c.Stream(ctx, http.MethodPost, vmPath(name, "/start"), struct{}{}, onEvent, &out)
}

// RestartVM reboots a VM.
func (c *Client) RestartVM(ctx context.Context, name string, onEvent func(api.Event)) (api.VMInfo, error) {
	var out api.VMInfo
	return out, c.Stream(ctx, http.MethodPost, vmPath(name, "/restart"), struct{}{}, onEvent, &out)
}

// StopVM stops a VM cleanly.
func (c *Client) StopVM(ctx context.Context, name string, req api.VMStopRequest) (api.VMInfo, error) {
	var out api.VMInfo
	return out, c.Do(ctx, http.MethodPost, vmPath(name, "/stop"), req, &out)
}

// KillVM signals a VM's VMM process.
func (c *Client) KillVM(ctx context.Context, name string, req api.VMKillRequest) (api.VMInfo, error) {
	var out api.VMInfo
	return out, c.Do(ctx, http.MethodPost, vmPath(name, "/kill"), req, &out)
}

// DeleteVM deletes a VM and its disks.
func (c *Client) DeleteVM(ctx context.Context, name string, force bool) error {
	q := ""
	if force {
		q = "?force=true"
	}
	return c.Do(ctx, http.MethodDelete, vmPath(name, q), nil, nil)
}

// SetVM resizes a stopped VM.
func (c *Client) SetVM(ctx context.Context, name string, req api.VMSetRequest) (api.VMInfo, error) {
	var out api.VMInfo
	return out, c.Do(ctx, http.MethodPatch, vmPath(name, ""), req, &out)
}

// PruneVMs deletes every VM that is not running.
func (c *Client) PruneVMs(ctx context.Context, dryRun bool) ([]string, error) {
	var out []string
	return out, c.Do(ctx, http.MethodPost, "/vms/prune", map[string]bool{"dry_run": dryRun}, &out)
}

// VMLogs returns the console log stream; with follow it stays open.
func (c *Client) VMLogs(ctx context.Context, name string, follow bool) (io.ReadCloser, error) {
	req, err := c.newRequest(ctx, http.MethodGet, vmPath(name, fmt.Sprintf("/logs?follow=%t", follow)), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp.Body, nil
}

// Exec starts a command in a VM and returns the raw exec stream (agentproto
// frames); the caller speaks it with agentproto.NewExecStream.
func (c *Client) Exec(ctx context.Context, name string, req agentproto.ExecRequest) (net.Conn, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, fmt.Errorf("%w on %s: %v", ErrNoDaemon, c.socket, err)
	}
	hreq, _ := http.NewRequest(http.MethodPost, c.url(vmPath(name, "/exec")), nil)
	hreq.Header.Set("Upgrade", api.ExecUpgrade)
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Content-Type", "application/json")
	hreq.ContentLength = int64(len(body))
	hreq.Body = io.NopCloser(bytesReader(body))
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := hreq.Write(conn); err != nil {
		conn.Close()
		return nil, errkind.Wrap(errkind.Unavailable, err, "sending exec request")
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, hreq)
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, errkind.Wrap(errkind.Unavailable, err, "reading exec response")
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		return nil, decodeError(resp)
	}
	return &bufConn{Conn: conn, r: br}, nil
}

// bufConn reads through the buffered reader that parsed the HTTP response.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }
