package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/agentclient"
	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/vmdisk"
	"github.com/bangerdev/banger/internal/vmm/qemu"
)

// rawSpec is what a raw QEMU boot reuses from a banger VM: the same
// machine, accelerator, sizing, kernel, initrd, command line and base disk.
type rawSpec struct {
	machine, mem, smp    string
	accel                []string
	kernel, initrd, args string
	base                 string
	// diskOpts are the -drive options after the file of the overlay and
	// work disks (format, cache and discard settings).
	diskOpts string
}

// qemuSpec boots a reference VM and reads its QEMU command line.
func qemuSpec(ctx context.Context, e *env) (rawSpec, error) {
	var s rawSpec
	if _, err := e.banger(ctx, append([]string{"vm", "create", "--name", "rawref"}, e.sizing...)...); err != nil {
		return s, err
	}
	defer func() { _, _ = e.banger(context.Background(), "vm", "delete", "-f", "rawref") }()
	vm, err := showVM(ctx, e, "rawref")
	if err != nil {
		return s, err
	}
	argv, err := qemuArgv(vm.Dir)
	if err != nil {
		return s, err
	}
	for i := 0; i+1 < len(argv); i++ {
		v := argv[i+1]
		switch argv[i] {
		case "-M":
			s.machine = v
		case "-m":
			s.mem = v
		case "-smp":
			s.smp = v
		case "-accel":
			s.accel = append(s.accel, "-accel", v)
		case "-enable-kvm":
			s.accel = append(s.accel, "-enable-kvm")
		case "-cpu":
			s.accel = append(s.accel, "-cpu", v)
		case "-kernel":
			s.kernel = v
		case "-initrd":
			s.initrd = v
		case "-append":
			s.args = v
		case "-drive":
			if strings.HasPrefix(v, "id=vda,") {
				f, _, _ := strings.Cut(strings.TrimPrefix(v, "id=vda,file="), ",format=")
				s.base = f
			}
			if strings.HasPrefix(v, "id=vdb,") {
				if i := strings.Index(v, ",format="); i > 0 {
					s.diskOpts = v[i:]
				}
			}
		}
	}
	if s.kernel == "" || s.base == "" || s.args == "" || s.diskOpts == "" {
		return s, fmt.Errorf("could not read the reference QEMU command line: %q", argv)
	}
	return s, nil
}

// qemuArgv finds the QEMU process whose arguments mention dir.
func qemuArgv(dir string) ([]string, error) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), "qemu-system") || !strings.Contains(string(b), dir+"/") {
			continue
		}
		return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"), nil
	}
	return nil, fmt.Errorf("no QEMU process for %s", dir)
}

type rawTimes struct{ health, exit time.Duration }

// rawBoot starts QEMU by hand with fresh overlay and work disks, waits for
// the agent's health answer, asks for poweroff and waits for the exit.
func rawBoot(ctx context.Context, s rawSpec) (rawTimes, error) {
	var t rawTimes
	dir, err := os.MkdirTemp("", "bench-rawboot-")
	if err != nil {
		return t, err
	}
	defer os.RemoveAll(dir)
	overlay, work := filepath.Join(dir, "overlay.ext4"), filepath.Join(dir, "work.ext4")
	if err := vmdisk.CreateOverlay(ctx, overlay, 16<<30); err != nil {
		return t, err
	}
	if err := vmdisk.CreateWork(ctx, work, 8<<30); err != nil {
		return t, err
	}
	sock := filepath.Join(dir, "agent.sock")
	args := append([]string{"-M", s.machine}, s.accel...)
	args = append(args, "-m", s.mem, "-smp", s.smp,
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-serial", "file:"+filepath.Join(dir, "console.log"),
		"-kernel", s.kernel, "-initrd", s.initrd, "-append", s.args,
		"-drive", "id=vda,file="+s.base+",format=raw,if=none,readonly=on", "-device", "virtio-blk-device,drive=vda",
		"-drive", "id=vdb,file="+overlay+s.diskOpts, "-device", "virtio-blk-device,drive=vdb",
		"-drive", "id=vdc,file="+work+s.diskOpts, "-device", "virtio-blk-device,drive=vdc",
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path="+sock+",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name="+qemu.AgentPortName)
	cmd := exec.Command("qemu-system-x86_64", args...)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return t, err
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() }()
	var conn net.Conn
	for {
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		if time.Since(start) > 30*time.Second {
			return t, fmt.Errorf("raw qemu: agent socket: %w", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	actx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	c, err := agentclient.NewContext(actx, conn)
	if err != nil {
		return t, err
	}
	defer c.Close()
	if _, err := c.Health(actx); err != nil {
		return t, fmt.Errorf("raw qemu: health: %w", err)
	}
	t.health = time.Since(start)
	if err := c.Shutdown(actx, agentproto.ShutdownPoweroff); err != nil {
		return t, fmt.Errorf("raw qemu: poweroff: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return t, fmt.Errorf("raw qemu: %w", err)
	}
	t.exit = time.Since(start)
	return t, nil
}
