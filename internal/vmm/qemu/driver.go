package qemu

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
const Name = "qemu"

// Options configure the driver. The zero value is usable.
type Options struct {
	// Binary is the QEMU executable; default qemu-system-x86_64 from PATH.
	Binary string
	// SocketLinkDir holds short symlinks to run dirs whose socket paths
	// would exceed the unix socket limit; default os.TempDir().
	SocketLinkDir string
	// StartTimeout bounds how long Boot waits for QMP; default 15s.
	StartTimeout time.Duration
	// Host is where host probes read; default vmm.DefaultHostPaths().
	Host *vmm.HostPaths
}

// Driver boots VMs with QEMU microvm.
type Driver struct {
	opts Options
	host vmm.HostPaths

	versionOnce sync.Once
	version     string
	versionErr  error
}

var _ vmm.Driver = (*Driver)(nil)

// New returns a QEMU driver.
func New(opts Options) *Driver {
	if opts.Binary == "" {
		opts.Binary = "qemu-system-x86_64"
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

// Name implements vmm.Driver.
func (d *Driver) Name() string { return Name }

func (d *Driver) binary() (string, error) {
	p, err := exec.LookPath(d.opts.Binary)
	if err != nil {
		return "", errkind.WithHint(
			errkind.Wrap(errkind.Unavailable, err, "qemu binary %s not found", d.opts.Binary),
			"install qemu-system-x86")
	}
	return p, nil
}

// Version returns the QEMU version ("7.2.22"), from `qemu --version`.
func (d *Driver) Version(ctx context.Context) (string, error) {
	d.versionOnce.Do(func() {
		bin, err := d.binary()
		if err != nil {
			d.versionErr = err
			return
		}
		out, err := exec.CommandContext(ctx, bin, "--version").Output()
		if err != nil {
			d.versionErr = fmt.Errorf("running %s --version: %w", bin, err)
			return
		}
		d.version = parseVersion(string(out))
	})
	return d.version, d.versionErr
}

func parseVersion(out string) string {
	f := strings.Fields(out)
	for i, w := range f {
		if w == "version" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// Capabilities implements vmm.Driver.
func (d *Driver) Capabilities(ctx context.Context) (vmm.Capabilities, error) {
	bin, err := d.binary()
	if err != nil {
		return vmm.Capabilities{}, err
	}
	v, err := d.Version(ctx)
	if err != nil {
		return vmm.Capabilities{}, err
	}
	kvm := vmm.DetectKVMAt(d.host)
	accel, _ := vmm.ResolveAccel(vmm.AccelAuto, kvm)
	return vmm.Capabilities{
		VMM: Name, Binary: bin, Version: v,
		Accel: accel, Emulated: accel == vmm.AccelTCG, Reason: kvm.Reason(),
		Channel: "virtio-serial", UserNet: true,
	}, nil
}

// files returns the layout of a run dir, with sockets under sockDir.
func files(runDir, sockDir string) layout {
	return layout{
		QMPSocket:   filepath.Join(sockDir, qmpSocketName),
		AgentSocket: filepath.Join(sockDir, agentSocketName),
		ConsoleLog:  filepath.Join(runDir, consoleLogName),
		ProcessLog:  filepath.Join(runDir, processLogName),
		PIDFile:     filepath.Join(runDir, pidFileName),
	}
}

// Boot implements vmm.Driver.
func (d *Driver) Boot(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := vmm.CheckMemory(d.host, spec.MemoryMiB); err != nil {
		return nil, err
	}
	bin, err := d.binary()
	if err != nil {
		return nil, err
	}
	kvm := vmm.DetectKVMAt(d.host)
	accel, err := vmm.ResolveAccel(spec.Accel, kvm)
	if err != nil {
		return nil, err
	}
	tsc := 0
	if accel == vmm.AccelTCG {
		if tsc, err = vmm.HostTSCKHz(d.host); err != nil {
			return nil, err
		}
	}
	cmdline, err := vmm.Cmdline(spec.Cmdline, kernelParams(accel, tsc)...)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(spec.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating run dir: %w", err)
	}
	sockDir, err := vmm.ShortSocketDir(spec.RunDir, d.opts.SocketLinkDir, qmpSocketName, agentSocketName)
	if err != nil {
		return nil, fmt.Errorf("choosing socket dir: %w", err)
	}
	f := files(spec.RunDir, sockDir)
	if err := clearStale(f); err != nil {
		return nil, err
	}
	args := buildArgs(argsConfig{Spec: spec, Accel: accel, PVM: kvm.PVM, Cmdline: cmdline, Files: f})
	p, err := vmproc.Start(vmproc.Command{Path: bin, Args: args, Dir: spec.RunDir, LogFile: f.ProcessLog})
	if err != nil {
		removeRuntimeFiles(spec.RunDir, f)
		return nil, err
	}
	inst := newInstance(vmm.Identity{
		VMM: Name, PID: p.PID(), StartTime: p.StartTime(), RunDir: spec.RunDir,
		ControlSocket: f.QMPSocket, AgentSocket: f.AgentSocket, ConsoleLog: f.ConsoleLog,
		PIDFile: f.PIDFile, Accel: accel,
	}, p)
	if err := d.waitReady(ctx, inst, f); err != nil {
		_ = p.Signal(syscall.SIGKILL)
		<-inst.done
		return nil, err
	}
	return inst, nil
}

// clearStale refuses to start over a live QEMU of the same run dir and
// removes sockets and pidfile a dead one left.
func clearStale(f layout) error {
	if b, err := os.ReadFile(f.PIDFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			if args, err := vmproc.CmdlineOf(pid); err == nil && argsMention(args, optEscape(f.QMPSocket)) {
				if st, err := vmproc.StartTimeOf(pid); err == nil && !st.Zombie() {
					return errkind.New(errkind.Conflict, "a qemu process (pid %d) is already running for %s", pid, f.PIDFile)
				}
			}
		}
	}
	for _, p := range []string{f.QMPSocket, f.AgentSocket, f.PIDFile} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing stale %s: %w", p, err)
		}
	}
	return nil
}

func argsMention(args []string, s string) bool {
	for _, a := range args {
		if strings.Contains(a, s) {
			return true
		}
	}
	return false
}

// waitReady waits until QMP answers query-status, QEMU exits, or the start
// timeout or ctx ends.
func (d *Driver) waitReady(ctx context.Context, inst *instance, f layout) error {
	ctx, cancel := context.WithTimeout(ctx, d.opts.StartTimeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-inst.proc.Done():
			return startFailure(inst.proc.Status(), f.ProcessLog)
		default:
		}
		if _, err := os.Stat(f.QMPSocket); err == nil {
			qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
			var st Status
			err := qmpDo(qctx, f.QMPSocket, "query-status", &st)
			qcancel()
			if err == nil {
				return nil
			}
		}
		select {
		case <-inst.proc.Done():
			return startFailure(inst.proc.Status(), f.ProcessLog)
		case <-ctx.Done():
			return fmt.Errorf("waiting for qemu to start: %w (log: %s)", ctx.Err(), logTail(f.ProcessLog))
		case <-tick.C:
		}
	}
}

