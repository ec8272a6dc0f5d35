// Package kerneltest provides real-kernel fixtures for tests: the Debian
// cloud kernel package, downloaded once with apt-get and cached across runs.
//
// The cache directory is $BANGER_TEST_CACHE, or /var/cache/banger-test when
// unset. Tests calling these helpers are skipped (not failed) when the
// package cannot be fetched.
package kerneltest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/kernel"
	"github.com/bangerdev/banger/internal/kernel/apt"
)

// DebianCloudPackage is the apt package the fixture downloads (a meta
// package; the versioned linux-image-<release> package it depends on is
// what gets cached).
const DebianCloudPackage = "linux-image-cloud-amd64"

// debGlob matches versioned cloud kernel packages, not the meta package.
const debGlob = "linux-image-[0-9]*-cloud-amd64_*.deb"

// CacheDir returns the test cache directory, creating it, or skips t when
// it cannot be created.
func CacheDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("BANGER_TEST_CACHE")
	if dir == "" {
		dir = "/var/cache/banger-test"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Skipf("kerneltest: test cache %s unusable (set BANGER_TEST_CACHE): %v", dir, err)
	}
	return dir
}

// DebianCloudDeb returns the path of a cached Debian cloud kernel .deb
// (e.g. linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb), downloading
// it with `apt-get download` on first use. Safe to call from concurrent
// test processes.
func DebianCloudDeb(t testing.TB) string {
	t.Helper()
	dir := CacheDir(t)
	unlock := lock(t, filepath.Join(dir, ".debian-cloud.lock"))
	defer unlock()

	if p := newestDeb(dir); p != "" {
		return p
	}
	if !apt.Available() {
		t.Skip("kerneltest: apt-get/apt-cache not installed; cannot fetch " + DebianCloudPackage)
	}
	tmp, err := os.MkdirTemp(dir, ".download-")
	if err != nil {
		t.Skipf("kerneltest: cannot create download dir in %s: %v", dir, err)
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	got, err := apt.Download(ctx, tmp, DebianCloudPackage)
	if err != nil {
		t.Skipf("kerneltest: cannot download %s with apt-get: %v", DebianCloudPackage, err)
	}
	dst := filepath.Join(dir, filepath.Base(got))
	if err := os.Rename(got, dst); err != nil {
		t.Fatalf("kerneltest: caching %s: %v", got, err)
	}
	return dst
}

func newestDeb(dir string) string {
	m, _ := filepath.Glob(filepath.Join(dir, debGlob))
	if len(m) == 0 {
		return ""
	}
	sort.Strings(m)
	return m[len(m)-1]
}

// lock takes an exclusive flock on path, for processes sharing the cache.
func lock(t testing.TB, path string) func() {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Skipf("kerneltest: cannot open lock %s: %v", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("kerneltest: locking %s: %v", path, err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}
}

// DebianCloudKernel returns the Debian cloud kernel imported into a kernel
// store kept in the test cache (<cache>/kernels), importing it from
// DebianCloudDeb on first use. Its files (Vmlinux, Vmlinuz, ModulesDir) are
// shared between tests: treat them as read-only.
func DebianCloudKernel(t testing.TB) kernel.Kernel {
	t.Helper()
	deb := DebianCloudDeb(t)
	dir := CacheDir(t)
	unlock := lock(t, filepath.Join(dir, ".kernels.lock"))
	defer unlock()

	store, err := kernel.NewStore(filepath.Join(dir, "kernels"))
	if err != nil {
		t.Fatalf("kerneltest: %v", err)
	}
	// linux-image-<release>_<version>_amd64.deb -> <release>
	name := strings.TrimPrefix(strings.SplitN(filepath.Base(deb), "_", 2)[0], "linux-image-")
	ctx := context.Background()
	k, err := store.Get(ctx, name)
	if err == nil {
		return k
	}
	if !errors.Is(err, errkind.NotFound) {
		t.Fatalf("kerneltest: %v", err)
	}
	os.RemoveAll(filepath.Join(store.Dir(), name+".staging")) // left by a killed test run
	k, err = store.ImportDeb(ctx, name, deb)
	if err != nil {
		t.Fatalf("kerneltest: importing %s: %v", deb, err)
	}
	return k
}
