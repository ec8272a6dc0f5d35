package firecracker_test

import (
	"os"
	"testing"

	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/firecracker"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

// TestConformance boots real guests under Firecracker. It needs hardware
// KVM: on hosts without it (PVM, no vmx/svm) it is skipped, and the nested
// lab (scripts/nested-lab, e2e TestNestedFirecracker) runs it inside a
// guest that has emulated AMD-V. With $BANGER_JAILER_BIN set it runs the
// suite a second time under the jailer.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("boots real guests; skipped in -short")
	}
	bin := fcBinary(t)
	if kvm := vmm.DetectKVM(); !kvm.Accelerated() {
		t.Skipf("firecracker cannot run guests here: %s (run the nested lab: docs/firecracker.md)", kvm.Reason())
	}
	guest := vmmtest.BuildGuest(t)
	vmmtest.Run(t, func(t *testing.T) vmm.Driver {
		return firecracker.New(firecracker.Options{Binary: bin})
	}, guest)
	if jailer := os.Getenv(jailerEnv); jailer != "" && os.Geteuid() == 0 {
		t.Run("Jailed", func(t *testing.T) {
			vmmtest.Run(t, func(t *testing.T) vmm.Driver {
				return firecracker.New(firecracker.Options{Binary: bin, JailerBinary: jailer})
			}, guest)
		})
	}
}
