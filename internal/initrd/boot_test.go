package initrd

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/kernel/kerneltest"
)

// hostTSCkHz returns the host CPU frequency in kHz from /proc/cpuinfo (for
// tsc_early_khz= under TCG), or 0.
func hostTSCkHz() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int(mhz * 1000)
			}
		}
	}
	return 0
}

// TestBootDebianCloud boots the Debian cloud kernel under QEMU (TCG, so it
// works on hosts without usable KVM) with a generated initrd whose /init
// loads the modules in modules.load order and reports what appeared.
func TestBootDebianCloud(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	k := kerneltest.DebianCloudKernel(t)
	dir := t.TempDir()

	initBin := filepath.Join(dir, "init")
	build := exec.Command("go", "build", "-o", initBin, "./testdata/testinit")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building test init: %v: %s", err, out)
	}
	img := filepath.Join(dir, "initrd.img")
	res, err := BuildResult(context.Background(), Spec{AgentPath: initBin, ModulesDir: k.ModulesDir}, img)
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}

	cmdline := "console=ttyS0 quiet cryptomgr.notests 8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on audit=0 nowatchdog panic=-1"
	if khz := hostTSCkHz(); khz > 0 {
		cmdline += " tsc_early_khz=" + strconv.Itoa(khz)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu,
		"-M", "microvm,acpi=on,pit=on,pic=on,rtc=on", "-accel", "tcg", "-cpu", "max", "-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
		"-kernel", k.Vmlinux, "-initrd", img, "-append", cmdline,
		"-drive", "id=d,file="+disk+",format=raw,if=none,readonly=on", "-device", "virtio-blk-device,drive=d")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("initrd %d bytes; QEMU TCG boot to poweroff in %v", res.Size, time.Since(start))
	if err != nil {
		t.Fatalf("qemu: %v\n%s", err, out)
	}
	var result string
	for _, line := range strings.Split(string(out), "\n") {
		if i := strings.Index(line, "TESTINIT-"); i >= 0 {
			result = strings.TrimSpace(line[i:])
		}
	}
	want := "TESTINIT-OK loaded=" + strings.Join(res.Plan.Order(), ",") + " vda=yes overlay=yes"
	if result != want {
		t.Fatalf("guest said %q, want %q\nconsole:\n%s", result, want, out)
	}
}
