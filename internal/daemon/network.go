package daemon

import (
	"context"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/vmm"
)

// vmNetwork attaches VMs to the host network. The daemon calls it at
// these points of a VM's life:
//
//   - validate: at create, to check and normalise the requested network
//     (mode "" → default, forwards, egress allow-list) before anything is
//     made; it returns the VM's initial network record.
//   - attach: before boot; returns the NIC for the VMM spec (nil for none)
//     and extra kernel parameters for the guest agent (banger.ip= …). It
//     records what it allocated on vm.Network (persisted by the caller), so
//     cleanup works after a crash.
//   - detach: after the VMM exited (stop, kill, crash); frees the tap and
//     firewall state but keeps the VM's address reservation.
//   - forget: at delete; frees everything, including the address.
//   - reconcile: at daemon start, with every VM, to drop orphan taps and
//     rules and rebuild DNS.
type vmNetwork interface {
	validate(ctx context.Context, req api.VMCreateRequest) (model.VMNetwork, error)
	attach(ctx context.Context, vm *model.VM) (*vmm.Net, []string, error)
	detach(ctx context.Context, vm *model.VM) error
	forget(ctx context.Context, vm *model.VM) error
	reconcile(ctx context.Context, vms []*model.VM) error
	close() error
}

// noNetwork gives VMs no NIC; the agent channel still works.
type noNetwork struct{}

func (noNetwork) validate(_ context.Context, req api.VMCreateRequest) (model.VMNetwork, error) {
	switch {
	case req.Net != "" && req.Net != "none":
		return model.VMNetwork{}, errkind.New(errkind.Unavailable, "--net %s is not available on this host (networking is not set up)", req.Net)
	case len(req.Publish) > 0 || req.AutoForward || len(req.AllowHosts) > 0 || len(req.AllowCIDRs) > 0:
		return model.VMNetwork{}, errkind.New(errkind.Unavailable, "port forwards and egress rules are not available on this host (networking is not set up)")
	}
	return model.VMNetwork{Mode: "none"}, nil
}

func (noNetwork) attach(context.Context, *model.VM) (*vmm.Net, []string, error) { return nil, nil, nil }
func (noNetwork) detach(context.Context, *model.VM) error                       { return nil }
func (noNetwork) forget(context.Context, *model.VM) error                       { return nil }
func (noNetwork) reconcile(context.Context, []*model.VM) error                  { return nil }
func (noNetwork) close() error                                                  { return nil }
