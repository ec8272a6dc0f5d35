package daemon

import (
	"context"

	"github.com/bangerdev/banger/internal/model"
)

// reconcile runs at startup: VMs whose VMM process still runs (same pid,
// same start time, same sockets) are re-adopted; the rest are marked
// stopped and their runtime files released.
func (d *Daemon) reconcile(ctx context.Context) error {
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	for _, vm := range vms {
		switch vm.State {
		case model.StateRunning, model.StateStarting, model.StateStopping:
		default:
			continue
		}
		if err := d.adopt(ctx, vm); err != nil {
			d.log.Info("vm not re-adopted; marking stopped", "vm", vm.Name, "reason", err)
			if id, perr := parseIdentity(vm.Identity); perr == nil {
				cleanRunFiles(id)
			}
			vm.State = model.StateStopped
			if err := d.net.detach(ctx, vm); err != nil {
				d.log.Warn("detaching network", "vm", vm.Name, "err", err)
			}
			if err := d.store.UpdateVM(ctx, vm); err != nil {
				return err
			}
			continue
		}
		d.log.Info("re-adopted running vm", "vm", vm.Name)
	}
	return nil
}

func (d *Daemon) adopt(ctx context.Context, vm *model.VM) error {
	id, err := parseIdentity(vm.Identity)
	if err != nil {
		return err
	}
	drv, err := d.driver(vm.VMM)
	if err != nil {
		return err
	}
	im, err := d.store.GetImage(ctx, vm.ImageID)
	if err != nil {
		return err
	}
	inst, err := drv.Adopt(ctx, d.vmSpec(vm, im, bootFiles{}), id)
	if err != nil {
		return err
	}
	d.track(vm, inst)
	if vm.State != model.StateRunning {
		vm.State = model.StateRunning
		if err := d.store.UpdateVM(ctx, vm); err != nil {
			return err
		}
	}
	return nil
}

// reconcileNetwork lets the network layer drop orphans and rebuild DNS
// after the VMs were reconciled.
func (d *Daemon) reconcileNetwork(ctx context.Context) error {
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	return d.net.reconcile(ctx, vms)
}
