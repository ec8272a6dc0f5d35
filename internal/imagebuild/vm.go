package imagebuild

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/agentclient"
	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/vmdisk"
	"github.com/bangerdev/banger/internal/vmm"
)

// OverlaySize is the (sparse) size of a build VM's writable disk.
const OverlaySize = 32 << 30

// VMRunner boots build VMs with a VMM driver. The daemon fills it from an
// image's boot artifacts (kernel and generated initrd).
type VMRunner struct {
	Driver vmm.Driver
	// Kernel and Initrd boot every build VM (the initrd holds banger-agent).
	Kernel, Initrd  string
	CPUs, MemoryMiB int
	// RunDir is the parent of the per-VM run directories (sockets, logs).
	RunDir string
	Accel  vmm.Accel
	// BootTimeout bounds the wait for the agent (default 2 minutes).
	BootTimeout time.Duration
	// Net, when set, provides the network of a NetworkNAT build VM: the
	// NIC and the kernel command line keys that configure it in the guest,
	// and a release function. Unset, NAT uses the VMM's user-mode network
	// (rootless; the guest reaches what the host reaches).
	Net func(ctx context.Context, id string) (*vmm.Net, string, func(), error)
}

// NewOverlay creates an empty overlay disk.
func (r *VMRunner) NewOverlay(ctx context.Context, path string) error {
	return vmdisk.CreateOverlay(ctx, path, OverlaySize)
}

// Boot starts a build VM: base read-only as /dev/vda, the overlay as
// /dev/vdb, no work disk, the agent as init.
func (r *VMRunner) Boot(ctx context.Context, spec MachineSpec) (Machine, error) {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := "build-" + hex.EncodeToString(b)
	cpus, mem := r.CPUs, r.MemoryMiB
	if cpus <= 0 {
		cpus = 2
	}
	if mem <= 0 {
		mem = 1024
	}
	cmdline := []string{"banger.root=/dev/vda", "banger.overlay=/dev/vdb", "banger.hostname=banger-build", "banger.init=agent"}
	vs := vmm.Spec{
		ID: id, Name: id, RunDir: filepath.Join(r.RunDir, id),
		Kernel: r.Kernel, Initrd: r.Initrd, CPUs: cpus, MemoryMiB: mem, Accel: r.Accel,
		Disks: []vmm.Disk{{Path: spec.Base, ReadOnly: true}, {Path: spec.Overlay}},
	}
	release := func() {}
	if spec.Network == NetworkNAT {
		if r.Net != nil {
			n, keys, rel, err := r.Net(ctx, id)
			if err != nil {
				return nil, fmt.Errorf("build vm network: %w", err)
			}
			vs.Net, release = n, rel
			if keys != "" {
				cmdline = append(cmdline, keys)
			}
		} else {
			vs.Net = &vmm.Net{Mode: vmm.NetUser, MAC: fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])}
			cmdline = append(cmdline, "banger.ip="+vmm.UserNetGuestCIDR, "banger.gw="+vmm.UserNetGateway,
				"banger.dns="+vmm.UserNetDNS, "banger.mac="+vs.Net.MAC)
		}
	}
	vs.Cmdline = strings.Join(cmdline, " ")
	cleanup := func() {
		release()
		os.RemoveAll(vs.RunDir)
	}
	timeout := r.BootTimeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	bctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	inst, err := r.Driver.Boot(bctx, vs)
	if err != nil {
		cleanup()
		return nil, err
	}
	kill := func() {
		_ = inst.Kill(syscall.SIGKILL)
		wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		_, _ = inst.Wait(wctx)
		wcancel()
		cleanup()
	}
	conn, err := inst.DialAgent(bctx)
	if err != nil {
		err = fmt.Errorf("connecting to the build vm's agent: %w%s", err, consoleTail(inst))
		kill()
		return nil, err
	}
	c, err := agentclient.NewContext(bctx, conn)
	if err != nil {
		err = fmt.Errorf("build vm agent handshake: %w%s", err, consoleTail(inst))
		kill()
		return nil, err
	}
	return &vmMachine{Client: c, inst: inst, kill: kill, cleanup: cleanup, overlay: spec.Overlay}, nil
}

func consoleTail(inst vmm.Instance) string {
	b, err := os.ReadFile(inst.ConsoleLog())
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "\nconsole:\n" + string(b)
}

type vmMachine struct {
	*agentclient.Client
	inst    vmm.Instance
	kill    func()
	cleanup func()
	stopped bool
	overlay string
}

// Stop asks the agent to sync and power off, waits for the VMM to exit,
// and kills it when that takes too long.
func (m *vmMachine) Stop(ctx context.Context) error {
	if m.stopped {
		return nil
	}
	m.stopped = true
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := m.Shutdown(sctx, agentproto.ShutdownPoweroff)
	cancel()
	m.Close()
	if err == nil {
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		st, werr := m.inst.Wait(wctx)
		wcancel()
		if werr == nil {
			m.cleanup()
			if st.Known && !st.Success() {
				return fmt.Errorf("build vm exited with %s", st)
			}
			discardFree(ctx, m.overlay)
			return nil
		}
		err = werr
	}
	m.kill()
	return fmt.Errorf("stopping the build vm cleanly: %w", err)
}

// discardFree punches holes where the stopped overlay's filesystem has
// free blocks (files a step wrote then deleted, like downloaded packages),
// so cached states take only what they hold. Best effort: e2fsck's
// discard on an image file is fallocate(PUNCH_HOLE).
func discardFree(ctx context.Context, overlay string) {
	_ = exec.CommandContext(ctx, "e2fsck", "-f", "-y", "-E", "discard", overlay).Run()
}

// RootNames lists the top-level names of base and of the overlay's upper
// directory with debugfs (the overlay is not mounted on the host).
func (r *VMRunner) RootNames(ctx context.Context, base, overlay string) ([]string, error) {
	names, err := debugfsNames(ctx, base, "/")
	if err != nil {
		return nil, err
	}
	upper, err := debugfsNames(ctx, overlay, "/upper")
	if err != nil {
		return nil, err
	}
	return append(names, upper...), nil
}

// debugfsNames lists a directory of an ext4 image.
func debugfsNames(ctx context.Context, img, dir string) ([]string, error) {
	cmd := exec.CommandContext(ctx, "debugfs", "-R", "ls -p "+dir, img)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("debugfs ls %s %s: %w: %s", img, dir, err, strings.TrimSpace(stderr.String()))
	}
	if strings.Contains(stderr.String(), "File not found") {
		return nil, nil
	}
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// /inode/mode/uid/gid/name/size/
		f := strings.Split(sc.Text(), "/")
		if len(f) < 7 {
			continue
		}
		if n := f[5]; n != "." && n != ".." && n != "" {
			names = append(names, n)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return names, nil
}
