// Package vmmtest is the conformance suite every vmm.Driver must pass. It
// boots real guests (Debian cloud kernel, initrd with banger-agent, busybox
// base disk plus per-VM overlay and work disks) and checks the agent
// channel, console log, stop paths, adoption and cleanup.
//
// Usage from a driver's tests:
//
//	func TestConformance(t *testing.T) {
//		guest := vmmtest.BuildGuest(t)
//		vmmtest.Run(t, func(t *testing.T) vmm.Driver { return mydriver.New(...) }, guest)
//	}
package vmmtest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/vmdisk"
	"github.com/bangerdev/banger/internal/vmm"
)

// Timeouts, generous enough for TCG on a loaded 2-vCPU host.
const (
	bootTimeout = 90 * time.Second
	stopTimeout = 60 * time.Second
)

// Run runs the conformance suite against the drivers factory returns (a
// fresh driver value per call).
func Run(t *testing.T, factory func(t *testing.T) vmm.Driver, guest GuestArtifacts) {
	t.Run("Capabilities", func(t *testing.T) { testCapabilities(t, factory(t)) })
	t.Run("BootExecPoweroff", func(t *testing.T) { testBootExecPoweroff(t, factory, guest) })
	t.Run("AdoptKill", func(t *testing.T) { testAdoptKill(t, factory, guest) })
	t.Run("Shutdown", func(t *testing.T) { testShutdown(t, factory, guest) })
	t.Run("BadKernel", func(t *testing.T) { testBadKernel(t, factory(t), guest) })
	t.Run("UserNet", func(t *testing.T) { testUserNet(t, factory, guest) })
}

func testCapabilities(t *testing.T, d vmm.Driver) {
	caps, err := d.Capabilities(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s %s: accel %s, emulated %v: %s", caps.VMM, caps.Version, caps.Accel, caps.Emulated, caps.Reason)
	if caps.VMM != d.Name() || caps.Accel == "" || caps.Reason == "" || caps.Channel == "" {
		t.Errorf("incomplete capabilities %+v", caps)
	}
	if caps.Emulated != (caps.Accel == vmm.AccelTCG) {
		t.Errorf("emulated %v with accel %s", caps.Emulated, caps.Accel)
	}
}

// newSpec returns a spec for guest with fresh overlay and work disks.
func newSpec(t *testing.T, guest GuestArtifacts) vmm.Spec {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	overlay, work := filepath.Join(dir, "overlay.ext4"), filepath.Join(dir, "work.ext4")
	if err := vmdisk.CreateOverlay(ctx, overlay, 1<<30); err != nil {
		t.Fatal(err)
	}
	if err := vmdisk.CreateWork(ctx, work, 1<<30); err != nil {
		t.Fatal(err)
	}
	return vmm.Spec{
		ID: "t" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36), Name: "vmmtest",
		RunDir: filepath.Join(dir, "run"), Kernel: guest.Kernel, Initrd: guest.Initrd,
		Cmdline: guest.Cmdline, CPUs: 1, MemoryMiB: 256,
		Disks: []vmm.Disk{{Path: guest.BaseDisk, ReadOnly: true}, {Path: overlay}, {Path: work}},
	}
}

