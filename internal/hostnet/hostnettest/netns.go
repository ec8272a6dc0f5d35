// Package hostnettest provides network namespaces for tests that program
// real links and nftables without touching the host's own network, and
// recording fakes of hostnet's Links and Firewall.
package hostnettest

import (
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/bangerdev/banger/internal/testenv"
)

// NS is a network namespace made by a test (`ip netns add`), deleted with
// everything in it when the test ends.
type NS struct {
	t      testing.TB
	Name   string
	Handle netns.NsHandle
}

// NewNS creates a namespace with lo up. It skips the test without root or
// iproute2.
func NewNS(t testing.TB) *NS {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "ip")
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "bgtest-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{t: t, Name: name}
	t.Cleanup(func() {
		if ns.Handle.IsOpen() {
			ns.Handle.Close()
		}
		// Processes started in the namespace with Exec are the test's to stop.
		_ = exec.Command("ip", "netns", "del", name).Run()
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("opening netns %s: %v", name, err)
	}
	ns.Handle = h
	ns.Must("ip", "link", "set", "lo", "up")
	return ns
}

// Netlink returns an rtnetlink handle inside the namespace.
func (ns *NS) Netlink() *netlink.Handle {
	ns.t.Helper()
	h, err := netlink.NewHandleAt(ns.Handle)
	if err != nil {
		ns.t.Fatalf("netlink handle in %s: %v", ns.Name, err)
	}
	ns.t.Cleanup(h.Close)
	return h
}

// Sysctl writes a /proc/sys/net key inside the namespace.
func (ns *NS) Sysctl(key, value string) error {
	out, err := exec.Command("ip", "netns", "exec", ns.Name, "sysctl", "-qw", "net."+strings.ReplaceAll(key, "/", ".")+"="+value).CombinedOutput()
	if err != nil {
		return &execError{err: err, out: string(out)}
	}
	return nil
}

type execError struct {
	err error
	out string
}

func (e *execError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.out) }

// Exec runs a command inside the namespace and returns its combined output.
func (ns *NS) Exec(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), &execError{err: err, out: string(out)}
	}
	return string(out), nil
}

// Must runs a command inside the namespace and fails the test on error.
func (ns *NS) Must(args ...string) string {
	ns.t.Helper()
	out, err := ns.Exec(args...)
	if err != nil {
		ns.t.Fatalf("in %s: %s: %v", ns.Name, strings.Join(args, " "), err)
	}
	return out
}

// Start runs a long-lived command inside the namespace, killed at cleanup.
func (ns *NS) Start(args ...string) *exec.Cmd {
	ns.t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	if err := cmd.Start(); err != nil {
		ns.t.Fatalf("in %s: starting %s: %v", ns.Name, strings.Join(args, " "), err)
	}
	ns.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}
