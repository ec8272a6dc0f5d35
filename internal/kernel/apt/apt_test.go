package apt

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/errkind"
)

func TestResolveKernelPackageFollowsMeta(t *testing.T) {
	if !Available() {
		t.Skip("apt-get/apt-cache not installed")
	}
	ctx := context.Background()
	got, err := ResolveKernelPackage(ctx, "linux-image-cloud-amd64")
	if err != nil {
		t.Skipf("apt metadata for linux-image-cloud-amd64 not available: %v", err)
	}
	if got == "linux-image-cloud-amd64" || !strings.HasPrefix(got, "linux-image-") {
		t.Fatalf("resolved to %q, want a versioned linux-image package", got)
	}
	// The versioned package resolves to itself.
	again, err := ResolveKernelPackage(ctx, got)
	if err != nil || again != got {
		t.Fatalf("ResolveKernelPackage(%q) = %q, %v", got, again, err)
	}
}

func TestResolveUnknownPackage(t *testing.T) {
	if !Available() {
		t.Skip("apt-get/apt-cache not installed")
	}
	_, err := ResolveKernelPackage(context.Background(), "banger-no-such-package-xyz")
	if !errors.Is(err, errkind.NotFound) {
		t.Fatalf("err = %v, want NotFound", err)
	}
}
