// Package firecracker is the Firecracker driver: the VM is configured
// through Firecracker's API socket (a small typed client over the
// documented REST API), the guest finds its virtio-mmio devices through
// Firecracker's ACPI tables (v1.8 and later), and the host reaches the guest
// agent over vsock (Firecracker's unix-socket bridge with the
// "CONNECT <port>" handshake). Firecracker needs hardware KVM: the driver
// refuses to boot on hosts without it, such as PVM hosts, where QEMU (TCG)
// is the way to run VMs. The jailer is supported and off by default.
package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/vmproc"
)

// Name is the driver name stored in vmm.Identity.VMM.
const Name = "firecracker"

// BinaryEnv names the environment variable that locates Firecracker when
// the configuration does not.
const BinaryEnv = "BANGER_FIRECRACKER_BIN"

// AgentVsockPort is the guest vsock port the agent listens on
// (banger.chan=vsock:<port>), and GuestCID the guest's vsock address.
const (
	AgentVsockPort = 1024
	GuestCID       = 3
)

// Options configure the driver. The zero value finds Firecracker through
// $BANGER_FIRECRACKER_BIN or PATH and runs it without the jailer.
type Options struct {
	// Binary is the Firecracker executable (a path, or a name looked up
	// on PATH). Empty: $BANGER_FIRECRACKER_BIN, then "firecracker".
	Binary string
	// JailerBinary enables the jailer when set.
	JailerBinary string
	// JailUID and JailGID are what the jailed Firecracker runs as; the
	// VM's writable disks are chowned to them. Default 65534 (nobody).
	JailUID, JailGID int
	// ChrootBaseDir is the jailer's --chroot-base-dir. Disks and kernel
	// are hard-linked into the jail, so it must be on the same file
	// system as the VM's writable disks. Default: "jail" next to the
	// VM's first writable disk (removed with the VM), else in the run dir.
	ChrootBaseDir string
	// SocketLinkDir holds short symlinks to directories whose socket paths
	// would exceed the unix socket limit; default os.TempDir().
	SocketLinkDir string
	// StartTimeout bounds how long Boot waits for the API socket and the
	// configuration calls; default 15s.
	StartTimeout time.Duration
	// Host is where host probes read; default vmm.DefaultHostPaths().
	Host *vmm.HostPaths
	// SkipHostCheck boots even where Firecracker cannot run guests (PVM,
	// no hardware virtualization). Only tests that exercise the VMM
	// process and its API without needing the guest to boot set it.
	SkipHostCheck bool
}

// Driver boots VMs with Firecracker.
type Driver struct {
	opts Options
	host vmm.HostPaths

	versionOnce sync.Once
	version     Version
	versionErr  error
}

var _ vmm.Driver = (*Driver)(nil)

// New returns a Firecracker driver. Missing binaries are reported by
// Capabilities and Boot, not here.
func New(opts Options) *Driver {
	if opts.Binary == "" {
		opts.Binary = os.Getenv(BinaryEnv)
	}
	if opts.Binary == "" {
		opts.Binary = "firecracker"
	}
	if opts.JailUID == 0 && opts.JailGID == 0 {
		opts.JailUID, opts.JailGID = 65534, 65534
	}
	if opts.SocketLinkDir == "" {
		opts.SocketLinkDir = os.TempDir()
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 15 * time.Second
	}
	host := vmm.DefaultHostPaths()
	if opts.Host != nil {
		host = *opts.Host
	}
	return &Driver{opts: opts, host: host}
}

// Find returns a driver when a Firecracker binary is configured (binary),
// set in $BANGER_FIRECRACKER_BIN or on PATH, and false otherwise. jailer
// enables the jailer when not empty. This is what the daemon registers.
func Find(binary, jailer string) (*Driver, bool) {
	d := New(Options{Binary: binary, JailerBinary: jailer})
	if _, err := d.Binary(); err != nil {
		return nil, false
	}
	return d, true
}

// Register adds the driver to drivers when Find finds a binary (the daemon
// calls it next to the QEMU driver).
func Register(drivers map[string]vmm.Driver, binary, jailer string) {
	if d, ok := Find(binary, jailer); ok {
		drivers[Name] = d
	}
}

// Name implements vmm.Driver.
func (d *Driver) Name() string { return Name }

// Binary resolves the Firecracker executable.
func (d *Driver) Binary() (string, error) {
	return resolveExecutable("firecracker", d.opts.Binary, "set firecracker_bin in the configuration or $"+BinaryEnv+" (see docs/firecracker.md)")
}

func resolveExecutable(what, bin, hint string) (string, error) {
	p, err := exec.LookPath(bin)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return "", errkind.WithHint(errkind.New(errkind.Unavailable, "%s binary %s not found", what, bin), hint)
		}
		// exec.LookPath reports non-executable files as permission errors.
		return "", errkind.WithHint(errkind.Wrap(errkind.Unavailable, err, "%s binary %s is not executable", what, bin), hint)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return "", errkind.Wrap(errkind.Unavailable, err, "%s binary %s", what, p)
	}
	if !fi.Mode().IsRegular() {
		return "", errkind.WithHint(errkind.New(errkind.Unavailable, "%s binary %s is not a regular file", what, p), hint)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return abs, nil
}

