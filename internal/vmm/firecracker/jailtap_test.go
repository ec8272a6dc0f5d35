package firecracker

import (
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/bangerdev/banger/internal/hostnet/hostnettest"
)

// TestShareTap gives a real persistent tap (as hostnet makes them: tap,
// no packet info, vnet header) to the jail user, in a scratch namespace.
func TestShareTap(t *testing.T) {
	ns := hostnettest.NewNS(t)
	ns.Must("ip", "tuntap", "add", "dev", "bgtap0", "mode", "tap", "vnet_hdr")
	errc := make(chan error, 1)
	go func() {
		// The thread stays locked and dies with the goroutine: it never goes
		// back to the pool in the scratch namespace.
		runtime.LockOSThread()
		if err := netns.Set(ns.Handle); err != nil {
			errc <- err
			return
		}
		errc <- shareTap("bgtap0", 65534, 65533)
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{"owner": "65534", "group": "65533"} {
		got := strings.TrimSpace(ns.Must("cat", "/sys/class/net/bgtap0/"+file))
		if got != want {
			t.Errorf("tap %s = %s, want %s", file, got, want)
		}
	}
}
