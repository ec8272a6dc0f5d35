package qemu_test

import (
	"testing"

	"github.com/bangerdev/banger/internal/testenv"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/qemu"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestConformance boots real guests (TCG on hosts without usable KVM).
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("boots real guests; skipped in -short")
	}
	needQEMU(t)
	guest := vmmtest.BuildGuest(t)
	vmmtest.Run(t, func(t *testing.T) vmm.Driver { return qemu.New(qemu.Options{}) }, guest)
}
