package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/bytesize"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/vmdisk"
)

const defaultStopTimeout = 30 * time.Second

// withVM loads a VM by name or id and runs fn under its lock.
func (d *Daemon) withVM(ctx context.Context, ref string, fn func(vm *model.VM) error) (api.VMInfo, error) {
	vm, err := d.store.GetVM(ctx, ref)
	if err != nil {
		return api.VMInfo{}, err
	}
	unlock := d.vms.lock(vm.ID)
	defer unlock()
	// Reload under the lock: another operation may have changed it.
	if vm, err = d.store.GetVM(ctx, vm.ID); err != nil {
		return api.VMInfo{}, err
	}
	if err := fn(vm); err != nil {
		return api.VMInfo{}, err
	}
	return d.vmInfo(vm), nil
}

// StartVM boots a stopped VM.
func (d *Daemon) StartVM(ctx context.Context, ref string, emit func(api.Event)) (api.VMInfo, error) {
	reqStart := time.Now()
	return d.withVM(ctx, ref, func(vm *model.VM) error { return d.startDetached(ctx, vm, emit, reqStart) })
}

// startDetached starts a VM whose lock the caller holds. A VM's lifetime
// belongs to the daemon, not to the request: the start runs on a context
// the request cannot cancel, so a client that goes away (Ctrl-C on `vm
// run`) leaves a VM that ends up running, or failed with its reason
// recorded. Cancelling midway could leave a row in state starting with no
// VMM, or a VMM killed but not yet gone whose row a delete then removes.
// Only a forced delete cuts a start short (interruptStart).
func (d *Daemon) startDetached(ctx context.Context, vm *model.VM, emit func(api.Event), reqStart time.Time) error {
	done := d.vms.markStarting(vm.ID)
	defer done()
	return d.startLocked(context.WithoutCancel(ctx), vm, emit, reqStart)
}