// boot boots spec and registers a cleanup that kills the VM if the test
// leaves it running.
func boot(t *testing.T, d vmm.Driver, spec vmm.Spec) vmm.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	inst, err := d.Boot(ctx, spec)
	if err != nil {
		t.Fatalf("boot: %v", err)
	}
	t.Cleanup(func() {
		_ = inst.Kill(syscall.SIGKILL)
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if _, err := inst.Wait(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return inst
}

// connect dials the agent and runs the handshake, retrying until the guest
// answers. It returns the client and the time from start to a health answer.
func connect(t *testing.T, inst vmm.Instance, guest GuestArtifacts) Agent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	conn, err := inst.DialAgent(ctx)
	if err != nil {
		t.Fatalf("dial agent: %v\nconsole:\n%s", err, consoleTail(inst))
	}
	a, err := guest.ConnectAgent(ctx, conn)
	if err != nil {
		conn.Close()
		t.Fatalf("agent handshake: %v\nconsole:\n%s", err, consoleTail(inst))
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func consoleTail(inst vmm.Instance) string {
	b, err := os.ReadFile(inst.ConsoleLog())
	if err != nil {
		return "(no console log: " + err.Error() + ")"
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func testBootExecPoweroff(t *testing.T, factory func(t *testing.T) vmm.Driver, guest GuestArtifacts) {
	d := factory(t)
	spec := newSpec(t, guest)
	start := time.Now()
	inst := boot(t, d, spec)
	booted := time.Since(start)
	id := inst.Identity()
	if id.VMM != d.Name() || id.PID <= 0 || id.StartTime == 0 || id.RunDir != spec.RunDir {
		t.Errorf("identity %+v", id)
	}
	if !processAlive(id) {
		t.Fatalf("vmm process %d not running after boot", id.PID)
	}
	a := connect(t, inst, guest)
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	rel, err := a.KernelRelease(ctx)
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	healthy := time.Since(start)
	t.Logf("boot returned after %v, agent healthy after %v", booted.Round(time.Millisecond), healthy.Round(time.Millisecond))
	if rel != guest.KernelRelease {
		t.Errorf("health kernel release %q, want %q", rel, guest.KernelRelease)
	}
	out, code, err := a.Run(ctx, "uname", "-r")
	if err != nil || code != 0 || strings.TrimSpace(out) != guest.KernelRelease {
		t.Errorf("exec uname -r = %q, %d, %v; want %q", out, code, err, guest.KernelRelease)
	}
	// The overlay root is writable and the work disk is /root.
	out, code, err = a.Run(ctx, "sh", "-c", "echo hi > /etc/vmmtest && cat /etc/vmmtest && grep -c ' /root ' /proc/mounts")
	if err != nil || code != 0 || strings.Fields(out)[0] != "hi" {
		t.Errorf("write to overlay root and check /root mount: %q, %d, %v", out, code, err)
	}
	if b, err := os.ReadFile(inst.ConsoleLog()); err != nil || len(b) == 0 {
		t.Errorf("console log %s empty or unreadable: %v", inst.ConsoleLog(), err)
	}

	stopStart := time.Now()
	if err := a.Poweroff(ctx); err != nil {
		t.Fatalf("agent poweroff: %v", err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), stopTimeout)
	defer wcancel()
	st, err := inst.Wait(wctx)
	if err != nil {
		t.Fatalf("waiting for exit after poweroff: %v\nconsole:\n%s", err, consoleTail(inst))
	}
	t.Logf("poweroff to exit: %v, status %v", time.Since(stopStart).Round(time.Millisecond), st)
	if st.Known && !st.Success() {
		t.Errorf("vmm exit status after guest poweroff: %v", st)
	}
	checkNoLeftovers(t, id)
	// The agent's poweroff syncs: the writable disks are consistent.
	for _, d := range spec.Disks[1:] {
		if out, err := exec.Command("e2fsck", "-fn", d.Path).CombinedOutput(); err != nil {
			t.Errorf("e2fsck -fn %s after poweroff: %v\n%s", d.Path, err, out)
		}
	}
}

func testAdoptKill(t *testing.T, factory func(t *testing.T) vmm.Driver, guest GuestArtifacts) {
	spec := newSpec(t, guest)
	inst := boot(t, factory(t), spec)
	id := inst.Identity()
	a := connect(t, inst, guest)
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	if _, err := a.KernelRelease(ctx); err != nil {
		t.Fatalf("health: %v", err)
	}
	a.Close()

	// A fresh driver value adopts the running VM from its identity alone.
	d2 := factory(t)
	bad := id
	bad.StartTime++
	if _, err := d2.Adopt(ctx, spec, bad); err == nil || errkind.Of(err) != errkind.NotFound {
		t.Errorf("adopt with a wrong start time: %v, want a not-found error", err)
	}
	bad = id
	bad.PID = 1
	if _, err := d2.Adopt(ctx, spec, bad); err == nil {
		t.Error("adopted pid 1")
	}
	adopted, err := d2.Adopt(ctx, spec, id)
	if err != nil {
		t.Fatalf("adopt: %v", err)
	}
	if adopted.Identity().PID != id.PID || adopted.ConsoleLog() != inst.ConsoleLog() {
		t.Errorf("adopted identity %+v, want %+v", adopted.Identity(), id)
	}
	a2 := connect(t, adopted, guest)
	rel, err := a2.KernelRelease(ctx)
	if err != nil || rel != guest.KernelRelease {
		t.Fatalf("health through adopted instance: %q, %v", rel, err)
	}

	if err := adopted.Kill(syscall.SIGKILL); err != nil {
		t.Fatalf("kill: %v", err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), stopTimeout)
	defer wcancel()
	if _, err := adopted.Wait(wctx); err != nil {
		t.Fatalf("adopted wait: %v", err)
	}
	st, err := inst.Wait(wctx)
	if err != nil {
		t.Fatalf("original wait: %v", err)
	}
	if st.Known && st.Signal != syscall.SIGKILL {
		t.Errorf("status after SIGKILL: %v", st)
	}
	if err := adopted.Kill(syscall.SIGKILL); err != nil {
		t.Errorf("kill after exit: %v, want nil", err)
	}
	checkNoLeftovers(t, id)
	if _, err := d2.Adopt(ctx, spec, id); errkind.Of(err) != errkind.NotFound {
		t.Errorf("adopt after exit: %v, want not found", err)
	}
}

func testShutdown(t *testing.T, factory func(t *testing.T) vmm.Driver, guest GuestArtifacts) {
	spec := newSpec(t, guest)
	inst := boot(t, factory(t), spec)
	a := connect(t, inst, guest)
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	if _, err := a.KernelRelease(ctx); err != nil {
		t.Fatalf("health: %v", err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	start := time.Now()
	if err := inst.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown (guest must power off on the VMM's shutdown request): %v\nconsole:\n%s", err, consoleTail(inst))
	}
	t.Logf("shutdown took %v", time.Since(start).Round(time.Millisecond))
	checkNoLeftovers(t, inst.Identity())
}

func testBadKernel(t *testing.T, d vmm.Driver, guest GuestArtifacts) {
	spec := newSpec(t, guest)
	junk := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(junk, []byte(strings.Repeat("not a kernel\n", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	spec.Kernel = junk
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	inst, err := d.Boot(ctx, spec)
	if err == nil {
		_ = inst.Kill(syscall.SIGKILL)
		t.Fatal("boot of a junk kernel succeeded")
	}
	t.Logf("junk kernel: %v", err)
	if len(err.Error()) < 20 {
		t.Errorf("unhelpful error %q", err)
	}
	checkNoVMMProcess(t, spec.RunDir)
	checkNoSockets(t, spec.RunDir)

	spec.Kernel = filepath.Join(t.TempDir(), "missing")
	if _, err := d.Boot(ctx, spec); errkind.Of(err) != errkind.NotFound {
		t.Errorf("missing kernel: %v, want not found", err)
	}
	spec.Kernel = guest.Kernel
	spec.MemoryMiB = 1 << 30 // 1 TiB
	if _, err := d.Boot(ctx, spec); errkind.Of(err) != errkind.InvalidArgument {
		t.Errorf("memory larger than the host: %v, want invalid argument", err)
	}
	checkNoVMMProcess(t, spec.RunDir)
}

// processAlive reports whether id's process still runs (same start time,
// not a zombie).
func processAlive(id vmm.Identity) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(id.PID) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	return len(f) > 19 && f[0] != "Z" && f[0] != "X" && f[19] == strconv.FormatUint(id.StartTime, 10)
}

func checkNoLeftovers(t *testing.T, id vmm.Identity) {
	t.Helper()
	if processAlive(id) {
		t.Errorf("vmm process %d still running", id.PID)
	}
	for _, p := range []string{id.ControlSocket, id.AgentSocket, id.PIDFile} {
		if p == "" {
			continue
		}
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind after exit", p)
		}
	}
	checkNoVMMProcess(t, id.RunDir)
	checkNoSockets(t, id.RunDir)
}

// checkNoVMMProcess fails if any process mentions runDir on its command line.
func checkNoVMMProcess(t *testing.T, runDir string) {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !strings.Contains(string(b), runDir) {
			continue
		}
		if processAlive(vmm.Identity{PID: pid, StartTime: startTime(pid)}) {
			t.Errorf("process %d still uses %s: %s", pid, runDir, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}

func startTime(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return 0
	}
	n, _ := strconv.ParseUint(f[19], 10, 64)
	return n
}

// checkNoSockets fails if runDir holds sockets or pid files.
func checkNoSockets(t *testing.T, runDir string) {
	t.Helper()
	ents, err := os.ReadDir(runDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.Type()&os.ModeSocket != 0 || strings.HasSuffix(e.Name(), ".pid") {
			t.Errorf("%s left in %s", e.Name(), runDir)
		}
	}
}

// testUserNet boots with the rootless user-mode NIC (drivers that support
// it) and fetches a page from a host loopback server through the gateway.
func testUserNet(t *testing.T, factory func(t *testing.T) vmm.Driver, guest GuestArtifacts) {
	d := factory(t)
	caps, err := d.Capabilities(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !caps.UserNet {
		t.Skipf("%s has no user-mode networking", d.Name())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from the host\n")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	spec := newSpec(t, guest)
	spec.Net = &vmm.Net{Mode: vmm.NetUser, MAC: "52:54:00:12:34:56"}
	spec.Cmdline += " banger.ip=" + vmm.UserNetGuestCIDR + " banger.gw=" + vmm.UserNetGateway + " banger.dns=" + vmm.UserNetDNS
	inst := boot(t, d, spec)
	a := connect(t, inst, guest)
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	// busybox nc rather than wget: Debian's static busybox wget crashes
	// in glibc's static resolver.
	req := `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 10 ` + vmm.UserNetGateway + " " + strconv.Itoa(port)
	out, code, err := a.Run(ctx, "sh", "-c", req)
	if err != nil || code != 0 || !strings.HasSuffix(out, "\r\n\r\nhello from the host\n") {
		t.Errorf("HTTP GET to the host from the guest = %q, %d, %v\nconsole:\n%s", out, code, err, consoleTail(inst))
	}
}
