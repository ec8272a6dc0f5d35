package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/agent"
	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/kernel/kerneltest"
)

// debianSystemdImage returns a Debian bookworm minbase + systemd-sysv ext4
// image, built with debootstrap on first use and cached in the test cache.
func debianSystemdImage(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Skip("debootstrap not installed")
	}
	dir := kerneltest.CacheDir(t)
	img := filepath.Join(dir, "agent-bookworm-systemd.ext4")
	lockf, err := os.OpenFile(img+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lockf.Close()
	if err := syscall.Flock(int(lockf.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img); err == nil {
		return img
	}
	tree, err := os.MkdirTemp(dir, ".debootstrap-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tree)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "--include=systemd-sysv",
		"bookworm", tree, "http://deb.debian.org/debian").CombinedOutput()
	if err != nil {
		t.Skipf("debootstrap failed (no mirror?): %v\n%s", err, tail(out))
	}
	os.WriteFile(filepath.Join(tree, "root/from-image"), []byte("debian /root\n"), 0o600)
	tmp := img + ".tmp"
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "bookworm", "-d", tree, tmp, "1G").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if err := os.Rename(tmp, img); err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s in %v", img, time.Since(start).Round(time.Second))
	return img
}

func tail(b []byte) string {
	s := string(b)
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
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
