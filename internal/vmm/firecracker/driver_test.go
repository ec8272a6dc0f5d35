package firecracker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/firecracker"
)

func TestParseVersion(t *testing.T) {
	for out, want := range map[string]string{
		"Firecracker v1.14.2\n\n2026-11-23T14:23:47 [anonymous-instance:main] Firecracker exiting successfully. exit_code=0\n": "1.14.2",
		"Firecracker v1.7.0\n": "1.7.0",
		"Firecracker v10.0.1":  "10.0.1",
	} {
		v, err := firecracker.ParseVersion(out)
		if err != nil || v.String() != want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %s", out, v, err, want)
		}
	}
	if _, err := firecracker.ParseVersion("QEMU emulator version 7.2.22\n"); err == nil {
		t.Error("parsed a QEMU version")
	}
	if !(firecracker.Version{1, 7, 9}).Less(firecracker.MinVersion) || (firecracker.Version{1, 8, 0}).Less(firecracker.MinVersion) ||
		(firecracker.Version{2, 0, 0}).Less(firecracker.MinVersion) {
		t.Error("Less is wrong around MinVersion")
	}
}

// script writes an executable shell script.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "firecracker")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadBinaries(t *testing.T) {
	ctx := context.Background()
	nonExec := filepath.Join(t.TempDir(), "firecracker")
	if err := os.WriteFile(nonExec, []byte("#!/bin/sh\necho Firecracker v1.14.2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		bin  string
		want string
	}{
		"missing":        {filepath.Join(t.TempDir(), "nope"), "not found"},
		"not on path":    {"no-such-firecracker-binary", "not found"},
		"not executable": {nonExec, "not executable"},
		"too old":        {script(t, "echo 'Firecracker v1.7.0'"), "too old"},
		"not firecracker": {script(t, "echo 'QEMU emulator version 7.2.22'"),
			"not a Firecracker binary"},
		"fails": {script(t, "echo boom >&2; exit 3"), "--version"},
	} {
		t.Run(name, func(t *testing.T) {
			d := firecracker.New(firecracker.Options{Binary: c.bin})
			_, err := d.Capabilities(ctx)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("capabilities: %v, want an error containing %q", err, c.want)
			}
			if errkind.Of(err) != errkind.Unavailable {
				t.Errorf("kind %v, want unavailable", errkind.Of(err))
			}
			if errkind.Hint(err) == "" {
				t.Errorf("no hint on %v", err)
			}
			if name == "too old" && !strings.Contains(err.Error(), "ACPI") {
				t.Errorf("too-old error does not explain why: %v", err)
			}
		})
	}
	if _, ok := firecracker.Find(filepath.Join(t.TempDir(), "nope"), ""); ok {
		t.Error("Find found a missing binary")
	}
}

// pvmHost returns host paths that look like this project's lab host: a
// /dev/kvm from kvm_pvm and no svm/vmx flag.
func pvmHost(t *testing.T) *vmm.HostPaths {
	dir := t.TempDir()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "kvm_pvm"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "cpuinfo"), []byte("processor\t: 0\nflags\t\t: fpu sse2 avx2\ncpu MHz\t\t: 2596.000\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "meminfo"), []byte("MemTotal:       24000000 kB\n"), 0o644))
	return &vmm.HostPaths{KVMDevice: "/dev/kvm", PVMModule: filepath.Join(dir, "kvm_pvm"),
		CPUInfo: filepath.Join(dir, "cpuinfo"), MemInfo: filepath.Join(dir, "meminfo")}
}

