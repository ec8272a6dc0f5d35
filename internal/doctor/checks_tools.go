package doctor

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
)

// Minimum versions doctor enforces.
var (
	// minFirecracker: older releases boot with an MP table and no ACPI, so
	// distro kernels find no virtio devices.
	minFirecracker = Version{1, 8, 0}
	// minMke2fsStdin: first e2fsprogs whose `mke2fs -d -` reads a tarball
	// on stdin.
	minMke2fsStdin = Version{1, 47, 1}
)

// FirecrackerEnv names the environment variable that locates Firecracker
// when the configuration does not.
const FirecrackerEnv = "BANGER_FIRECRACKER_BIN"

const qemuBinary = "qemu-system-x86_64"

func checkQEMU(ctx context.Context, e *env) Check {
	path, err := e.probes.LookPath(qemuBinary)
	if err != nil {
		return Check{Status: Fail, Detail: qemuBinary + " not found", Hint: "apt-get install qemu-system-x86"}
	}
	out, err := e.probes.Run(ctx, path, "--version")
	if err != nil {
		return Check{Status: Fail, Detail: fmt.Sprintf("%s --version: %v", path, err)}
	}
	v, err := ParseQEMUVersion(out)
	if err != nil {
		return Check{Status: Fail, Detail: fmt.Sprintf("%s: %v", path, err)}
	}
	// banger boots with -M microvm,acpi=on: ACPI is what exposes the
	// virtio-mmio devices to distro kernels.
	props, err := e.probes.Run(ctx, path, "-M", "microvm,help")
	if err != nil || !strings.Contains(props, "acpi=") {
		return Check{Status: Fail,
			Detail: fmt.Sprintf("QEMU %s at %s: its microvm machine has no acpi option, which banger needs", v, path),
			Hint:   "install a newer qemu-system-x86"}
	}
	accel := "KVM"
	switch e.kvm.Kind {
	case KVMPVM:
		accel = "TCG (emulated, slow: /dev/kvm is PVM)"
	case KVMNone:
		accel = "TCG (emulated, slow: no KVM)"
	}
	return Check{Status: Pass, Detail: fmt.Sprintf("QEMU %s at %s; accelerator %s", v, path, accel)}
}

// resolveFirecracker finds the Firecracker binary: the configured path, then
// $BANGER_FIRECRACKER_BIN, then PATH. source says where it came from; an
// empty path means none was found (err says why when one was configured).
func resolveFirecracker(e *env) (path, source string, err error) {
	bin, source := e.opts.FirecrackerBin, "config"
	if bin == "" {
		bin, source = e.probes.Getenv(FirecrackerEnv), "$"+FirecrackerEnv
	}
	if bin == "" {
		p, lerr := e.probes.LookPath("firecracker")
		if lerr != nil {
			return "", "PATH", nil
		}
		return p, "PATH", nil
	}
	if !strings.ContainsRune(bin, '/') {
		p, lerr := e.probes.LookPath(bin)
		if lerr != nil {
			return "", source, fmt.Errorf("firecracker %q (from %s) not found on PATH", bin, source)
		}
		return p, source, nil
	}
	if !e.probes.Exists(bin) {
		return "", source, fmt.Errorf("firecracker %s (from %s) does not exist", bin, source)
	}
	return bin, source, nil
}

