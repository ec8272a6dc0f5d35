package daemon

import (
	"context"
	"errors"
	"io"
	"strings"

	"github.com/bangerdev/banger/internal/agentclient"
	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/model"
)

// OpenExec starts a command in a running VM and returns its raw frame
// stream for the caller to splice to the client. The command inherits the
// image's OCI config as in a container: Env (PATH …) under the request's
// own variables, User, and the working directory (the recorded workspace,
// else the image's WorkingDir) unless the request sets them.
func (d *Daemon) OpenExec(ctx context.Context, ref string, req agentproto.ExecRequest) (*agentclient.ExecConn, *model.VM, error) {
	vm, err := d.store.GetVM(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	c, err := d.agentFor(ctx, vm)
	if err != nil {
		return nil, vm, err
	}
	if im, err := d.store.GetImage(ctx, vm.ImageID); err == nil {
		req = applyImageConfig(req, im.Config, vm.Workspace)
	}
	ec, err := c.OpenExec(ctx, req)
	if err != nil && staleSession(c, err) {
		// The cached session died under us (the guest reset its end, say
		// after a daemon restart): nothing started, so dial afresh once.
		if rt := d.vms.get(vm.ID); rt != nil {
			rt.closeAgent()
		}
		if c, err = d.agentFor(ctx, vm); err == nil {
			ec, err = c.OpenExec(ctx, req)
		}
	}
	return ec, vm, err
}

// staleSession reports whether an operation failed because the agent
// session itself is gone, rather than because the guest refused it.
func staleSession(c *agentclient.Client, err error) bool {
	return closed(c.Done()) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		strings.HasSuffix(err.Error(), "EOF")
}

// applyImageConfig fills an exec request from the image config and workspace.
func applyImageConfig(req agentproto.ExecRequest, cfg model.ImageConfig, ws model.Workspace) agentproto.ExecRequest {
	req.Env = mergeEnv(cfg.Env, req.Env)
	if req.User == "" {
		req.User = cfg.User
	}
	if req.Cwd == "" {
		switch {
		case ws.GuestPath != "":
			req.Cwd = ws.GuestPath
		case cfg.WorkingDir != "" && cfg.WorkingDir != "/":
			req.Cwd = cfg.WorkingDir
		}
	}
	return req
}

// mergeEnv returns base with the keys of over replaced or added.
func mergeEnv(base, over []string) []string {
	idx := map[string]int{}
	out := make([]string, 0, len(base)+len(over))
	for _, kv := range append(append([]string{}, base...), over...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}