func TestRefusesPVMHost(t *testing.T) {
	bin := script(t, "echo 'Firecracker v1.14.2'")
	d := firecracker.New(firecracker.Options{Binary: bin, Host: pvmHost(t)})
	caps, err := d.Capabilities(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if caps.Version != "1.14.2" || caps.Channel != "vsock" || caps.Accel != vmm.AccelKVM || caps.Emulated || caps.UserNet {
		t.Errorf("capabilities %+v", caps)
	}
	if !strings.HasPrefix(caps.Reason, "cannot run here") || !strings.Contains(caps.Reason, "PVM") {
		t.Errorf("reason %q does not say it cannot run on PVM", caps.Reason)
	}
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := vmm.Spec{ID: "pvm", RunDir: filepath.Join(dir, "run"), Kernel: kernel, CPUs: 1, MemoryMiB: 128}
	_, err = d.Boot(context.Background(), spec)
	if errkind.Of(err) != errkind.Unavailable || !strings.Contains(err.Error(), "PVM") ||
		!strings.Contains(errkind.Hint(err), "qemu") {
		t.Errorf("boot on a PVM host: %v (hint %q)", err, errkind.Hint(err))
	}
	if _, err := os.Stat(spec.RunDir); !errors.Is(err, os.ErrNotExist) {
		t.Error("refused boot created the run dir")
	}
}

func TestRejectsWhatFirecrackerCannotDo(t *testing.T) {
	bin := script(t, "echo 'Firecracker v1.14.2'")
	d := firecracker.New(firecracker.Options{Binary: bin, SkipHostCheck: true})
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := vmm.Spec{ID: "x", RunDir: filepath.Join(dir, "run"), Kernel: kernel, CPUs: 1, MemoryMiB: 128}
	tcg := base
	tcg.Accel = vmm.AccelTCG
	user := base
	user.Net = &vmm.Net{Mode: vmm.NetUser}
	for name, spec := range map[string]vmm.Spec{"tcg": tcg, "user net": user} {
		if _, err := d.Boot(context.Background(), spec); errkind.Of(err) != errkind.InvalidArgument {
			t.Errorf("%s: %v, want invalid argument", name, err)
		}
	}
}

// TestBootConfigAdoptKill runs the real Firecracker (the guest need not
// boot: on a PVM host it dies long after the test) and checks the whole
// configuration through GET /vm/config, adoption and cleanup.
func TestBootConfigAdoptKill(t *testing.T) {
	bin := fcBinary(t)
	needKVMDevice(t)
	spec := processSpec(t, filepath.Join(t.TempDir(), "run"))
	spec.Net = &vmm.Net{Mode: vmm.NetTap, TapName: "bgrtest0", MAC: "06:00:ac:1e:00:02"}
	if err := runCmd("ip", "tuntap", "add", "dev", "bgrtest0", "mode", "tap"); err != nil {
		t.Logf("no tap (%v): testing without a network interface", err)
		spec.Net = nil
	} else {
		t.Cleanup(func() { _ = runCmd("ip", "link", "del", "bgrtest0") })
	}
	d := firecracker.New(firecracker.Options{Binary: bin, SkipHostCheck: true})
	start := time.Now()
	inst := bootT(t, d, spec)
	t.Logf("boot returned in %v", time.Since(start).Round(time.Millisecond))
	id := inst.Identity()
	if id.VMM != "firecracker" || id.PID <= 0 || id.StartTime == 0 || id.Accel != vmm.AccelKVM || id.RunDir != spec.RunDir {
		t.Errorf("identity %+v", id)
	}
	if sid, _ := unix.Getsid(id.PID); sid != id.PID {
		t.Errorf("firecracker session %d, want its own (%d)", sid, id.PID)
	}
	for _, p := range []string{id.ControlSocket, id.AgentSocket, id.PIDFile, id.ConsoleLog} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%v", err)
		}
	}
	ctx := ctxT(t, 20*time.Second)
	api := apiOf(t, inst)
	info, err := api.InstanceInfo(ctx)
	if err != nil || info.State != "Running" || info.ID != "banger-"+spec.ID {
		t.Errorf("instance info %+v, %v", info, err)
	}
	cfg, err := api.VMConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MachineConfig == nil || cfg.MachineConfig.VCPUCount != 1 || cfg.MachineConfig.MemSizeMiB != 128 {
		t.Errorf("machine config %+v", cfg.MachineConfig)
	}
	if bs := cfg.BootSource; bs == nil || bs.KernelImagePath != spec.Kernel ||
		!strings.Contains(bs.BootArgs, " panic=-1 ") || !strings.Contains(bs.BootArgs, "reboot=k i8042.nopnp=0") ||
		!strings.Contains(bs.BootArgs, "banger.chan=vsock:1024") ||
		!strings.Contains(bs.BootArgs, "banger.exit=reboot") || !strings.HasSuffix(bs.BootArgs, "banger.root=/dev/vda") {
		t.Errorf("boot source %+v", bs)
	}
	if len(cfg.Drives) != 3 {
		t.Fatalf("drives %+v", cfg.Drives)
	}
	for i, dr := range cfg.Drives {
		want := spec.Disks[i]
		if dr.DriveID != "vd"+string(rune('a'+i)) || dr.PathOnHost != want.Path || dr.IsReadOnly != want.ReadOnly || dr.IsRootDevice {
			t.Errorf("drive %d: %+v, want %+v", i, dr, want)
		}
		if !want.ReadOnly && dr.CacheType != "Writeback" {
			t.Errorf("writable drive %d cache %q", i, dr.CacheType)
		}
	}
	if cfg.Vsock == nil || cfg.Vsock.GuestCID != 3 || cfg.Vsock.UDSPath != id.AgentSocket {
		t.Errorf("vsock %+v, want %s", cfg.Vsock, id.AgentSocket)
	}
	if spec.Net != nil && (len(cfg.NetworkInterfaces) != 1 || cfg.NetworkInterfaces[0].HostDevName != "bgrtest0" ||
		cfg.NetworkInterfaces[0].GuestMAC != spec.Net.MAC) {
		t.Errorf("network %+v", cfg.NetworkInterfaces)
	}
	if b, err := os.ReadFile(filepath.Join(spec.RunDir, "firecracker.log")); err != nil || !strings.Contains(string(b), "Running Firecracker") {
		t.Errorf("firecracker log: %q, %v", b, err)
	}

	// A second boot over the live VM is refused.
	if _, err := d.Boot(ctx, spec); errkind.Of(err) != errkind.Conflict {
		t.Errorf("second boot of a live run dir: %v, want conflict", err)
	}

	// A fresh driver adopts it from the identity; a wrong start time is
	// not found.
	d2 := firecracker.New(firecracker.Options{Binary: bin, SkipHostCheck: true})
	bad := id
	bad.StartTime++
	if _, err := d2.Adopt(ctx, spec, bad); errkind.Of(err) != errkind.NotFound {
		t.Errorf("adopt with a wrong start time: %v", err)
	}
	if !alive(id) {
		t.Fatal("a failed adoption killed the VM")
	}
	bad = id
	bad.ControlSocket = filepath.Join(t.TempDir(), "other.sock")
	if _, err := d2.Adopt(ctx, spec, bad); err == nil {
		t.Error("adopted with another api socket")
	}
	adopted, err := d2.Adopt(ctx, spec, id)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := apiOf(t, adopted).InstanceInfo(ctx); err != nil || info.State != "Running" {
		t.Errorf("adopted api: %+v, %v", info, err)
	}
	if err := adopted.Kill(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := adopted.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := inst.Wait(ctx)
	if err != nil || !st.Known || st.Signal != syscall.SIGKILL {
		t.Errorf("status %v, %v", st, err)
	}
	noLeftovers(t, id)
	if _, err := d2.Adopt(ctx, spec, id); errkind.Of(err) != errkind.NotFound {
		t.Errorf("adopt after exit: %v", err)
	}
}

