package imagebuild_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/dockerfile"
	"github.com/bangerdev/banger/internal/imagebuild"
	"github.com/bangerdev/banger/internal/testenv"
	"github.com/bangerdev/banger/internal/vmm/qemu"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestBuildInQEMU runs a small Dockerfile in real build VMs (QEMU, TCG on
// hosts without usable KVM) with no network, then rebuilds it from cache.
func TestBuildInQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots real guests; skipped in -short")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	guest := vmmtest.BuildGuest(t)
	bctx := t.TempDir()
	if err := os.WriteFile(filepath.Join(bctx, "hello.txt"), []byte("from the context\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := `FROM busybox
ENV GREETING=hi
RUN echo "$GREETING" > /x && mkdir -p /root/made && rm /etc/os-release
COPY hello.txt /opt/
WORKDIR /srv
RUN cat /opt/hello.txt > copied && id -u > /uid
`
	df, err := dockerfile.Parse(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	p, err := df.Plan(dockerfile.Config{Env: []string{"PATH=/usr/bin:/bin"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	runner := &imagebuild.VMRunner{
		Driver: qemu.New(qemu.Options{}), Kernel: guest.Kernel, Initrd: guest.Initrd,
		CPUs: 1, MemoryMiB: 256, RunDir: t.TempDir(),
	}
	b := &imagebuild.Builder{CacheDir: t.TempDir(), Runner: runner}
	out := filepath.Join(t.TempDir(), "rootfs.ext4")
	var log bytes.Buffer
	req := imagebuild.Request{Plan: p, Context: bctx, Base: imagebuild.Base{Rootfs: guest.BaseDisk, Digest: "vmmtest-busybox"},
		Output: out, Log: &log, Network: imagebuild.NetworkNone}
	start := time.Now()
	res, err := b.Build(context.Background(), req)
	if err != nil {
		t.Fatalf("build: %v\nlog:\n%s", err, log.String())
	}
	t.Logf("first build: %v (%d steps)", time.Since(start).Round(time.Millisecond), len(res.Steps))
	if o, err := exec.Command("e2fsck", "-fn", out).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck: %v\n%s", err, o)
	}
	for path, want := range map[string]string{"/x": "hi\n", "/srv/copied": "from the context\n", "/uid": "0\n", "/opt/hello.txt": "from the context\n"} {
		got, err := exec.Command("debugfs", "-R", "cat "+path, out).Output()
		if err != nil || string(got) != want {
			t.Errorf("%s = %q (%v), want %q", path, got, err, want)
		}
	}
	for path, present := range map[string]bool{"/root/made": true, "/etc/os-release": false, "/bin/busybox": true, "/run/banger": false} {
		o, _ := exec.Command("debugfs", "-R", "stat "+path, out).CombinedOutput()
		if got := !strings.Contains(string(o), "File not found"); got != present {
			t.Errorf("%s present = %v, want %v", path, got, present)
		}
	}

	req.Output = filepath.Join(t.TempDir(), "rootfs.ext4")
	start = time.Now()
	res2, err := b.Build(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	t.Logf("cached rebuild: %v", d.Round(time.Millisecond))
	if !res2.Cached || d > 2*time.Second {
		t.Fatalf("rebuild not served from cache in under 2 s: cached=%v in %v", res2.Cached, d)
	}
	left, _ := os.ReadDir(runner.RunDir)
	if len(left) != 0 {
		t.Errorf("build vm run dirs left: %v", left)
	}
}

// TestBuildNATInQEMU runs a RUN step that downloads from an HTTP server on
// the host's loopback through the build VM's NAT (QEMU user-mode network,
// where 10.0.2.2 is the host).
func TestBuildNATInQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots real guests; skipped in -short")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "downloaded through NAT\n")
	}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	port := ln.Addr().(*net.TCPAddr).Port

	guest := vmmtest.BuildGuest(t)
	df, err := dockerfile.Parse(strings.NewReader(fmt.Sprintf("FROM busybox\nRUN wget -q -O /fetched http://10.0.2.2:%d/file\n", port)))
	if err != nil {
		t.Fatal(err)
	}
	p, err := df.Plan(dockerfile.Config{Env: []string{"PATH=/usr/bin:/bin"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	runner := &imagebuild.VMRunner{Driver: qemu.New(qemu.Options{}), Kernel: guest.Kernel, Initrd: guest.Initrd,
		CPUs: 1, MemoryMiB: 256, RunDir: t.TempDir()}
	b := &imagebuild.Builder{CacheDir: t.TempDir(), Runner: runner}
	out := filepath.Join(t.TempDir(), "rootfs.ext4")
	var log bytes.Buffer
	_, err = b.Build(context.Background(), imagebuild.Request{Plan: p, Context: t.TempDir(),
		Base: imagebuild.Base{Rootfs: guest.BaseDisk, Digest: "vmmtest-busybox"}, Output: out, Log: &log, Network: imagebuild.NetworkNAT})
	if err != nil {
		t.Fatalf("build: %v\nlog:\n%s", err, log.String())
	}
	got, err := exec.Command("debugfs", "-R", "cat /fetched", out).Output()
	if err != nil || string(got) != "downloaded through NAT\n" {
		t.Fatalf("/fetched = %q, %v", got, err)
	}
	// Without NAT the same step fails.
	_, err = b.Build(context.Background(), imagebuild.Request{Plan: p, Context: t.TempDir(), NoCache: true,
		Base: imagebuild.Base{Rootfs: guest.BaseDisk, Digest: "vmmtest-busybox"}, Output: out, Network: imagebuild.NetworkNone})
	var se *imagebuild.StepError
	if !errors.As(err, &se) {
		t.Fatalf("download without a network: %v", err)
	}
}
