package qemu

import (
	"slices"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/vmm"
)

var testFiles = layout{
	QMPSocket:   "/run/vm/qmp.sock",
	AgentSocket: "/run/vm/agent.sock",
	ConsoleLog:  "/run/vm/console.log",
	PIDFile:     "/run/vm/qemu.pid",
}

func baseSpec() vmm.Spec {
	return vmm.Spec{
		ID: "abc", Name: "web", RunDir: "/run/vm", Kernel: "/k/vmlinux", Initrd: "/k/initrd.img",
		CPUs: 2, MemoryMiB: 512,
		Disks: []vmm.Disk{{Path: "/img/rootfs.ext4", ReadOnly: true}, {Path: "/vm/overlay.ext4"}, {Path: "/vm/work.ext4"}},
	}
}

func TestBuildArgs(t *testing.T) {
	common := strings.Join([]string{
		"-m 512 -smp 2 -nodefaults -no-user-config -nographic -no-reboot",
		"-chardev file,id=console,path=/run/vm/console.log -serial chardev:console",
		"-chardev socket,id=qmp,path=/run/vm/qmp.sock,server=on,wait=off -mon chardev=qmp,mode=control",
		"-pidfile /run/vm/qemu.pid -kernel /k/vmlinux -initrd /k/initrd.img -append CMDLINE",
		"-drive id=vda,file=/img/rootfs.ext4,format=raw,if=none,readonly=on -device virtio-blk-device,drive=vda",
		"-drive id=vdb,file=/vm/overlay.ext4,format=raw,if=none,discard=unmap,detect-zeroes=unmap -device virtio-blk-device,drive=vdb",
		"-drive id=vdc,file=/vm/work.ext4,format=raw,if=none,discard=unmap,detect-zeroes=unmap -device virtio-blk-device,drive=vdc",
		"-device virtio-serial-device",
		"-chardev socket,id=agent,path=/run/vm/agent.sock,server=on,wait=off",
		"-device virtserialport,chardev=agent,name=org.banger.agent",
	}, " ")
	tests := []struct {
		name  string
		accel vmm.Accel
		pvm   bool
		mod   func(*vmm.Spec)
		want  string
	}{
		{
			name: "tcg", accel: vmm.AccelTCG,
			want: "-name banger-web -M microvm,acpi=on,pit=on,pic=on,rtc=on -accel tcg -cpu max " + common,
		},
		{
			name: "kvm", accel: vmm.AccelKVM,
			want: "-name banger-web -M microvm,acpi=on -enable-kvm -cpu host " + common,
		},
		{
			name: "kvm forced on pvm", accel: vmm.AccelKVM, pvm: true,
			want: "-name banger-web -M microvm,acpi=on -enable-kvm -cpu host,-arch-capabilities " + common,
		},
		{
			name: "tap", accel: vmm.AccelKVM,
			mod: func(s *vmm.Spec) { s.Net = &vmm.Net{Mode: vmm.NetTap, TapName: "bgtap3", MAC: "52:54:00:00:00:03"} },
			want: "-name banger-web -M microvm,acpi=on -enable-kvm -cpu host " + common +
				" -netdev tap,id=net0,ifname=bgtap3,script=no,downscript=no -device virtio-net-device,netdev=net0,mac=52:54:00:00:00:03",
		},
		{
			name: "user net", accel: vmm.AccelTCG,
			mod: func(s *vmm.Spec) { s.Net = &vmm.Net{Mode: vmm.NetUser} },
			want: "-name banger-web -M microvm,acpi=on,pit=on,pic=on,rtc=on -accel tcg -cpu max " + common +
				" -netdev user,id=net0 -device virtio-net-device,netdev=net0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := baseSpec()
			if tt.mod != nil {
				tt.mod(&s)
			}
			got := buildArgs(argsConfig{Spec: s, Accel: tt.accel, PVM: tt.pvm, Cmdline: "CMDLINE", Files: testFiles})
			if strings.Join(got, " ") != tt.want {
				t.Errorf("args:\n got %s\nwant %s", strings.Join(got, " "), tt.want)
			}
		})
	}
}

func TestBuildArgsEscaping(t *testing.T) {
	s := baseSpec()
	s.Name = "a,b"
	s.Initrd = ""
	s.Disks = []vmm.Disk{{Path: "/img/with,comma.ext4", ReadOnly: true}}
	f := testFiles
	f.AgentSocket = "/run/x,y/agent.sock"
	got := buildArgs(argsConfig{Spec: s, Accel: vmm.AccelTCG, Cmdline: "a=1,2 b", Files: f})
	for _, want := range []string{
		"banger-a,,b",
		"id=vda,file=/img/with,,comma.ext4,format=raw,if=none,readonly=on",
		"socket,id=agent,path=/run/x,,y/agent.sock,server=on,wait=off",
		"a=1,2 b", // -append is not an option string
	} {
		if !slices.Contains(got, want) {
			t.Errorf("missing %q in %q", want, got)
		}
	}
	if slices.Contains(got, "-initrd") {
		t.Error("-initrd without an initrd")
	}
}

func TestKernelParams(t *testing.T) {
	if got := strings.Join(kernelParams(vmm.AccelTCG, 2596142), " "); got !=
		"banger.chan=serial:org.banger.agent banger.exit=poweroff tsc_early_khz=2596142" {
		t.Errorf("tcg: %q", got)
	}
	if got := strings.Join(kernelParams(vmm.AccelKVM, 2596142), " "); got !=
		"banger.chan=serial:org.banger.agent banger.exit=poweroff" {
		t.Errorf("kvm: %q", got)
	}
}

func TestParseVersion(t *testing.T) {
	out := "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022\n"
	if v := parseVersion(out); v != "7.2.22" {
		t.Errorf("parseVersion = %q", v)
	}
}
