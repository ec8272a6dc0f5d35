package vmm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/errkind"
)

// HostPaths are the files host probes read. DefaultHostPaths is the real
// host; tests point them at fixtures.
type HostPaths struct {
	KVMDevice string // /dev/kvm
	PVMModule string // /sys/module/kvm_pvm
	CPUInfo   string // /proc/cpuinfo
	MemInfo   string // /proc/meminfo
}

// DefaultHostPaths returns the paths of the running host.
func DefaultHostPaths() HostPaths {
	return HostPaths{
		KVMDevice: "/dev/kvm",
		PVMModule: "/sys/module/kvm_pvm",
		CPUInfo:   "/proc/cpuinfo",
		MemInfo:   "/proc/meminfo",
	}
}

// KVMStatus is what the host offers for hardware-accelerated VMs.
type KVMStatus struct {
	// Device is true when the KVM device node exists.
	Device bool `json:"device"`
	// Usable is true when it opens read-write and answers KVM_GET_API_VERSION.
	Usable bool `json:"usable"`
	// PVM is true when /dev/kvm is provided by kvm_pvm: stock guest kernels
	// cannot boot under it.
	PVM bool `json:"pvm"`
	// HardwareVirt is "vmx", "svm" or "" (from the CPU flags).
	HardwareVirt string `json:"hardware_virt"`
	// Problem says why the device is not usable ("" when Usable).
	Problem string `json:"problem,omitempty"`
}

// Accelerated reports whether stock kernels can run under KVM here.
func (s KVMStatus) Accelerated() bool {
	return s.Usable && !s.PVM && s.HardwareVirt != ""
}

// Reason explains the status in one line, suitable for `doctor` and
// Capabilities.Reason.
func (s KVMStatus) Reason() string {
	switch {
	case s.Accelerated():
		return fmt.Sprintf("/dev/kvm usable (%s): hardware acceleration", s.HardwareVirt)
	case s.PVM:
		return "PVM host: /sys/module/kvm_pvm present, stock kernels cannot run under it; using TCG (slow)"
	case !s.Device:
		return "no /dev/kvm; using TCG (slow)"
	case !s.Usable:
		return fmt.Sprintf("/dev/kvm not usable (%s); using TCG (slow)", s.Problem)
	default:
		return "/dev/kvm present but the CPU has no vmx/svm flag; using TCG (slow)"
	}
}

// DetectKVM probes the running host.
func DetectKVM() KVMStatus { return DetectKVMAt(DefaultHostPaths()) }

// DetectKVMAt probes the host through the given paths.
func DetectKVMAt(p HostPaths) KVMStatus {
	var s KVMStatus
	if _, err := os.Stat(p.PVMModule); err == nil {
		s.PVM = true
	}
	if flags, err := cpuFlags(p.CPUInfo); err == nil {
		switch {
		case flags["vmx"]:
			s.HardwareVirt = "vmx"
		case flags["svm"]:
			s.HardwareVirt = "svm"
		}
	}
	fi, err := os.Stat(p.KVMDevice)
	if err != nil {
		s.Problem = err.Error()
		return s
	}
	s.Device = true
	if fi.Mode()&os.ModeCharDevice == 0 {
		s.Problem = p.KVMDevice + " is not a character device"
		return s
	}
	f, err := os.OpenFile(p.KVMDevice, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		s.Problem = err.Error()
		return s
	}
	defer f.Close()
	const kvmGetAPIVersion = 0xAE00 // _IO(KVMIO, 0x00)
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil {
		s.Problem = "KVM_GET_API_VERSION: " + err.Error()
		return s
	}
	if v != 12 {
		s.Problem = fmt.Sprintf("unexpected KVM API version %d", v)
		return s
	}
	s.Usable = true
	return s
}

func cpuFlags(path string) (map[string]bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	flags := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "flags" {
			continue
		}
		for _, f := range strings.Fields(v) {
			flags[f] = true
		}
		break // the first CPU is enough
	}
	return flags, sc.Err()
}

// ResolveAccel picks the acceleration for a preference on a host. Forcing
// KVM on a host without a usable /dev/kvm is an Unavailable error; forcing
// it on a PVM host is allowed (the guest kernel may be PVM-enabled).
func ResolveAccel(pref Accel, s KVMStatus) (Accel, error) {
	switch pref {
	case AccelAuto:
		if s.Accelerated() {
			return AccelKVM, nil
		}
		return AccelTCG, nil
	case AccelTCG:
		return AccelTCG, nil
	case AccelKVM:
		if !s.Usable {
			return "", errkind.WithHint(
				errkind.New(errkind.Unavailable, "kvm acceleration requested but %s", s.Reason()),
				"use accel auto or tcg on this host")
		}
		return AccelKVM, nil
	default:
		return "", errkind.New(errkind.InvalidArgument, "unknown acceleration %q (want kvm, tcg or empty)", pref)
	}
}

// HostMemoryMiB returns MemTotal from meminfo in MiB.
func HostMemoryMiB(p HostPaths) (int, error) {
	data, err := os.ReadFile(p.MemInfo)
	if err != nil {
		return 0, fmt.Errorf("reading host memory: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing MemTotal %q: %w", rest, err)
		}
		return int(kb / 1024), nil
	}
	return 0, errors.New("reading host memory: no MemTotal in " + p.MemInfo)
}

// CheckMemory rejects a guest memory size that is not positive or larger
// than the host's total memory (InvalidArgument).
func CheckMemory(p HostPaths, mib int) error {
	if mib <= 0 {
		return errkind.New(errkind.InvalidArgument, "memory must be positive, got %d MiB", mib)
	}
	host, err := HostMemoryMiB(p)
	if err != nil {
		return err
	}
	if mib > host {
		return errkind.WithHint(
			errkind.New(errkind.InvalidArgument, "memory %d MiB is larger than the host's %d MiB", mib, host),
			"choose a smaller --memory")
	}
	return nil
}

// HostTSCKHz returns the host TSC frequency in kHz, for the guest's
// tsc_early_khz= under TCG (without it, TSC calibration against the emulated
// PIT sometimes hangs). It prefers the kernel's tsc_freq_khz when exposed and
// falls back to /proc/cpuinfo "cpu MHz".
func HostTSCKHz(p HostPaths) (int, error) {
	if b, err := os.ReadFile("/sys/devices/system/cpu/cpu0/tsc_freq_khz"); err == nil && p == DefaultHostPaths() {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v > 0 {
			return v, nil
		}
	}
	data, err := os.ReadFile(p.CPUInfo)
	if err != nil {
		return 0, fmt.Errorf("reading cpu frequency: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || mhz <= 0 {
			return 0, fmt.Errorf("parsing cpu MHz %q", strings.TrimSpace(v))
		}
		return int(math.Round(mhz * 1000)), nil
	}
	return 0, errors.New("reading cpu frequency: no \"cpu MHz\" in " + p.CPUInfo)
}
