package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/vmm"
)

// guestPaths are the file paths Firecracker is given: host paths, or paths
// inside the jail.
type guestPaths struct {
	Kernel, Initrd string
	Disks          []string
	Vsock          string
}

func hostGuestPaths(spec vmm.Spec, l layout) guestPaths {
	g := guestPaths{Kernel: spec.Kernel, Initrd: spec.Initrd, Vsock: l.VsockSocket}
	for _, dk := range spec.Disks {
		g.Disks = append(g.Disks, dk.Path)
	}
	return g
}

// configure waits for the API socket, configures the VM and starts it.
func (d *Driver) configure(ctx context.Context, inst *instance, spec vmm.Spec, cmdline string, g guestPaths) error {
	ctx, cancel := context.WithTimeout(ctx, d.opts.StartTimeout)
	defer cancel()
	// Abort API calls as soon as the process dies.
	go func() {
		select {
		case <-inst.proc.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	c := NewClient(inst.files.APISocket)
	if err := waitAPI(ctx, c, inst); err != nil {
		return err
	}
	fail := func(what string, err error) error {
		if inst.proc.Exited() {
			return inst.startFailure()
		}
		return d.classify(fmt.Errorf("%s: %w", what, err))
	}
	if err := c.PutMachineConfig(ctx, MachineConfig{VCPUCount: spec.CPUs, MemSizeMiB: spec.MemoryMiB}); err != nil {
		return fail("configuring machine", err)
	}
	if err := c.PutBootSource(ctx, BootSource{KernelImagePath: g.Kernel, InitrdPath: g.Initrd, BootArgs: cmdline}); err != nil {
		return fail("configuring boot source", err)
	}
	for i, dk := range spec.Disks {
		drv := Drive{DriveID: "vd" + string(rune('a'+i)), PathOnHost: g.Disks[i], IsReadOnly: dk.ReadOnly}
		if !dk.ReadOnly {
			drv.CacheType = "Writeback" // the guest's flushes reach the disk
		}
		if err := c.PutDrive(ctx, drv); err != nil {
			return fail("adding disk "+drv.DriveID, err)
		}
	}
	if n := spec.Net; n != nil {
		if err := c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: "eth0", HostDevName: n.TapName, GuestMAC: n.MAC}); err != nil {
			return fail("adding network interface on tap "+n.TapName, err)
		}
	}
	if err := c.PutVsock(ctx, Vsock{GuestCID: GuestCID, UDSPath: g.Vsock}); err != nil {
		return fail("adding vsock", err)
	}
	if err := c.Action(ctx, ActionInstanceStart); err != nil {
		return fail("starting the guest", err)
	}
	return nil
}

// classify turns Firecracker faults callers can act on into domain errors.
func (d *Driver) classify(err error) error {
	var ae *APIError
	if !errors.As(err, &ae) {
		return err
	}
	switch {
	case strings.Contains(ae.FaultMessage, "Kernel Loader"), strings.Contains(ae.FaultMessage, "kernel image"):
		return errkind.WithHint(errkind.Wrap(errkind.InvalidArgument, err, "firecracker rejected the kernel"),
			"Firecracker boots only an uncompressed ELF vmlinux on x86_64")
	case ae.Status == 400:
		return errkind.Wrap(errkind.InvalidArgument, err, "firecracker rejected the configuration")
	}
	return err
}

// waitAPI waits until the API socket answers GET /.
func waitAPI(ctx context.Context, c *Client, inst *instance) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if inst.proc.Exited() {
			return inst.startFailure()
		}
		if _, err := os.Stat(inst.files.APISocket); err == nil {
			if _, err := c.InstanceInfo(ctx); err == nil {
				return nil
			}
		}
		select {
		case <-inst.proc.Done():
			return inst.startFailure()
		case <-ctx.Done():
			return fmt.Errorf("waiting for the firecracker api socket %s: %w (%s)", inst.files.APISocket, ctx.Err(), inst.logTails())
		case <-tick.C:
		}
	}
}
