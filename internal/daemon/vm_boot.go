package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/initrd"
	"github.com/bangerdev/banger/internal/kernel"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/vmm"
)

// bootFiles are the kernel and initrd a VM boots with.
type bootFiles struct {
	Kernel string
	Initrd string
	// Modules is the read-only disk holding the kernel's module tree
	// (mounted at /lib/modules/<release> in the guest), when there is one.
	Modules string

	kernelID, modulesDir, release string
}

// bootArtifacts resolves the kernel of an image (or an override) and, when
// build is set, the generated initrd holding banger-agent and the modules.
func (d *Daemon) bootArtifacts(ctx context.Context, im *model.Image, kernelOverride string, build bool) (bootFiles, error) {
	ref := kernelOverride
	if ref == "" {
		ref = im.KernelRef
	}
	var bf bootFiles
	var modules, kernelID string
	switch {
	case ref != "":
		k, err := d.kernels.Get(ctx, ref)
		if err != nil {
			return bf, errkind.WithHint(err, "import or pull it with `banger kernel pull` / `banger kernel import`")
		}
		bf.Kernel, modules, kernelID = k.Vmlinux, k.ModulesDir, "kernel:"+k.SHA256
		bf.release = k.Version
		if k.Initrd != "" && k.ModulesDir == "" {
			bf.Initrd = k.Initrd
		}
	case im.KernelPath != "":
		bf.Kernel, modules, bf.Initrd = im.KernelPath, im.ModulesDir, im.InitrdPath
		kernelID = "image:" + im.ID
		if modules != "" {
			bf.release = filepath.Base(modules) // lib/modules/<release>
		}
	default:
		return bf, errkind.WithHint(errkind.New(errkind.InvalidArgument, "image %q has no kernel", im.Name),
			"pass --kernel NAME (see `banger kernel list`)")
	}
	if _, err := os.Stat(bf.Kernel); err != nil {
		return bf, errkind.New(errkind.NotFound, "kernel file %s of image %q: %v", bf.Kernel, im.Name, err)
	}
	bf.kernelID, bf.modulesDir = kernelID, modules
	if !build || bf.Initrd != "" {
		return bf, nil
	}
	agent, err := d.agentBinary()
	if err != nil {
		return bf, err
	}
	p, err := initrd.Cached(ctx, d.layout.InitrdCacheDir(), kernelID, initrd.Spec{AgentPath: agent, ModulesDir: modules})
	if err != nil {
		return bf, fmt.Errorf("building initrd: %w", err)
	}
	bf.Initrd = p
	return bf, nil
}

// modulesDisk returns the modules image of bf's kernel, building it on
// first use. A kernel without modules gets none; a failure to build one is
// reported as a warning and the VM boots without it (modprobe then fails
// in the guest, the rest works).
func (d *Daemon) modulesDisk(ctx context.Context, bf bootFiles, emit func(api.Event)) string {
	if bf.modulesDir == "" || bf.release == "" {
		return ""
	}
	p, err := kernel.ModulesImage(ctx, d.layout.InitrdCacheDir(), bf.kernelID, bf.modulesDir, bf.release)
	if err != nil {
		d.log.Warn("no kernel modules in the guest", "kernel", bf.release, "err", err)
		emit(api.Event{Stage: "initrd", Message: "warning: kernel modules unavailable in the guest: " + err.Error()})
		return ""
	}
	return p
}

// agentBinary finds banger-agent: BANGER_AGENT_BIN, next to bangerd, or PATH.
func (d *Daemon) agentBinary() (string, error) {
	if p := os.Getenv("BANGER_AGENT_BIN"); p != "" {
		return p, nil
	}
	if exe, err := os.Executable(); err == nil {
		for _, cand := range []string{
			filepath.Join(filepath.Dir(exe), "banger-agent"),
			filepath.Join(filepath.Dir(exe), "..", "lib", "banger", "banger-agent"),
		} {
			if fi, err := os.Stat(cand); err == nil && fi.Mode().IsRegular() {
				return cand, nil
			}
		}
	}
	for _, cand := range []string{"/usr/local/lib/banger/banger-agent", "/usr/lib/banger/banger-agent"} {
		if _, err := os.Stat(cand); err == nil {
			return cand, nil
		}
	}
	return "", errkind.WithHint(errkind.New(errkind.Unavailable, "banger-agent binary not found"),
		"build it with `make build` (it must sit next to bangerd) or set BANGER_AGENT_BIN")
}

