package kernel_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/kernel"
	"github.com/bangerdev/banger/internal/kernel/apt"
	"github.com/bangerdev/banger/internal/kernel/kerneltest"
	"github.com/bangerdev/banger/internal/vmlinux"
)

func checkDebianKernel(t *testing.T, k kernel.Kernel) {
	t.Helper()
	if k.Version == "" || !k.HasModules || !k.HasVmlinuz || k.Codec == "" {
		t.Fatalf("kernel = %+v", k)
	}
	f, err := os.Open(k.Vmlinux)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, _ := io.Copy(h, f)
	if hex.EncodeToString(h.Sum(nil)) != k.SHA256 || n != k.Size {
		t.Fatalf("vmlinux sha256/size do not match the manifest")
	}
	bz, err := os.ReadFile(k.Vmlinuz)
	if err != nil || !vmlinux.IsBzImage(bz) || vmlinux.Release(bz) != k.Version {
		t.Fatalf("vmlinuz: %v, release %q vs %q", err, vmlinux.Release(bz), k.Version)
	}
	if filepath.Base(k.ModulesDir) != kernel.ModulesDir {
		t.Fatalf("modules dir %s", k.ModulesDir)
	}
	for _, p := range []string{"modules.builtin", "kernel/drivers/block/virtio_blk.ko", "kernel/fs/overlayfs/overlay.ko"} {
		if _, err := os.Stat(filepath.Join(k.ModulesDir, p)); err != nil {
			t.Errorf("modules: %v", err)
		}
	}
}

func TestImportDebianCloudDeb(t *testing.T) {
	if testing.Short() {
		t.Skip("imports a real kernel package")
	}
	deb := kerneltest.DebianCloudDeb(t)
	s, err := kernel.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	k, err := s.ImportDeb(context.Background(), "debian", deb)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("imported %s (%s, vmlinux %d bytes, %s) in %v", k.Version, k.Source, k.Size, k.Codec, time.Since(start))
	checkDebianKernel(t, k)

	// Same result with the pure-Go xz decoder (no xz tool on PATH).
	t.Setenv("PATH", "")
	start = time.Now()
	k2, err := s.ImportDeb(context.Background(), "debian-purego", deb)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pure-Go import in %v", time.Since(start))
	if k2.SHA256 != k.SHA256 || k2.Version != k.Version {
		t.Fatalf("pure-Go import differs: %+v", k2)
	}
}

func TestPullDefault(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads a kernel package")
	}
	if !apt.Available() {
		t.Skip("apt-get not installed")
	}
	s, err := kernel.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	k, err := s.Pull(context.Background(), kernel.DefaultName)
	if err != nil {
		t.Skipf("apt cannot fetch the default kernel here: %v", err)
	}
	t.Logf("pulled %s: %s in %v", k.Name, k.Source, time.Since(start))
	checkDebianKernel(t, k)
	if _, err := s.Pull(context.Background(), kernel.DefaultName); !errors.Is(err, errkind.AlreadyExists) {
		t.Fatalf("second Pull: %v, want AlreadyExists", err)
	}
	entries, _ := os.ReadDir(s.Dir())
	if len(entries) != 1 || entries[0].Name() != kernel.DefaultName {
		t.Fatalf("store holds %v after Pull", entries)
	}
}