// interruptStart cuts short a start of the VM ref under way, for a forced
// delete: it kills the VMM as soon as there is one, so the start fails on
// its own (its agent wait sees the exit), tears the VMM down and releases
// the VM's lock. Without it the delete would wait for the guest to boot.
func (d *Daemon) interruptStart(ctx context.Context, ref string) {
	vm, err := d.store.GetVM(ctx, ref)
	if err != nil {
		return // the delete reports it
	}
	for d.vms.isStarting(vm.ID) {
		if rt := d.vms.get(vm.ID); rt != nil {
			_ = rt.inst.Kill(syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StopVM stops a VM cleanly: the agent syncs and powers off; after the
// timeout the VMM is asked (ACPI) and then killed. Like a start, a stop
// runs to its end when the client goes away: cut short, it would record
// the VM stopped without waiting for its VMM to exit.
func (d *Daemon) StopVM(ctx context.Context, ref string, timeout time.Duration) (api.VMInfo, error) {
	ctx = context.WithoutCancel(ctx)
	return d.withVM(ctx, ref, func(vm *model.VM) error { return d.stopLocked(ctx, vm, timeout) })
}

// RestartVM stops and starts a VM (a real reboot: new boot id).
func (d *Daemon) RestartVM(ctx context.Context, ref string, emit func(api.Event)) (api.VMInfo, error) {
	return d.withVM(ctx, ref, func(vm *model.VM) error {
		if err := d.stopLocked(context.WithoutCancel(ctx), vm, defaultStopTimeout); err != nil {
			return err
		}
		return d.startDetached(ctx, vm, emit, time.Now())
	})
}

// KillVM sends a signal to the VMM process (default SIGKILL).
func (d *Daemon) KillVM(ctx context.Context, ref, signal string) (api.VMInfo, error) {
	sig := syscall.SIGKILL
	if signal != "" {
		s := unix.SignalNum(strings.ToUpper(ensureSIG(signal)))
		if s == 0 {
			return api.VMInfo{}, errkind.New(errkind.InvalidArgument, "unknown signal %q", signal)
		}
		sig = s
	}
	return d.withVM(ctx, ref, func(vm *model.VM) error {
		rt := d.vms.get(vm.ID)
		if rt == nil {
			return errkind.New(errkind.Conflict, "vm %q is not running", vm.Name)
		}
		rt.stopping = true
		if err := rt.inst.Kill(sig); err != nil {
			return fmt.Errorf("signalling vm %s: %w", vm.Name, err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := rt.inst.Wait(wctx); err != nil {
			rt.stopping = false
			if sig != syscall.SIGKILL {
				return nil // the VMM may handle the signal and keep running
			}
			return fmt.Errorf("waiting for vm %s to die: %w", vm.Name, err)
		}
		d.released(vm, rt)
		vm.State = model.StateStopped
		return d.store.UpdateVM(ctx, vm)
	})
}

func ensureSIG(s string) string {
	if strings.HasPrefix(strings.ToUpper(s), "SIG") {
		return s
	}
	return "SIG" + s
}

func (d *Daemon) stopLocked(ctx context.Context, vm *model.VM, timeout time.Duration) error {
	rt := d.vms.get(vm.ID)
	if rt == nil {
		if vm.State != model.StateStopped && vm.State != model.StateCreated {
			vm.State = model.StateStopped
			return d.store.UpdateVM(ctx, vm)
		}
		return nil
	}
	if timeout <= 0 {
		timeout = defaultStopTimeout
	}
	rt.stopping = true
	vm.State = model.StateStopping
	if err := d.store.UpdateVM(ctx, vm); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	// 1. The agent syncs the disks and powers the guest off.
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if c, err := rt.agentClient(actx); err == nil {
		if err := c.Shutdown(actx, agentproto.ShutdownPoweroff); err != nil {
			d.log.Warn("agent shutdown failed", "vm", vm.Name, "err", err)
		}
	}
	cancel()
	if !waitExit(ctx, rt, time.Until(deadline)) {
		// 2. ACPI power button, for guests whose agent does not answer.
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		_ = rt.inst.Shutdown(sctx)
		scancel()
		if !waitExit(ctx, rt, 5*time.Second) {
			// 3. Kill.
			d.log.Warn("vm did not stop in time; killing", "vm", vm.Name)
			_ = rt.inst.Kill(syscall.SIGKILL)
			waitExit(ctx, rt, 10*time.Second)
		}
	}
	d.released(vm, rt)
	vm.State = model.StateStopped
	return d.store.UpdateVM(context.WithoutCancel(ctx), vm)
}

// waitExit waits up to d for the VMM to exit.
func waitExit(ctx context.Context, rt *vmRuntime, d time.Duration) bool {
	if d <= 0 {
		d = time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	_, err := rt.inst.Wait(wctx)
	return err == nil
}

// released forgets a VM's runtime after its process exited.
func (d *Daemon) released(vm *model.VM, rt *vmRuntime) {
	rt.closeAgent()
	d.vms.remove(vm.ID)
	cleanRunFiles(rt.inst.Identity())
	if err := d.net.detach(context.Background(), vm); err != nil {
		d.log.Warn("detaching network", "vm", vm.Name, "err", err)
	}
}

// DeleteVM removes a VM and its disks. A running VM needs force; forced,
// it also cuts short a start under way. Once begun, a delete runs to its
// end whatever becomes of the request: stopped midway, it would leave a
// row saying running for a VMM already killed.
func (d *Daemon) DeleteVM(ctx context.Context, ref string, force bool) error {
	ctx = context.WithoutCancel(ctx)
	if force {
		d.interruptStart(ctx, ref)
	}
	_, err := d.withVM(ctx, ref, func(vm *model.VM) error {
		if rt := d.vms.get(vm.ID); rt != nil {
			if !force {
				return errkind.WithHint(errkind.New(errkind.Conflict, "vm %q is running", vm.Name),
					"stop it first (`banger vm stop "+vm.Name+"`) or pass --force")
			}
			d.teardown(vm, rt)
		}
		if err := d.net.forget(ctx, vm); err != nil {
			return fmt.Errorf("releasing network of %s: %w", vm.Name, err)
		}
		if err := os.RemoveAll(vm.Dir); err != nil {
			return fmt.Errorf("removing %s: %w", vm.Dir, err)
		}
		if vm.RunDir != vm.Dir {
			os.RemoveAll(vm.RunDir)
		}
		return d.store.DeleteVM(ctx, vm.ID)
	})
	return err
}

// PruneVMs deletes every VM that is not running and returns their names.
func (d *Daemon) PruneVMs(ctx context.Context, dryRun bool) ([]string, error) {
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	var errs []error
	for _, vm := range vms {
		if d.vms.get(vm.ID) != nil || vm.State == model.StateRunning || vm.State == model.StateStarting {
			continue
		}
		if dryRun {
			names = append(names, vm.Name)
			continue
		}
		if err := d.DeleteVM(ctx, vm.ID, false); err != nil {
			if errors.Is(err, errkind.Conflict) || errors.Is(err, errkind.NotFound) {
				continue // started (or deleted) meanwhile: not ours to prune
			}
			errs = append(errs, err)
			continue
		}
		names = append(names, vm.Name)
	}
	sort.Strings(names)
	return names, errors.Join(errs...)
}

// SetVM changes the size of a stopped VM.
func (d *Daemon) SetVM(ctx context.Context, ref string, req api.VMSetRequest) (api.VMInfo, error) {
	return d.withVM(ctx, ref, func(vm *model.VM) error {
		if d.vms.get(vm.ID) != nil {
			return errkind.WithHint(errkind.New(errkind.Conflict, "vm %q is running", vm.Name), "stop it first")
		}
		if req.CPUs < 0 || req.MemoryMiB < 0 {
			return errkind.New(errkind.InvalidArgument, "cpus and memory must be positive")
		}
		probe := api.VMCreateRequest{CPUs: vm.CPUs, MemoryMiB: vm.MemoryMiB, Disk: fmt.Sprint(vm.DiskBytes/(1<<20)) + "M"}
		if req.CPUs > 0 {
			probe.CPUs = req.CPUs
		}
		if req.MemoryMiB > 0 {
			probe.MemoryMiB = req.MemoryMiB
		}
		cpus, mem, _, err := d.vmSizing(probe)
		if err != nil {
			return err
		}
		if req.Disk != "" {
			size, err := bytesize.Parse(req.Disk)
			if err != nil {
				return errkind.Wrap(errkind.InvalidArgument, err, "--disk")
			}
			if size < vm.DiskBytes {
				return errkind.New(errkind.InvalidArgument, "disk can only grow (now %s)", bytesize.Format(vm.DiskBytes))
			}
			if size > vm.DiskBytes {
				if err := vmdisk.Resize(ctx, vm.Dir+"/"+workDiskName, size); err != nil {
					return fmt.Errorf("growing work disk: %w", err)
				}
				vm.DiskBytes = size
			}
		}
		vm.CPUs, vm.MemoryMiB = cpus, mem
		return d.store.UpdateVM(ctx, vm)
	})
}

// VMLogPath returns the console log of a VM.
func (d *Daemon) VMLogPath(ctx context.Context, ref string) (string, error) {
	vm, err := d.store.GetVM(ctx, ref)
	if err != nil {
		return "", err
	}
	return d.vmInfo(vm).ConsoleLog, nil
}

// VMRunning reports whether the VM's VMM process is alive.
func (d *Daemon) VMRunning(ctx context.Context, ref string) bool {
	vm, err := d.store.GetVM(ctx, ref)
	return err == nil && d.vms.get(vm.ID) != nil
}