func startFailure(st vmm.ExitStatus, logPath string) error {
	return fmt.Errorf("qemu exited during start (%s): %s", st, logTail(logPath))
}

// logTail returns the end of a log for an error message.
func logTail(path string) string {
	if t := vmproc.LogTail(path, 5); t != "" {
		return t
	}
	return "no output"
}

// Adopt implements vmm.Driver. The process must be alive, have the recorded
// start time, and have the recorded QMP socket on its command line.
func (d *Driver) Adopt(ctx context.Context, spec vmm.Spec, id vmm.Identity) (vmm.Instance, error) {
	if id.VMM != Name {
		return nil, errkind.New(errkind.InvalidArgument, "cannot adopt a %q process with the qemu driver", id.VMM)
	}
	if spec.RunDir != "" && filepath.Clean(spec.RunDir) != filepath.Clean(id.RunDir) {
		return nil, errkind.New(errkind.InvalidArgument, "identity run dir %s does not match spec run dir %s", id.RunDir, spec.RunDir)
	}
	if id.ControlSocket == "" {
		return nil, errkind.New(errkind.InvalidArgument, "identity has no qmp socket")
	}
	p, err := vmproc.Attach(id.PID, id.StartTime, optEscape(id.ControlSocket))
	if err != nil {
		if errors.Is(err, vmproc.ErrGone) {
			return nil, errkind.Wrap(errkind.NotFound, err, "qemu process of %s is not running", id.RunDir)
		}
		return nil, err
	}
	return newInstance(id, p), nil
}