// vmSpec builds the VMM spec of a VM.
func (d *Daemon) vmSpec(vm *model.VM, im *model.Image, bf bootFiles) vmm.Spec {
	params := []string{
		"banger.root=/dev/vda", "banger.overlay=/dev/vdb", "banger.work=/dev/vdc",
		"banger.hostname=" + vm.Name,
	}
	if im.InitMode != "" {
		params = append(params, "banger.init="+im.InitMode)
	}
	disks := []vmm.Disk{
		{Path: im.RootfsPath, ReadOnly: true},
		{Path: filepath.Join(vm.Dir, overlayDiskName)},
		{Path: filepath.Join(vm.Dir, workDiskName)},
	}
	if bf.Modules != "" {
		disks = append(disks, vmm.Disk{Path: bf.Modules, ReadOnly: true})
		params = append(params, "banger.modules=/dev/vdd")
	}
	return vmm.Spec{
		ID: vm.ID, Name: vm.Name, RunDir: vm.RunDir,
		Kernel: bf.Kernel, Initrd: bf.Initrd, Cmdline: strings.Join(params, " "),
		CPUs: vm.CPUs, MemoryMiB: vm.MemoryMiB,
		Disks: disks,
	}
}

func consoleLogPath(vm *model.VM) string { return filepath.Join(vm.RunDir, "console.log") }

// agentTimeoutEnv overrides agentTimeout (a Go duration, e.g. "10s"): for
// very slow hosts, and for tests of guests that never answer.
const agentTimeoutEnv = "BANGER_AGENT_TIMEOUT"

// agentTimeout bounds how long a boot may take to reach the agent.
func agentTimeout(accel vmm.Accel) time.Duration {
	if v := os.Getenv(agentTimeoutEnv); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
	}
	if accel == vmm.AccelTCG {
		return 120 * time.Second
	}
	return 60 * time.Second
}

// startLocked boots a VM and waits for its agent. The caller holds the
// VM's lock. The VMM process belongs to the daemon: it is started with a
// context that the request cannot cancel. reqStart is when the request
// arrived; the "vm running" log line splits the time since then into the
// daemon's own work before the VMM exec, the VMM start, the guest boot up
// to the agent's answer, and the daemon's work after it.
func (d *Daemon) startLocked(ctx context.Context, vm *model.VM, emit func(api.Event), reqStart time.Time) (err error) {
	if rt := d.vms.get(vm.ID); rt != nil {
		return nil
	}
	im, err := d.store.GetImage(ctx, vm.ImageID)
	if err != nil {
		return err
	}
	drv, err := d.driver(vm.VMM)
	if err != nil {
		return err
	}
	emit(api.Event{Stage: "initrd", Message: "preparing kernel and initrd"})
	bf, err := d.bootArtifacts(ctx, im, vm.KernelRef, true)
	if err != nil {
		return d.failVM(ctx, vm, err)
	}
	bf.Modules = d.modulesDisk(ctx, bf, emit)
	vm.State, vm.LastError = model.StateStarting, ""
	if err := d.store.UpdateVM(ctx, vm); err != nil {
		return err
	}
	nic, netParams, err := d.net.attach(ctx, vm)
	if err != nil {
		return d.failVM(ctx, vm, fmt.Errorf("attaching network: %w", err))
	}
	spec := d.vmSpec(vm, im, bf)
	spec.Net = nic
	if len(netParams) > 0 {
		spec.Cmdline += " " + strings.Join(netParams, " ")
	}
	emit(api.Event{Stage: "boot", Message: "booting " + vm.VMM})
	tExec := time.Now()
	inst, err := drv.Boot(context.WithoutCancel(ctx), spec)
	tBooted := time.Now()
	if err != nil {
		_ = d.net.detach(context.WithoutCancel(ctx), vm)
		return d.failVM(ctx, vm, fmt.Errorf("booting: %w", err))
	}
	id := inst.Identity()
	raw, _ := json.Marshal(id)
	vm.Identity, vm.Accel = string(raw), string(id.Accel)
	if err := d.store.UpdateVM(context.WithoutCancel(ctx), vm); err != nil {
		// Without its identity on the row the VM could not be re-adopted:
		// do not let it run unrecorded.
		d.teardown(vm, d.track(vm, inst))
		return d.failVM(context.WithoutCancel(ctx), vm, fmt.Errorf("recording the vmm identity: %w", err))
	}
	rt := d.track(vm, inst)
	emit(api.Event{Stage: "agent", Message: "waiting for the guest agent"})
	if err := d.waitAgent(ctx, rt, agentTimeout(id.Accel)); err != nil {
		d.teardown(vm, rt)
		return d.failVM(context.WithoutCancel(ctx), vm, errkind.WithHint(
			fmt.Errorf("vm %s did not come up: %w (console log: %s)", vm.Name, err, inst.ConsoleLog()),
			"see `banger vm logs "+vm.Name+"`"))
	}
	tReady := time.Now()
	d.installGuestCACerts(ctx, vm, rt, emit)
	vm.State = model.StateRunning
	if err := d.store.UpdateVM(context.WithoutCancel(ctx), vm); err != nil {
		d.teardown(vm, rt)
		return d.failVM(context.WithoutCancel(ctx), vm, fmt.Errorf("recording the running state: %w", err))
	}
	emit(api.Event{Stage: "ready", Message: "vm " + vm.Name + " is running"})
	d.log.Info("vm running", "vm", vm.Name, "to_vmm_exec", tExec.Sub(reqStart), "vmm_start", tBooted.Sub(tExec),
		"guest_to_agent", tReady.Sub(tBooted), "after_agent", time.Since(tReady))
	return nil
}

