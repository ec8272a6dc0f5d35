package vmmtest

import (
	"bytes"
	"context"
	"net"

	"github.com/bangerdev/banger/internal/agentclient"
	"github.com/bangerdev/banger/internal/agentproto"
)

// clientAgent adapts agentclient.Client to Agent.
type clientAgent struct{ c *agentclient.Client }

func connectAgentClient(ctx context.Context, conn net.Conn) (Agent, error) {
	c, err := agentclient.NewContext(ctx, conn)
	if err != nil {
		return nil, err
	}
	return clientAgent{c}, nil
}

func (a clientAgent) KernelRelease(ctx context.Context) (string, error) {
	h, err := a.c.Health(ctx)
	if err != nil {
		return "", err
	}
	return h.KernelRelease, nil
}

func (a clientAgent) Run(ctx context.Context, argv ...string) (string, int, error) {
	var out bytes.Buffer
	code, err := a.c.Exec(ctx, agentproto.ExecRequest{Argv: argv}, nil, &out, nil)
	return out.String(), code, err
}

func (a clientAgent) Poweroff(ctx context.Context) error {
	return a.c.Shutdown(ctx, agentproto.ShutdownPoweroff)
}

func (a clientAgent) Close() error { return a.c.Close() }
