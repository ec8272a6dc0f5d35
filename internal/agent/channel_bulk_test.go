package agent_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/bangerdev/banger/internal/agent"
	"github.com/bangerdev/banger/internal/agentclient"
	"github.com/bangerdev/banger/internal/agentproto"
)

// smallReads returns at most 4 KiB per read, as a virtio-serial port does
// (one guest buffer per read).
type smallReads struct{ *fakePort }

func (s smallReads) Read(b []byte) (int, error) {
	if len(b) > 4<<10 {
		b = b[:4<<10]
	}
	return s.fakePort.Read(b)
}

// TestPortBulkBothWays pushes megabytes through the port in both
// directions at once (exec cat echoes its stdin), across the pump's
// read-ahead chunks and both ends' batched writes, and checks every byte.
func TestPortBulkBothWays(t *testing.T) {
	port := &fakePort{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agent.NewServer(agent.Config{}).ServePort(ctx, func() (io.ReadWriteCloser, error) { return smallReads{port}, nil })
	}()
	t.Cleanup(func() {
		port.Close()
		cancel()
		<-done
	})
	for i := range 2 { // a second host connection reuses the pump's chunks
		c, err := agentclient.NewContext(testCtx(t), port.attach(t))
		if err != nil {
			t.Fatal(err)
		}
		in := make([]byte, 6<<20+12345)
		r := rand.New(rand.NewPCG(1, uint64(i)))
		for j := range in {
			in[j] = byte(r.Uint32())
		}
		var out bytes.Buffer
		code, err := c.Exec(testCtx(t), agentproto.ExecRequest{Argv: []string{"cat"}}, bytes.NewReader(in), &out, nil)
		if err != nil || code != 0 {
			t.Fatalf("connection %d: exec cat: code %d, %v", i, code, err)
		}
		if !bytes.Equal(out.Bytes(), in) {
			t.Fatalf("connection %d: got %d bytes back, want the %d sent", i, out.Len(), len(in))
		}
		c.Close()
	}
}
