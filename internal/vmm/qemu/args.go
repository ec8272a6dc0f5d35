// Package qemu is the QEMU microvm driver: virtio-mmio devices found by the
// guest through ACPI, the agent on a virtio-serial port, QMP for control. It
// uses KVM when the host has real hardware virtualisation and TCG (slow,
// flagged in Capabilities) otherwise.
package qemu

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/internal/vmm"
)

// AgentPortName is the virtio-serial port the guest agent opens
// (banger.chan=serial:<name>).
const AgentPortName = "org.banger.agent"

// Files in a VM's run dir.
const (
	qmpSocketName   = "qmp.sock"
	agentSocketName = "agent.sock"
	consoleLogName  = "console.log"
	processLogName  = "qemu.log"
	pidFileName     = "qemu.pid"
)

// layout is where one VM's files are.
type layout struct {
	QMPSocket   string
	AgentSocket string
	ConsoleLog  string
	ProcessLog  string
	PIDFile     string
}

// argsConfig is everything the QEMU command line is built from.
type argsConfig struct {
	Spec    vmm.Spec
	Accel   vmm.Accel // resolved: kvm or tcg
	PVM     bool      // KVM on a PVM host: mask arch-capabilities
	Cmdline string    // full kernel command line
	Files   layout
}

// kernelParams returns the driver's own kernel parameters.
func kernelParams(accel vmm.Accel, tscKHz int) []string {
	p := []string{"banger.chan=serial:" + AgentPortName, "banger.exit=poweroff"}
	if accel == vmm.AccelTCG && tscKHz > 0 {
		p = append(p, "tsc_early_khz="+strconv.Itoa(tscKHz))
	}
	return p
}

// buildArgs returns the QEMU arguments (without argv[0]) for c, following
// notes/boot-lab.md §3.4/§3.5.
func buildArgs(c argsConfig) []string {
	s := c.Spec
	machine := "microvm,acpi=on"
	var accel []string
	switch c.Accel {
	case vmm.AccelKVM:
		cpu := "host"
		if c.PVM {
			cpu = "host,-arch-capabilities"
		}
		accel = []string{"-enable-kvm", "-cpu", cpu}
	default:
		// Without an emulated PIT/PIC/RTC (and tsc_early_khz), TCG guests
		// sometimes hang calibrating the TSC.
		machine += ",pit=on,pic=on,rtc=on"
		accel = []string{"-accel", "tcg", "-cpu", "max"}
	}
	name := s.Name
	if name == "" {
		name = s.ID
	}
	a := []string{
		"-name", "banger-" + optEscape(name),
		"-M", machine,
	}
	a = append(a, accel...)
	a = append(a,
		"-m", strconv.Itoa(s.MemoryMiB),
		"-smp", strconv.Itoa(s.CPUs),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-chardev", "file,id=console,path="+optEscape(c.Files.ConsoleLog),
		"-serial", "chardev:console",
		"-chardev", "socket,id=qmp,path="+optEscape(c.Files.QMPSocket)+",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-pidfile", c.Files.PIDFile,
		"-kernel", s.Kernel,
	)
	if s.Initrd != "" {
		a = append(a, "-initrd", s.Initrd)
	}
	a = append(a, "-append", c.Cmdline)
	for i, d := range s.Disks {
		id := "vd" + string(rune('a'+i))
		opt := fmt.Sprintf("id=%s,file=%s,format=raw,if=none", id, optEscape(d.Path))
		if d.ReadOnly {
			opt += ",readonly=on"
		} else {
			opt += ",discard=unmap,detect-zeroes=unmap"
		}
		a = append(a, "-drive", opt, "-device", "virtio-blk-device,drive="+id)
	}
	a = append(a,
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path="+optEscape(c.Files.AgentSocket)+",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name="+AgentPortName,
	)
	if n := s.Net; n != nil {
		switch n.Mode {
		case vmm.NetTap:
			a = append(a, "-netdev", "tap,id=net0,ifname="+n.TapName+",script=no,downscript=no")
		case vmm.NetUser:
			a = append(a, "-netdev", "user,id=net0")
		}
		dev := "virtio-net-device,netdev=net0"
		if n.MAC != "" {
			dev += ",mac=" + n.MAC
		}
		a = append(a, "-device", dev)
	}
	return a
}

// optEscape escapes a value for QEMU's key=value,... option syntax, where a
// literal comma is written twice.
func optEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }
