package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/agentclient"
	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/testenv"
	"github.com/bangerdev/banger/internal/vmdisk"
)

// Per-VM disk sizes of the daemon (internal/daemon/vm_create.go): a
// sparse 16 GiB overlay and the default 8 GiB work disk.
const (
	overlayBytes = 16 << 30
	workBytes    = 8 << 30
)

// rawTemplate is the QEMU command line the driver used for a VM, taken from
// /proc/PID/cmdline while it ran, and the VM directory its paths live in.
type rawTemplate struct {
	argv  []string
	vmDir string
}

// argvFor rewrites the template's per-VM paths (disks, sockets, pidfile,
// console) into dir. Kernel, initrd and base disk stay shared.
func (rt rawTemplate) argvFor(dir string) []string {
	out := make([]string, len(rt.argv))
	for i, a := range rt.argv {
		out[i] = strings.ReplaceAll(a, rt.vmDir, dir)
	}
	return out
}

// captureTemplate finds the QEMU process of the VM in vmDir.
func captureTemplate(vmDir string) (rawTemplate, error) {
	pids := testenv.QEMUPIDs(vmDir)
	if len(pids) != 1 {
		return rawTemplate{}, fmt.Errorf("want one QEMU process for %s, found %v", vmDir, pids)
	}
	argv := testenv.ProcArgs(pids[0])
	for _, a := range argv {
		if strings.Contains(a, ".sock") && !strings.Contains(a, vmDir) {
			return rawTemplate{}, fmt.Errorf("socket outside the vm dir (%s): raw runs would share it", a)
		}
	}
	return rawTemplate{argv: argv, vmDir: vmDir}, nil
}

// rawTimes is one raw QEMU run, from the QEMU exec.
type rawTimes struct {
	agent time.Duration // the agent answered the handshake
	exec  time.Duration // `true` exited 0 in the guest
	exit  time.Duration // QEMU exited after the agent's poweroff
	// guestReady is the agent's "ready" line on the guest clock.
	guestReady time.Duration
	cpu        time.Duration // QEMU's CPU time
}

// rawRun boots the template by hand: fresh overlay and work disks are made
// first (not timed; banger's side pays for them), then QEMU is started
// directly, the agent is asked to run `true` and to power off, and the
// clock stops when QEMU exits.
func rawRun(ctx context.Context, rt rawTemplate, dir string) (rawTimes, error) {
	var t rawTimes
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return t, err
	}
	defer os.RemoveAll(dir)
	if err := vmdisk.CreateOverlay(ctx, filepath.Join(dir, "overlay.ext4"), overlayBytes); err != nil {
		return t, err
	}
	if err := vmdisk.CreateWork(ctx, filepath.Join(dir, "work.ext4"), workBytes); err != nil {
		return t, err
	}
	argv := rt.argvFor(dir)
	sock := agentSocket(argv)
	if sock == "" {
		return t, errors.New("no agent socket on the QEMU command line")
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return t, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}()

	c, err := dialAgent(ctx, sock, exited)
	if err != nil {
		return t, err
	}
	defer c.Close()
	t.agent = time.Since(start)
	code, err := c.Exec(ctx, agentproto.ExecRequest{Argv: []string{"true"}}, nil, io.Discard, io.Discard)
	if err != nil || code != 0 {
		return t, fmt.Errorf("exec true: code %d, %v", code, err)
	}
	t.exec = time.Since(start)
	if err := c.Shutdown(ctx, agentproto.ShutdownPoweroff); err != nil {
		return t, fmt.Errorf("poweroff: %w", err)
	}
	select {
	case err := <-exited:
		exited <- err // for the deferred kill
		if err != nil {
			return t, fmt.Errorf("qemu: %w", err)
		}
	case <-ctx.Done():
		return t, fmt.Errorf("qemu did not exit after poweroff: %w", ctx.Err())
	}
	t.exit = time.Since(start)
	t.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	t.guestReady, _ = guestReady(filepath.Join(dir, "console.log"))
	return t, nil
}

// dialAgent connects to the agent's virtio-serial socket and runs the
// handshake, retrying until the guest answers.
func dialAgent(ctx context.Context, sock string, exited chan error) (*agentclient.Client, error) {
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "unix", sock)
		if err == nil {
			hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			c, err := agentclient.NewContext(hctx, conn)
			cancel()
			if err == nil {
				return c, nil
			}
		}
		select {
		case err := <-exited:
			exited <- err
			return nil, fmt.Errorf("qemu exited before the agent answered: %v", err)
		case <-ctx.Done():
			return nil, fmt.Errorf("agent: %w (last error %v)", ctx.Err(), err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// agentSocket picks the agent chardev's socket path out of a QEMU argv.
func agentSocket(argv []string) string {
	for _, a := range argv {
		if !strings.Contains(a, "id=agent") {
			continue
		}
		for _, opt := range strings.Split(a, ",") {
			if p, ok := strings.CutPrefix(opt, "path="); ok {
				return p
			}
		}
	}
	return ""
}