// TestJunkKernel checks Firecracker's refusal comes back as a clear error
// and nothing is left running.
func TestJunkKernel(t *testing.T) {
	bin := fcBinary(t)
	needKVMDevice(t)
	spec := processSpec(t, filepath.Join(t.TempDir(), "run"))
	junk := filepath.Join(t.TempDir(), "vmlinuz")
	if err := os.WriteFile(junk, []byte(strings.Repeat("not a kernel\n", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	spec.Kernel = junk
	d := firecracker.New(firecracker.Options{Binary: bin, SkipHostCheck: true})
	_, err := d.Boot(ctxT(t, 30*time.Second), spec)
	if errkind.Of(err) != errkind.InvalidArgument || !strings.Contains(err.Error(), "ELF") || !strings.Contains(errkind.Hint(err), "vmlinux") {
		t.Fatalf("junk kernel: %v (hint %q)", err, errkind.Hint(err))
	}
	t.Logf("junk kernel: %v", err)
	noLeftovers(t, vmm.Identity{RunDir: spec.RunDir})
}

// TestLongRunDir boots with a run dir whose socket paths exceed the unix
// limit: the sockets go through a short symlink, removed after exit.
func TestLongRunDir(t *testing.T) {
	bin := fcBinary(t)
	needKVMDevice(t)
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60), "run")
	spec := processSpec(t, long)
	links := t.TempDir()
	d := firecracker.New(firecracker.Options{Binary: bin, SkipHostCheck: true, SocketLinkDir: links})
	inst := bootT(t, d, spec)
	id := inst.Identity()
	if len(id.ControlSocket) > 107 || !strings.HasPrefix(id.ControlSocket, links) {
		t.Errorf("api socket %s is not under the short link dir", id.ControlSocket)
	}
	if _, err := os.Stat(filepath.Join(long, "fc.sock")); err != nil {
		t.Errorf("socket not in the run dir: %v", err)
	}
	if _, err := apiOf(t, inst).InstanceInfo(ctxT(t, 10*time.Second)); err != nil {
		t.Error(err)
	}
	// A crash (SIGKILL from outside) releases everything.
	if err := syscall.Kill(id.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := inst.Wait(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	noLeftovers(t, id)
	if ents, _ := os.ReadDir(links); len(ents) != 0 {
		t.Errorf("short links left: %v", ents)
	}
}

// TestStartFailures covers a Firecracker that dies while starting and one
// that never opens its API socket: both are errors naming what happened,
// with nothing left running.
func TestStartFailures(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		body, want string
	}{
		"dies":  {`echo "Error: bad seccomp filter" >&2; exit 1`, "exited during start (exit status 1): output: Error: bad seccomp filter"},
		"hangs": {`exec sleep 30`, "waiting for the firecracker api socket"},
	} {
		t.Run(name, func(t *testing.T) {
			bin := script(t, `[ "$1" = --version ] && { echo "Firecracker v1.14.2"; exit 0; }`+"\n"+c.body)
			d := firecracker.New(firecracker.Options{Binary: bin, SkipHostCheck: true, StartTimeout: time.Second})
			spec := vmm.Spec{ID: "sf", RunDir: filepath.Join(t.TempDir(), "run"), Kernel: kernel, CPUs: 1, MemoryMiB: 128}
			_, err := d.Boot(ctxT(t, 20*time.Second), spec)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("boot: %v, want %q", err, c.want)
			}
			noLeftovers(t, vmm.Identity{RunDir: spec.RunDir})
		})
	}
}