// Version runs `firecracker --version` once and checks it is at least
// MinVersion.
func (d *Driver) Version(ctx context.Context) (Version, error) {
	d.versionOnce.Do(func() {
		bin, err := d.Binary()
		if err != nil {
			d.versionErr = err
			return
		}
		d.version, d.versionErr = probeVersion(ctx, bin)
	})
	return d.version, d.versionErr
}

// hostProblem explains why Firecracker cannot run guests on a host, or
// returns "" when it can.
func hostProblem(k vmm.KVMStatus) string {
	switch {
	case k.Accelerated():
		return ""
	case k.PVM:
		return "this host's /dev/kvm comes from PVM (kvm_pvm), which only runs PVM-enabled guest kernels: " +
			"stock kernels die in early boot under it, and Firecracker has no instruction emulation to fall back on"
	case !k.Device:
		return "this host has no /dev/kvm, and Firecracker needs hardware KVM (it has no instruction emulation)"
	case !k.Usable:
		return fmt.Sprintf("/dev/kvm is not usable (%s), and Firecracker needs hardware KVM", k.Problem)
	default:
		return "the CPU reports no vmx/svm flag, and Firecracker needs hardware KVM"
	}
}

// checkHost refuses hosts where Firecracker cannot run guests.
func (d *Driver) checkHost() error {
	if d.opts.SkipHostCheck {
		return nil
	}
	if p := hostProblem(vmm.DetectKVMAt(d.host)); p != "" {
		return errkind.WithHint(errkind.New(errkind.Unavailable, "firecracker cannot run VMs on this host: %s", p),
			"use --vmm qemu here (it falls back to TCG emulation), or run Firecracker on a host with hardware virtualization")
	}
	return nil
}

// Capabilities implements vmm.Driver. Firecracker always uses KVM; Reason
// says whether it can run here.
func (d *Driver) Capabilities(ctx context.Context) (vmm.Capabilities, error) {
	bin, err := d.Binary()
	if err != nil {
		return vmm.Capabilities{}, err
	}
	v, err := d.Version(ctx)
	if err != nil {
		return vmm.Capabilities{}, err
	}
	kvm := vmm.DetectKVMAt(d.host)
	reason := "can run here: " + kvm.Reason()
	if p := hostProblem(kvm); p != "" {
		reason = "cannot run here: " + p + "; use qemu"
	}
	if d.opts.JailerBinary != "" {
		reason += "; jailer " + d.opts.JailerBinary
	}
	return vmm.Capabilities{
		VMM: Name, Binary: bin, Version: v.String(),
		Accel: vmm.AccelKVM, Emulated: false, Reason: reason,
		Channel: "vsock", UserNet: false,
	}, nil
}

// kernelParams are the driver's own kernel parameters. Firecracker has no
// ACPI S5, so the guest stops by rebooting (keyboard controller reset),
// which makes Firecracker exit. i8042.nopnp=0 undoes the base command
// line's i8042.nopnp: since v1.8 Firecracker describes its i8042 only in
// its ACPI tables (PNP0303), and the legacy probe fails (error -22), so
// the guest has no keyboard and SendCtrlAltDel does nothing (measured in
// the nested lab: with it, Ctrl+Alt+Del stops the guest in about 2 s).
func kernelParams() []string {
	return []string{"reboot=k", "i8042.nopnp=0",
		"banger.chan=vsock:" + strconv.Itoa(AgentVsockPort), "banger.exit=reboot"}
}

