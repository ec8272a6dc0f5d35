package qemu_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/vmdisk"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/qemu"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

// bootTimes is one boot measured from launch.
type bootTimes struct {
	health time.Duration // agent answered a health call
	exit   time.Duration // VMM process exited after the agent's poweroff
}

// BenchmarkBoot compares the driver against its peer, a raw QEMU started by
// hand with the boot-lab command line, on the same kernel, initrd and disks:
// launch → agent health, and launch → exit after an agent poweroff. It
// reports both and their ratios (driver/raw).
func BenchmarkBoot(b *testing.B) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		b.Skip("qemu-system-x86_64 not installed")
	}
	guest := vmmtest.BuildGuest(b)
	tsc, err := vmm.HostTSCKHz(vmm.DefaultHostPaths())
	if err != nil {
		b.Fatal(err)
	}
	accel := vmm.AccelTCG
	if vmm.DetectKVM().Accelerated() {
		accel = vmm.AccelKVM
	}
	d := qemu.New(qemu.Options{})
	var raw, drv bootTimes
	for i := range b.N {
		r := rawBoot(b, guest, accel, tsc)
		v := driverBoot(b, d, guest)
		b.Logf("run %d: raw health %v exit %v; driver health %v exit %v", i,
			r.health.Round(time.Millisecond), r.exit.Round(time.Millisecond),
			v.health.Round(time.Millisecond), v.exit.Round(time.Millisecond))
		raw.health += r.health
		raw.exit += r.exit
		drv.health += v.health
		drv.exit += v.exit
	}
	n := float64(b.N)
	b.ReportMetric(float64(raw.health.Milliseconds())/n, "raw-health-ms")
	b.ReportMetric(float64(drv.health.Milliseconds())/n, "driver-health-ms")
	b.ReportMetric(float64(raw.exit.Milliseconds())/n, "raw-exit-ms")
	b.ReportMetric(float64(drv.exit.Milliseconds())/n, "driver-exit-ms")
	b.ReportMetric(float64(drv.health)/float64(raw.health), "health-ratio")
	b.ReportMetric(float64(drv.exit)/float64(raw.exit), "exit-ratio")
}

func benchDisks(b *testing.B, dir string) (overlay, work string) {
	overlay, work = filepath.Join(dir, "overlay.ext4"), filepath.Join(dir, "work.ext4")
	ctx := context.Background()
	if err := vmdisk.CreateOverlay(ctx, overlay, 1<<30); err != nil {
		b.Fatal(err)
	}
	if err := vmdisk.CreateWork(ctx, work, 1<<30); err != nil {
		b.Fatal(err)
	}
	return overlay, work
}

// healthThenPoweroff connects to the agent over conn, waits for a health
// answer and asks for poweroff; it returns the time of the health answer.
func healthThenPoweroff(b *testing.B, guest vmmtest.GuestArtifacts, conn net.Conn, start time.Time) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	a, err := guest.ConnectAgent(ctx, conn)
	if err != nil {
		b.Fatalf("agent: %v", err)
	}
	defer a.Close()
	if _, err := a.KernelRelease(ctx); err != nil {
		b.Fatalf("health: %v", err)
	}
	health := time.Since(start)
	if err := a.Poweroff(ctx); err != nil {
		b.Fatalf("poweroff: %v", err)
	}
	return health
}

func rawBoot(b *testing.B, guest vmmtest.GuestArtifacts, accel vmm.Accel, tsc int) bootTimes {
	dir := b.TempDir()
	overlay, work := benchDisks(b, dir)
	sock := filepath.Join(dir, "agent.sock")
	machine, acc := "microvm,acpi=on", []string{"-enable-kvm", "-cpu", "host"}
	cmdline := vmm.BaseCmdline + " banger.chan=serial:" + qemu.AgentPortName + " banger.exit=poweroff " + guest.Cmdline
	if accel == vmm.AccelTCG {
		machine += ",pit=on,pic=on,rtc=on"
		acc = []string{"-accel", "tcg", "-cpu", "max"}
		cmdline += " tsc_early_khz=" + strconv.Itoa(tsc)
	}
	args := append([]string{"-M", machine}, acc...)
	args = append(args, "-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-serial", "file:"+filepath.Join(dir, "console.log"),
		"-kernel", guest.Kernel, "-initrd", guest.Initrd, "-append", cmdline,
		"-drive", "id=vda,file="+guest.BaseDisk+",format=raw,if=none,readonly=on", "-device", "virtio-blk-device,drive=vda",
		"-drive", "id=vdb,file="+overlay+",format=raw,if=none", "-device", "virtio-blk-device,drive=vdb",
		"-drive", "id=vdc,file="+work+",format=raw,if=none", "-device", "virtio-blk-device,drive=vdc",
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path="+sock+",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name="+qemu.AgentPortName)
	cmd := exec.Command("qemu-system-x86_64", args...)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() }()
	var conn net.Conn
	for {
		var err error
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		if time.Since(start) > 30*time.Second {
			b.Fatalf("raw qemu: agent socket: %v", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	health := healthThenPoweroff(b, guest, conn, start)
	if err := cmd.Wait(); err != nil {
		b.Fatalf("raw qemu: %v", err)
	}
	return bootTimes{health: health, exit: time.Since(start)}
}

func driverBoot(b *testing.B, d *qemu.Driver, guest vmmtest.GuestArtifacts) bootTimes {
	dir := b.TempDir()
	overlay, work := benchDisks(b, dir)
	spec := vmm.Spec{ID: "bench", RunDir: filepath.Join(dir, "run"), Kernel: guest.Kernel, Initrd: guest.Initrd,
		Cmdline: guest.Cmdline, CPUs: 1, MemoryMiB: 256,
		Disks: []vmm.Disk{{Path: guest.BaseDisk, ReadOnly: true}, {Path: overlay}, {Path: work}}}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	inst, err := d.Boot(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = inst.Kill(syscall.SIGKILL); _, _ = inst.Wait(ctx) }()
	conn, err := inst.DialAgent(ctx)
	if err != nil {
		b.Fatal(err)
	}
	health := healthThenPoweroff(b, guest, conn, start)
	if _, err := inst.Wait(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(spec.RunDir); err != nil {
		b.Fatal(err)
	}
	return bootTimes{health: health, exit: time.Since(start)}
}
