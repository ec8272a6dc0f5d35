package doctor

import "strings"

// KVMKind says what /dev/kvm is backed by.
type KVMKind string

// KVM kinds.
const (
	// KVMNone: no /dev/kvm. QEMU must use TCG; Firecracker cannot run.
	KVMNone KVMKind = "none"
	// KVMHardware: KVM on VT-x/AMD-V (or the native KVM of a non-x86 host).
	KVMHardware KVMKind = "hardware"
	// KVMPVM: /dev/kvm is PVM (paravirtualized KVM, no VT-x/AMD-V). Only
	// PVM-enabled guest kernels boot; stock kernels do not, so QEMU must
	// fall back to TCG and Firecracker cannot run.
	KVMPVM KVMKind = "pvm"
)

// KVMInfo describes the host's KVM.
type KVMInfo struct {
	Kind KVMKind `json:"kind"`
	// Device reports whether /dev/kvm exists.
	Device bool `json:"device"`
	// CPUFlag is "vmx" or "svm" when /proc/cpuinfo advertises hardware
	// virtualization, else empty.
	CPUFlag string `json:"cpu_flag,omitempty"`
	// Module is the loaded KVM vendor module: kvm_pvm, kvm_intel or kvm_amd.
	Module string `json:"module,omitempty"`
}

// UsableForStockKernels reports whether QEMU can use KVM (rather than TCG)
// and Firecracker can run for ordinary distro kernels.
func (k KVMInfo) UsableForStockKernels() bool { return k.Kind == KVMHardware }

// DetectKVM classifies the host's KVM. PVM is recognised by the kvm_pvm
// module in /sys/module, or, on x86, by /dev/kvm existing while the CPU
// advertises neither vmx nor svm. Nil probe fields use the real host.
func DetectKVM(p Probes) KVMInfo {
	p = p.withDefaults()
	var info KVMInfo
	info.Device = p.Exists("/dev/kvm")
	if cpuinfo, err := p.ReadFile("/proc/cpuinfo"); err == nil {
		info.CPUFlag = cpuVirtFlag(string(cpuinfo))
	}
	for _, mod := range []string{"kvm_pvm", "kvm_intel", "kvm_amd"} {
		if p.Exists("/sys/module/" + mod) {
			info.Module = mod
			break
		}
	}
	machine, _ := p.Machine()
	switch {
	case !info.Device:
		info.Kind = KVMNone
	case info.Module == "kvm_pvm":
		info.Kind = KVMPVM
	case isX86(machine) && info.CPUFlag == "":
		info.Kind = KVMPVM
	default:
		info.Kind = KVMHardware
	}
	return info
}

// cpuVirtFlag returns "vmx" or "svm" when the first x86 "flags" line of
// /proc/cpuinfo lists it, else "".
func cpuVirtFlag(cpuinfo string) string {
	for line := range strings.Lines(cpuinfo) {
		key, value, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, f := range strings.Fields(value) {
			if f == "vmx" || f == "svm" {
				return f
			}
		}
		return ""
	}
	return ""
}

func isX86(machine string) bool {
	switch machine {
	case "x86_64", "amd64", "i386", "i486", "i586", "i686":
		return true
	}
	return false
}

// kvmModuleFor names the vendor module for a CPU flag.
func kvmModuleFor(flag string) string {
	if flag == "svm" {
		return "kvm_amd"
	}
	return "kvm_intel"
}