// instanceID is the Firecracker (and jailer) --id of a VM: alphanumerics
// and hyphens, at most 64 characters.
func instanceID(vmID string) string {
	var b strings.Builder
	b.WriteString("banger-")
	for _, r := range vmID {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	s := b.String()
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

// checkSpec rejects what Firecracker cannot do.
func checkSpec(spec vmm.Spec) error {
	if spec.Accel == vmm.AccelTCG {
		return errkind.WithHint(errkind.New(errkind.InvalidArgument, "firecracker cannot emulate (accel tcg)"),
			"use --vmm qemu for TCG")
	}
	if spec.Net != nil && spec.Net.Mode == vmm.NetUser {
		return errkind.WithHint(errkind.New(errkind.InvalidArgument, "firecracker has no user-mode networking"),
			"use a tap network, or --vmm qemu for user-mode networking")
	}
	if spec.CPUs > 32 {
		return errkind.New(errkind.InvalidArgument, "firecracker supports at most 32 vCPUs, got %d", spec.CPUs)
	}
	return nil
}

// Boot implements vmm.Driver.
func (d *Driver) Boot(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	if err := vmm.CheckMemory(d.host, spec.MemoryMiB); err != nil {
		return nil, err
	}
	if err := d.checkHost(); err != nil {
		return nil, err
	}
	bin, err := d.Binary()
	if err != nil {
		return nil, err
	}
	if _, err := d.Version(ctx); err != nil {
		return nil, err
	}
	var jailer string
	if d.opts.JailerBinary != "" {
		if jailer, err = resolveExecutable("jailer", d.opts.JailerBinary, "fix jailer_bin in the configuration, or leave it empty to run without the jailer"); err != nil {
			return nil, err
		}
	}
	cmdline, err := vmm.Cmdline(spec.Cmdline, kernelParams()...)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(spec.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating run dir: %w", err)
	}
	if err := clearStale(spec.RunDir); err != nil {
		return nil, err
	}

	var (
		cmd   vmproc.Command
		l     layout
		j     *jail
		guest guestPaths
	)
	if jailer == "" {
		sockDir, err := vmm.ShortSocketDir(spec.RunDir, d.opts.SocketLinkDir, apiSocketName, vsockName)
		if err != nil {
			return nil, fmt.Errorf("choosing socket dir: %w", err)
		}
		l = newLayout(spec.RunDir, sockDir, spec.RunDir)
		guest = hostGuestPaths(spec, l)
		cmd = vmproc.Command{Path: bin, Dir: spec.RunDir, LogFile: l.ConsoleLog, Args: []string{
			"--api-sock", l.APISocket, "--id", instanceID(spec.ID),
			"--log-path", l.Log, "--level", "Info", "--show-level",
			"--metrics-path", l.Metrics,
		}}
		for _, p := range []string{l.Log, l.Metrics} {
			_ = os.Remove(p) // fresh files per boot
		}
	} else {
		j, guest, err = d.prepareJail(spec, bin)
		if err != nil {
			return nil, err
		}
		sockDir, err := vmm.ShortSocketDir(j.Root, d.opts.SocketLinkDir, apiSocketName, vsockName)
		if err != nil {
			j.remove(spec.RunDir)
			return nil, fmt.Errorf("choosing socket dir: %w", err)
		}
		l = newLayout(spec.RunDir, sockDir, j.Root)
		cmd = vmproc.Command{Path: jailer, Dir: spec.RunDir, LogFile: l.ConsoleLog, Args: j.args(bin)}
	}

	p, err := vmproc.Start(cmd)
	if err != nil {
		removeRuntimeFiles(l)
		if j != nil {
			j.remove(spec.RunDir)
		}
		return nil, err
	}
	inst := newInstance(l.identity(p), l, j, p)
	if err := writePIDFile(l.PIDFile, p.PID()); err != nil {
		_ = p.Signal(syscall.SIGKILL)
		<-inst.done
		return nil, err
	}
	if err := d.configure(ctx, inst, spec, cmdline, guest); err != nil {
		_ = p.Signal(syscall.SIGKILL)
		<-inst.done
		return nil, err
	}
	return inst, nil
}

// Adopt implements vmm.Driver. The process must be alive with the recorded
// start time, and be the Firecracker of this VM: its command line names the
// recorded API socket or, under the jailer, its --id and root are the jail's.
func (d *Driver) Adopt(ctx context.Context, spec vmm.Spec, id vmm.Identity) (vmm.Instance, error) {
	if id.VMM != Name {
		return nil, errkind.New(errkind.InvalidArgument, "cannot adopt a %q process with the firecracker driver", id.VMM)
	}
	if spec.RunDir != "" && filepath.Clean(spec.RunDir) != filepath.Clean(id.RunDir) {
		return nil, errkind.New(errkind.InvalidArgument, "identity run dir %s does not match spec run dir %s", id.RunDir, spec.RunDir)
	}
	if id.ControlSocket == "" || id.RunDir == "" {
		return nil, errkind.New(errkind.InvalidArgument, "identity has no api socket or run dir")
	}
	j, err := loadJail(id.RunDir)
	if err != nil {
		return nil, err
	}
	mustContain := id.ControlSocket
	if j != nil {
		mustContain = j.ID
	}
	p, err := vmproc.Attach(id.PID, id.StartTime, mustContain)
	if err == nil && j != nil && !j.owns(id.PID) {
		p.Release()
		err = fmt.Errorf("attaching to pid %d: it is not the jailed firecracker %s: %w", id.PID, j.ID, vmproc.ErrGone)
	}
	if err != nil {
		if errors.Is(err, vmproc.ErrGone) {
			// The VM died while nobody watched: release what it left.
			if _, live := liveOwner(id.RunDir); !live {
				removeRuntimeFiles(layoutOf(id, j))
				if j != nil {
					j.remove(id.RunDir)
				}
			}
			return nil, errkind.Wrap(errkind.NotFound, err, "firecracker process of %s is not running", id.RunDir)
		}
		return nil, err
	}
	return newInstance(id, layoutOf(id, j), j, p), nil
}
