package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/agent"
	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/testenv"
)

// debianSystemdImage returns a Debian bookworm minbase + systemd-sysv ext4
// image, built with debootstrap on first use and cached in the test cache.
func debianSystemdImage(t *testing.T) string {
	return testenv.BuildDebianImage(t, testenv.DebianImage{
		File: "agent-bookworm-systemd.ext4", Label: "bookworm", Include: []string{"systemd-sysv"},
		Setup: func(tree string) error {
			return os.WriteFile(filepath.Join(tree, "root/from-image"), []byte("debian /root\n"), 0o600)
		},
	})
}

// TestBootQEMUSystemd boots a Debian image: the agent hands over to
// systemd and comes back as the banger-agent unit.
func TestBootQEMUSystemd(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	f := newGuestFixtureWith(t, debianSystemdImage(t))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	g := f.boot(t, "")
	c := g.connect(t)
	t.Logf("agent (systemd unit) answered %v after QEMU start", time.Since(start).Round(time.Millisecond))
	h, err := c.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.InitMode != agent.ModeSystemd || h.Hostname != "bangertest" {
		t.Errorf("health %+v", h)
	}
	got := sh(t, c, "cat /proc/1/comm; systemctl is-enabled banger-agent; systemctl is-active banger-agent; cat /root/from-image; test -f /root/.bashrc && echo bashrc; grep -q '^eth0.00000000.0202000A' /proc/net/route && echo route")
	want := "systemd\nenabled\nactive\ndebian /root\nbashrc\nroute\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	var out strings.Builder
	code, err := c.Exec(ctx, agentproto.ExecRequest{Argv: []string{"tty"}, TTY: true}, nil, &out, nil)
	if err != nil || code != 0 || !strings.HasPrefix(out.String(), "/dev/pts/") {
		t.Errorf("tty under systemd: %d %v %q", code, err, out.String())
	}
	if err := c.Shutdown(ctx, agentproto.ShutdownPoweroff); err != nil {
		t.Fatal(err)
	}
	g.waitExit(t, 2*time.Minute)
	checkFS(t, f.overlay)
	checkFS(t, f.work)
}
