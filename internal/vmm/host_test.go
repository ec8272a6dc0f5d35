package vmm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/errkind"
)

func fixtureHost(t *testing.T, cpuinfo string, pvm bool, meminfo string) HostPaths {
	t.Helper()
	dir := t.TempDir()
	p := HostPaths{
		KVMDevice: filepath.Join(dir, "kvm"), // never a char device here
		PVMModule: filepath.Join(dir, "kvm_pvm"),
		CPUInfo:   filepath.Join(dir, "cpuinfo"),
		MemInfo:   filepath.Join(dir, "meminfo"),
	}
	if pvm {
		if err := os.Mkdir(p.PVMModule, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(p.CPUInfo, []byte(cpuinfo), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.MemInfo, []byte(meminfo), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const cpuVMX = "processor\t: 0\ncpu MHz\t\t: 2596.142\nflags\t\t: fpu vme vmx sse2\n\nprocessor\t: 1\nflags\t\t: fpu\n"
const cpuPlain = "processor\t: 0\ncpu MHz\t\t: 3000.000\nflags\t\t: fpu vme sse2 hypervisor\n"
const memInfo = "MemTotal:       24684544 kB\nMemFree:        1 kB\n"

func TestDetectKVMAt(t *testing.T) {
	tests := []struct {
		name    string
		cpuinfo string
		pvm     bool
		hw      string
		reason  string
	}{
		{"vmx no device", cpuVMX, false, "vmx", "no /dev/kvm"},
		{"pvm", cpuPlain, true, "", "PVM host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := DetectKVMAt(fixtureHost(t, tt.cpuinfo, tt.pvm, memInfo))
			if s.HardwareVirt != tt.hw || s.PVM != tt.pvm || s.Device || s.Usable || s.Accelerated() {
				t.Errorf("status %+v", s)
			}
			if !strings.Contains(s.Reason(), tt.reason) {
				t.Errorf("reason %q does not mention %q", s.Reason(), tt.reason)
			}
		})
	}
	// A present but non-character-device node is reported as unusable.
	p := fixtureHost(t, cpuVMX, false, memInfo)
	if err := os.WriteFile(p.KVMDevice, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s := DetectKVMAt(p)
	if !s.Device || s.Usable || !strings.Contains(s.Reason(), "not a character device") {
		t.Errorf("fake device: %+v %q", s, s.Reason())
	}
}

func TestDetectKVMReal(t *testing.T) {
	s := DetectKVM()
	t.Logf("host: %+v: %s", s, s.Reason())
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil && (!s.PVM || s.Accelerated()) {
		t.Errorf("PVM host not detected: %+v", s)
	}
}

func TestResolveAccel(t *testing.T) {
	hw := KVMStatus{Device: true, Usable: true, HardwareVirt: "svm"}
	pvm := KVMStatus{Device: true, Usable: true, PVM: true}
	none := KVMStatus{Problem: "no such file"}
	tests := []struct {
		pref Accel
		s    KVMStatus
		want Accel
		kind *errkind.Kind
	}{
		{AccelAuto, hw, AccelKVM, nil},
		{AccelAuto, pvm, AccelTCG, nil},
		{AccelAuto, none, AccelTCG, nil},
		{AccelTCG, hw, AccelTCG, nil},
		{AccelKVM, pvm, AccelKVM, nil},
		{AccelKVM, none, "", errkind.Unavailable},
		{"hvf", hw, "", errkind.InvalidArgument},
	}
	for _, tt := range tests {
		got, err := ResolveAccel(tt.pref, tt.s)
		if got != tt.want || errkind.Of(err) != tt.kind {
			t.Errorf("ResolveAccel(%q, %+v) = %q, %v; want %q, %v", tt.pref, tt.s, got, err, tt.want, tt.kind)
		}
	}
}

func TestCheckMemory(t *testing.T) {
	p := fixtureHost(t, cpuVMX, false, memInfo)
	if n, err := HostMemoryMiB(p); err != nil || n != 24106 {
		t.Fatalf("HostMemoryMiB = %d, %v", n, err)
	}
	if err := CheckMemory(p, 1024); err != nil {
		t.Errorf("1 GiB: %v", err)
	}
	for _, mib := range []int{0, -1, 24107, 1 << 30} {
		if err := CheckMemory(p, mib); !errors.Is(err, errkind.InvalidArgument) {
			t.Errorf("CheckMemory(%d) = %v, want invalid argument", mib, err)
		}
	}
	if err := CheckMemory(DefaultHostPaths(), 64); err != nil {
		t.Errorf("real host, 64 MiB: %v", err)
	}
}

func TestHostTSCKHz(t *testing.T) {
	p := fixtureHost(t, cpuVMX, false, memInfo)
	if k, err := HostTSCKHz(p); err != nil || k != 2596142 {
		t.Errorf("HostTSCKHz = %d, %v", k, err)
	}
	bad := fixtureHost(t, "flags: fpu\n", false, memInfo)
	if _, err := HostTSCKHz(bad); err == nil {
		t.Error("no cpu MHz: no error")
	}
	if k, err := HostTSCKHz(DefaultHostPaths()); err != nil || k < 100000 {
		t.Errorf("real host: %d, %v", k, err)
	}
}
