// Package vmm defines the interface every virtual machine monitor driver
// implements (QEMU, Firecracker), the types a VM is booted from and
// persisted as, and host checks shared by the drivers and `doctor`.
//
// A driver boots a VMM process detached from the caller: the process has its
// own session, its stdio goes to files, and it outlives the daemon that
// started it. Its Identity is what the daemon persists so that a later daemon
// can Adopt the running VM.
package vmm

import (
	"context"
	"net"
	"strconv"
	"syscall"
)

// Accel is a hardware acceleration mode.
type Accel string

// Acceleration modes. AccelAuto picks KVM when real KVM works and TCG
// (instruction emulation, slow) otherwise.
const (
	AccelAuto Accel = ""
	AccelKVM  Accel = "kvm"
	AccelTCG  Accel = "tcg"
)

// Driver boots and adopts VMs with one kind of VMM.
type Driver interface {
	// Name is the VMM name stored in Identity.VMM ("qemu", "firecracker").
	Name() string
	// Capabilities reports what Boot would use on this host.
	Capabilities(ctx context.Context) (Capabilities, error)
	// Boot starts a VMM process for spec and returns once the VMM is up
	// (its control socket answers); the guest may still be booting.
	Boot(ctx context.Context, spec Spec) (Instance, error)
	// Adopt attaches to a VMM process started earlier (possibly by another
	// process) after checking that id still names that same process.
	Adopt(ctx context.Context, spec Spec, id Identity) (Instance, error)
}

// Instance is a running (or exited) VMM process.
type Instance interface {
	// Identity is what to persist to Adopt this instance later.
	Identity() Identity
	// DialAgent opens the host end of the guest agent channel.
	DialAgent(ctx context.Context) (net.Conn, error)
	// Shutdown asks the guest to power off (ACPI power button) and waits
	// for the VMM to exit or ctx to end. It does not kill on timeout.
	Shutdown(ctx context.Context) error
	// Kill sends sig to the VMM process (if it is still the same process).
	Kill(sig syscall.Signal) error
	// Wait blocks until the VMM process has exited and its sockets and
	// pidfile are removed, or ctx ends.
	Wait(ctx context.Context) (ExitStatus, error)
	// ConsoleLog is the path of the file the guest serial console goes to.
	ConsoleLog() string
}

// Capabilities describes how a driver would run VMs on this host.
type Capabilities struct {
	VMM     string `json:"vmm"`
	Binary  string `json:"binary"`
	Version string `json:"version"`
	// Accel is the acceleration Boot uses when Spec.Accel is AccelAuto.
	Accel Accel `json:"accel"`
	// Emulated is true when guests run under instruction emulation.
	Emulated bool `json:"emulated"`
	// Reason explains Accel and Emulated in one line for humans.
	Reason string `json:"reason"`
	// Channel is how the host reaches the guest agent: "virtio-serial"
	// or "vsock".
	Channel string `json:"channel"`
	// UserNet is true when the driver supports NetUser (rootless NAT).
	UserNet bool `json:"user_net"`
}

// Spec is everything needed to boot one VM.
type Spec struct {
	ID   string
	Name string
	// RunDir is the per-VM directory for sockets, pidfile and logs. It is
	// created (0700) when missing.
	RunDir string
	// Kernel is a vmlinux ELF or a bzImage (the QEMU driver takes both).
	Kernel string
	Initrd string
	// Cmdline is appended to the base command line the driver builds
	// (BaseCmdline plus the driver's banger.chan= and banger.exit= keys).
	Cmdline   string
	CPUs      int
	MemoryMiB int
	// Disks appear in the guest in order: /dev/vda, /dev/vdb, ...
	Disks []Disk
	// Net is nil for a VM without a network interface.
	Net   *Net
	Accel Accel
}

// Disk is a raw disk image attached as a virtio block device.
type Disk struct {
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only"`
}

// NetMode selects the host side of the VM's network interface.
type NetMode string

// Network modes.
const (
	// NetTap attaches the NIC to an existing tap device (TapName).
	NetTap NetMode = "tap"
	// NetUser uses the VMM's user-mode NAT (QEMU slirp): no root, no tap.
	// The guest uses UserNetGuestCIDR, UserNetGateway and UserNetDNS.
	NetUser NetMode = "user"
)

// Addresses of the user-mode network as the guest sees it.
const (
	UserNetGuestCIDR = "10.0.2.15/24"
	UserNetGateway   = "10.0.2.2" // also reaches the host's loopback
	UserNetDNS       = "10.0.2.3"
)

// Net is the VM's single network interface.
type Net struct {
	Mode    NetMode `json:"mode"`
	TapName string  `json:"tap_name,omitempty"`
	MAC     string  `json:"mac"`
}

// Identity is the persistable identity of a running VMM process.
type Identity struct {
	VMM string `json:"vmm"`
	PID int    `json:"pid"`
	// StartTime is field 22 of /proc/<pid>/stat (clock ticks after boot);
	// with PID it names one process across pid reuse.
	StartTime     uint64 `json:"start_time"`
	RunDir        string `json:"run_dir"`
	ControlSocket string `json:"control_socket"`
	AgentSocket   string `json:"agent_socket"`
	ConsoleLog    string `json:"console_log"`
	PIDFile       string `json:"pid_file"`
	// Accel is the acceleration the process was started with.
	Accel Accel `json:"accel"`
}

// ExitStatus is how a VMM process ended. Known is false when the process was
// not a child of this process (adopted), so its status could not be read.
type ExitStatus struct {
	Known  bool           `json:"known"`
	Code   int            `json:"code"`
	Signal syscall.Signal `json:"signal,omitempty"`
}

// Success reports whether the process is known to have exited with code 0.
func (s ExitStatus) Success() bool { return s.Known && s.Signal == 0 && s.Code == 0 }

func (s ExitStatus) String() string {
	switch {
	case !s.Known:
		return "exited (status unknown: not our child)"
	case s.Signal != 0:
		return "killed by " + s.Signal.String()
	default:
		return "exit status " + strconv.Itoa(s.Code)
	}
}
