package qemu_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/qemu"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// hangingSpec boots the real kernel with no initrd and no disks: it panics
// (no root fs) and then sits there, which is all these tests need of a guest.
func hangingSpec(t *testing.T, runDir string) vmm.Spec {
	k := vmmtest.DebianKernel(t)
	return vmm.Spec{ID: "hang", Name: "hang", RunDir: runDir, Kernel: k.Vmlinux, CPUs: 1, MemoryMiB: 128}
}

func bootT(t *testing.T, d *qemu.Driver, spec vmm.Spec) vmm.Instance {
	t.Helper()
	inst, err := d.Boot(ctxT(t, 30*time.Second), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = inst.Kill(syscall.SIGKILL)
		_, _ = inst.Wait(ctxT(t, 30*time.Second))
	})
	return inst
}

func TestBootKillAdopt(t *testing.T) {
	needQEMU(t)
	run := filepath.Join(t.TempDir(), "run")
	spec := hangingSpec(t, run)
	d := qemu.New(qemu.Options{})
	start := time.Now()
	inst := bootT(t, d, spec)
	t.Logf("boot returned in %v", time.Since(start))
	id := inst.Identity()

	// Detached: own session, stdin /dev/null, pidfile and sockets present.
	if sid, _ := unix.Getsid(id.PID); sid != id.PID {
		t.Errorf("qemu session %d, want its own (%d)", sid, id.PID)
	}
	if b, err := os.ReadFile(id.PIDFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(id.PID) {
		t.Errorf("pidfile %q, %v; want %d", b, err, id.PID)
	}
	for _, s := range []string{id.ControlSocket, id.AgentSocket} {
		if fi, err := os.Stat(s); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("socket %s: %v", s, err)
		}
	}
	q, err := qemu.DialQMP(ctxT(t, 5*time.Second), id.ControlSocket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := q.QueryStatus(ctxT(t, 5*time.Second))
	q.Close()
	if err != nil || !st.Running {
		t.Errorf("query-status = %+v, %v", st, err)
	}

	// Booting the same run dir again is a conflict.
	if _, err := d.Boot(ctxT(t, 30*time.Second), spec); errkind.Of(err) != errkind.Conflict {
		t.Errorf("second boot in the same run dir: %v, want conflict", err)
	}

	// Adoption checks identity.
	d2 := qemu.New(qemu.Options{})
	wrong := id
	wrong.ControlSocket = filepath.Join(t.TempDir(), "other.sock")
	if _, err := d2.Adopt(ctxT(t, 5*time.Second), spec, wrong); errkind.Of(err) != errkind.NotFound {
		t.Errorf("adopt with another qmp path: %v, want not found", err)
	}
	wrong = id
	wrong.VMM = "firecracker"
	if _, err := d2.Adopt(ctxT(t, 5*time.Second), spec, wrong); errkind.Of(err) != errkind.InvalidArgument {
		t.Errorf("adopt a firecracker identity: %v, want invalid argument", err)
	}
	adopted, err := d2.Adopt(ctxT(t, 5*time.Second), spec, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := adopted.Kill(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ast, err := adopted.Wait(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ost, err := inst.Wait(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// QEMU exits 0 on SIGTERM ("terminating on signal 15").
	if ast.Known || !ost.Known {
		t.Errorf("adopted status %v (want unknown), original %v (want known)", ast, ost)
	}
	if b, _ := os.ReadFile(filepath.Join(run, "qemu.log")); !strings.Contains(string(b), "signal 15") {
		t.Errorf("qemu.log does not record the SIGTERM: %q", b)
	}
	for _, p := range []string{id.ControlSocket, id.AgentSocket, id.PIDFile} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
	if _, err := os.Stat(id.ConsoleLog); err != nil {
		t.Errorf("console log removed: %v", err)
	}
}

func TestQuit(t *testing.T) {
	needQEMU(t)
	inst := bootT(t, qemu.New(qemu.Options{}), hangingSpec(t, t.TempDir()))
	q, ok := inst.(interface{ Quit(context.Context) error })
	if !ok {
		t.Fatal("qemu instance has no Quit")
	}
	if err := q.Quit(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	st, err := inst.Wait(ctxT(t, time.Second))
	if err != nil || !st.Success() {
		t.Errorf("after quit: %v, %v", st, err)
	}
}

// TestLongRunDir checks that sockets of a run dir too deep for sun_path go
// through a short symlink, which is removed after exit.
func TestLongRunDir(t *testing.T) {
	needQEMU(t)
	run := filepath.Join(t.TempDir(), strings.Repeat("r", 60), strings.Repeat("s", 60))
	links := t.TempDir()
	d := qemu.New(qemu.Options{SocketLinkDir: links})
	inst := bootT(t, d, hangingSpec(t, run))
	id := inst.Identity()
	if len(id.AgentSocket) > 107 || !strings.HasPrefix(id.AgentSocket, links) {
		t.Errorf("agent socket %q not shortened under %s", id.AgentSocket, links)
	}
	if _, err := os.Stat(filepath.Join(run, "agent.sock")); err != nil {
		t.Errorf("socket not in the run dir: %v", err)
	}
	if err := inst.Kill(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := inst.Wait(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(links); len(ents) != 0 {
		t.Errorf("short links left: %v", ents)
	}
}

func TestBootErrors(t *testing.T) {
	needQEMU(t)
	d := qemu.New(qemu.Options{})
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := vmm.Spec{ID: "x", RunDir: filepath.Join(dir, "run"), Kernel: junk, CPUs: 1, MemoryMiB: 128}
	_, err := d.Boot(ctxT(t, 30*time.Second), spec)
	if err == nil || !strings.Contains(err.Error(), "qemu exited during start") {
		t.Fatalf("junk kernel: %v", err)
	}
	t.Logf("junk kernel: %v", err)
	ents, _ := os.ReadDir(spec.RunDir)
	for _, e := range ents {
		if e.Name() != "qemu.log" && e.Name() != "console.log" {
			t.Errorf("%s left in run dir", e.Name())
		}
	}
	if _, err := qemu.New(qemu.Options{Binary: "/nonexistent/qemu"}).Boot(ctxT(t, 5*time.Second), spec); errkind.Of(err) != errkind.Unavailable {
		t.Errorf("missing binary: %v, want unavailable", err)
	}
	spec.Accel = "hvf"
	if _, err := d.Boot(ctxT(t, 5*time.Second), spec); errkind.Of(err) != errkind.InvalidArgument {
		t.Errorf("bad accel: %v, want invalid argument", err)
	}
	spec.Accel = ""
	spec.Cmdline = "banger.chan=vsock:1024"
	if _, err := d.Boot(ctxT(t, 5*time.Second), spec); errkind.Of(err) != errkind.InvalidArgument {
		t.Errorf("driver-owned cmdline key: %v, want invalid argument", err)
	}
}

func TestCapabilities(t *testing.T) {
	needQEMU(t)
	caps, err := qemu.New(qemu.Options{}).Capabilities(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", caps)
	kvm := vmm.DetectKVM()
	if caps.Emulated == kvm.Accelerated() || caps.Version == "" || !caps.UserNet {
		t.Errorf("caps %+v with host %+v", caps, kvm)
	}
}

// TestUserNet checks QEMU accepts the rootless user-mode NIC.
func TestUserNet(t *testing.T) {
	needQEMU(t)
	spec := hangingSpec(t, t.TempDir())
	spec.Net = &vmm.Net{Mode: vmm.NetUser, MAC: "52:54:00:12:34:99"}
	inst := bootT(t, qemu.New(qemu.Options{}), spec)
	args, err := os.ReadFile("/proc/" + strconv.Itoa(inst.Identity().PID) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(args), "user,id=net0") || !strings.Contains(string(args), "mac=52:54:00:12:34:99") {
		t.Errorf("no user-mode NIC in %q", args)
	}
}
