package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/vmproc"
)

type instance struct {
	id   vmm.Identity
	proc *vmproc.Process
	done chan struct{} // closed once the process exited and files are removed
}

var _ vmm.Instance = (*instance)(nil)

func newInstance(id vmm.Identity, p *vmproc.Process) *instance {
	in := &instance{id: id, proc: p, done: make(chan struct{})}
	go func() {
		<-p.Done()
		removeRuntimeFiles(id.RunDir, layout{
			QMPSocket: id.ControlSocket, AgentSocket: id.AgentSocket, PIDFile: id.PIDFile,
		})
		p.Release()
		close(in.done)
	}()
	return in
}

// removeRuntimeFiles removes what a QEMU process leaves when it cannot clean
// up itself (SIGKILL): sockets, pidfile, and the short socket-dir symlink.
// Logs stay.
func removeRuntimeFiles(runDir string, f layout) {
	for _, p := range []string{f.QMPSocket, f.AgentSocket, f.PIDFile} {
		if p != "" {
			_ = os.Remove(p)
		}
	}
	if f.QMPSocket == "" {
		return
	}
	link := filepath.Dir(f.QMPSocket)
	if link == filepath.Clean(runDir) {
		return
	}
	if target, err := os.Readlink(link); err == nil && target == runDir {
		_ = os.Remove(link)
	}
}

func (in *instance) Identity() vmm.Identity { return in.id }

func (in *instance) ConsoleLog() string { return in.id.ConsoleLog }

// DialAgent connects to the agent's virtio-serial socket, retrying while it
// does not exist yet. QEMU serves one client at a time: a second connection
// is accepted only after the first closes.
func (in *instance) DialAgent(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "unix", in.id.AgentSocket)
		if err == nil {
			return conn, nil
		}
		if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("dialing agent: %w", err)
		}
		select {
		case <-in.done:
			return nil, fmt.Errorf("dialing agent: qemu has exited (%s)", in.proc.Status())
		case <-ctx.Done():
			return nil, fmt.Errorf("dialing agent: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Shutdown presses the ACPI power button and waits for QEMU to exit. The
// guest must handle the button (the agent's poweroff is the primary stop
// path); on ctx expiry the VM is left running.
func (in *instance) Shutdown(ctx context.Context) error {
	select {
	case <-in.done:
		return nil
	default:
	}
	if err := qmpDo(ctx, in.id.ControlSocket, "system_powerdown", nil); err != nil {
		select {
		case <-in.done: // exited meanwhile
			return nil
		default:
			return fmt.Errorf("requesting powerdown: %w", err)
		}
	}
	if _, err := in.Wait(ctx); err != nil {
		return fmt.Errorf("waiting for guest powerdown: %w", err)
	}
	return nil
}

// Quit asks QEMU itself to exit (no guest shutdown) through QMP.
func (in *instance) Quit(ctx context.Context) error {
	err := qmpDo(ctx, in.id.ControlSocket, "quit", nil)
	if _, werr := in.Wait(ctx); werr != nil {
		if err != nil {
			return fmt.Errorf("quitting qemu: %w", err)
		}
		return werr
	}
	return nil
}

// Kill signals QEMU. Killing an exited process is not an error.
func (in *instance) Kill(sig syscall.Signal) error { return in.proc.Kill(sig) }

// Wait implements vmm.Instance.
func (in *instance) Wait(ctx context.Context) (vmm.ExitStatus, error) {
	select {
	case <-in.done:
		return in.proc.Status(), nil
	case <-ctx.Done():
		return vmm.ExitStatus{}, fmt.Errorf("waiting for qemu pid %d: %w", in.id.PID, ctx.Err())
	}
}