// failVM records err on the VM (state error) and returns it.
func (d *Daemon) failVM(ctx context.Context, vm *model.VM, err error) error {
	vm.State, vm.LastError = model.StateError, err.Error()
	if uerr := d.store.UpdateVM(context.WithoutCancel(ctx), vm); uerr != nil {
		d.log.Error("recording vm error", "vm", vm.Name, "err", uerr)
	}
	return err
}

// track registers a running instance and watches for its exit: an exit
// that banger did not ask for marks the VM stopped (or error) and releases
// its runtime resources.
func (d *Daemon) track(vm *model.VM, inst vmm.Instance) *vmRuntime {
	rt := &vmRuntime{inst: inst, exited: make(chan struct{})}
	d.vms.put(vm.ID, rt)
	go func() {
		st, _ := inst.Wait(d.ctx)
		if d.ctx.Err() != nil {
			return // the daemon is exiting; the VM keeps running
		}
		close(rt.exited)
		unlock := d.vms.lock(vm.ID)
		defer unlock()
		if d.vms.get(vm.ID) != rt {
			return
		}
		rt.closeAgent()
		d.vms.remove(vm.ID)
		cur, err := d.store.GetVM(d.ctx, vm.ID)
		if err != nil {
			return
		}
		if rt.stopping || cur.State == model.StateStopped {
			return
		}
		cur.State = model.StateStopped
		if !st.Success() && st.Known {
			cur.State, cur.LastError = model.StateError, fmt.Sprintf("vmm %s (console log: %s)", st, inst.ConsoleLog())
		}
		cleanRunFiles(inst.Identity())
		if err := d.net.detach(d.ctx, cur); err != nil {
			d.log.Warn("detaching network", "vm", cur.Name, "err", err)
		}
		if err := d.store.UpdateVM(d.ctx, cur); err != nil {
			d.log.Error("recording vm exit", "vm", cur.Name, "err", err)
		}
		d.log.Info("vm exited", "vm", cur.Name, "status", st.String())
	}()
	return rt
}

// teardown kills a VM's process and forgets its runtime.
func (d *Daemon) teardown(vm *model.VM, rt *vmRuntime) {
	rt.stopping = true
	rt.closeAgent()
	_ = rt.inst.Kill(syscall.SIGKILL)
	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = rt.inst.Wait(wctx)
	d.vms.remove(vm.ID)
	cleanRunFiles(rt.inst.Identity())
	if err := d.net.detach(context.Background(), vm); err != nil {
		d.log.Warn("detaching network", "vm", vm.Name, "err", err)
	}
}

// cleanRunFiles removes a VM's sockets and pidfile (the console log stays).
func cleanRunFiles(id vmm.Identity) {
	for _, p := range []string{id.ControlSocket, id.AgentSocket, id.PIDFile} {
		if p != "" {
			os.Remove(p)
		}
	}
}