func checkFirecracker(ctx context.Context, e *env) Check {
	problem := Warn
	optional := " (optional: QEMU is used)"
	if e.opts.FirecrackerRequired {
		problem = Fail
		optional = " (the configuration selects Firecracker)"
	}
	path, source, err := resolveFirecracker(e)
	if err != nil {
		return Check{Status: problem, Detail: err.Error(),
			Hint: "fix the firecracker path in the configuration or in $" + FirecrackerEnv}
	}
	if path == "" {
		return Check{Status: problem, Detail: "firecracker not found" + optional,
			Hint: "install Firecracker v1.8 or newer and set its path in the configuration or $" + FirecrackerEnv}
	}
	notFC := fmt.Sprintf("check that %s (from %s) is a Firecracker binary", path, source)
	out, err := e.probes.Run(ctx, path, "--version")
	if err != nil {
		return Check{Status: problem, Detail: fmt.Sprintf("%s --version: %v", path, err), Hint: notFC}
	}
	v, err := ParseFirecrackerVersion(out)
	if err != nil {
		return Check{Status: problem, Detail: fmt.Sprintf("%s: %v", path, err), Hint: notFC}
	}
	found := fmt.Sprintf("Firecracker v%s at %s (from %s)", v, path, source)
	if v.Less(minFirecracker) {
		return Check{Status: problem,
			Detail: found + ": Firecracker < 1.8 has no ACPI; distro kernels find no disks",
			Hint:   "install Firecracker v1.8 or newer"}
	}
	switch e.kvm.Kind {
	case KVMPVM:
		return Check{Status: problem,
			Detail: found + ", but it cannot run here: /dev/kvm is PVM and stock kernels do not boot under it",
			Hint:   "use QEMU on this host, or Firecracker on a host with hardware virtualization"}
	case KVMNone:
		return Check{Status: problem,
			Detail: found + ", but it cannot run here: no /dev/kvm",
			Hint:   enableKVMHint(e.kvm.CPUFlag)}
	}
	return Check{Status: Pass, Detail: found}
}

func checkMke2fs(ctx context.Context, e *env) Check {
	path, err := e.probes.LookPath("mke2fs")
	if err != nil {
		return Check{Status: Fail, Detail: "mke2fs not found", Hint: "apt-get install e2fsprogs"}
	}
	out, err := e.probes.Run(ctx, path, "-V")
	if err != nil {
		return Check{Status: Fail, Detail: fmt.Sprintf("%s -V: %v", path, err)}
	}
	v, err := ParseE2fsprogsVersion(out)
	if err != nil {
		return Check{Status: Fail, Detail: fmt.Sprintf("%s: %v", path, err)}
	}
	if v.Less(minMke2fsStdin) {
		return Check{Status: Warn,
			Detail: fmt.Sprintf("mke2fs %s: tarball mode (mke2fs -d -) needs e2fsprogs ≥ 1.47.1", v),
			Hint:   "install e2fsprogs from bookworm-backports: apt-get install -t bookworm-backports e2fsprogs"}
	}
	if !libarchivePresent(e) {
		return Check{Status: Warn,
			Detail: fmt.Sprintf("mke2fs %s, but libarchive.so.13 was not found: mke2fs -d - needs it", v),
			Hint:   "apt-get install libarchive13"}
	}
	return Check{Status: Pass, Detail: fmt.Sprintf("mke2fs %s: mke2fs -d - available", v)}
}

// libarchivePresent looks for the library mke2fs loads for `-d -` in the
// usual library directories.
func libarchivePresent(e *env) bool {
	dirs := []string{"/usr/lib64", "/usr/lib", "/usr/local/lib", "/lib64", "/lib"}
	if e.machine != "" {
		triplet := e.machine + "-linux-gnu"
		dirs = append([]string{"/usr/lib/" + triplet, "/lib/" + triplet}, dirs...)
	}
	for _, dir := range dirs {
		if e.probes.Exists(filepath.Join(dir, "libarchive.so.13")) {
			return true
		}
	}
	return false
}

func checkToolPresent(name, hint string) func(context.Context, *env) Check {
	return func(_ context.Context, e *env) Check {
		path, err := e.probes.LookPath(name)
		if err != nil {
			return Check{Status: Fail, Detail: name + " not found", Hint: hint}
		}
		return Check{Status: Pass, Detail: path}
	}
}

// checkDepmod: depmod indexes the module tree that guests mount at
// /lib/modules; without it VMs still boot, but modprobe finds nothing.
func checkDepmod(_ context.Context, e *env) Check {
	path, err := e.probes.LookPath("depmod")
	if err != nil {
		return Check{Status: Warn, Detail: "depmod not found: guests get no /lib/modules (no modprobe, no Docker in VMs)",
			Hint: "apt-get install kmod"}
	}
	return Check{Status: Pass, Detail: path}
}
