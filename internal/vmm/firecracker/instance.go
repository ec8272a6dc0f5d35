package firecracker

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"syscall"

	"github.com/bangerdev/banger/internal/agentclient"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/vmproc"
)

type instance struct {
	id    vmm.Identity
	files layout
	jail  *jail // nil without the jailer
	proc  *vmproc.Process
	done  chan struct{} // closed once the process exited and files are removed
}

var _ vmm.Instance = (*instance)(nil)

func newInstance(id vmm.Identity, l layout, j *jail, p *vmproc.Process) *instance {
	in := &instance{id: id, files: l, jail: j, proc: p, done: make(chan struct{})}
	go func() {
		<-p.Done()
		removeRuntimeFiles(l)
		if j != nil {
			j.remove(l.RunDir)
		}
		p.Release()
		close(in.done)
	}()
	return in
}

func (in *instance) Identity() vmm.Identity { return in.id }

func (in *instance) ConsoleLog() string { return in.id.ConsoleLog }

// LogPath is Firecracker's own log (in the run dir once the jail is gone).
func (in *instance) LogPath() string { return in.files.Log }

// API returns a client for the instance's API socket.
func (in *instance) API() *Client { return NewClient(in.files.APISocket) }

// DialAgent connects to the guest agent's vsock port through Firecracker's
// vsock socket, retrying while the guest is not listening yet.
func (in *instance) DialAgent(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-in.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	conn, err := agentclient.DialVsock(ctx, in.id.AgentSocket, AgentVsockPort)
	if err != nil {
		select {
		case <-in.done:
			return nil, fmt.Errorf("dialing agent: firecracker has exited (%s)", in.proc.Status())
		default:
		}
		return nil, fmt.Errorf("dialing agent: %w", err)
	}
	return conn, nil
}

// Shutdown sends Ctrl+Alt+Del (the guest's init turns it into an orderly
// stop: banger-agent disables the kernel's immediate reboot on Ctrl+Alt+Del
// and powers off on SIGINT) and waits for Firecracker to exit. The agent's
// own shutdown is the primary stop path; on ctx expiry the VM is left
// running.
func (in *instance) Shutdown(ctx context.Context) error {
	select {
	case <-in.done:
		return nil
	default:
	}
	if err := in.API().Action(ctx, ActionSendCtrlAltDel); err != nil {
		select {
		case <-in.done: // exited meanwhile
			return nil
		default:
			return fmt.Errorf("sending ctrl+alt+del: %w", err)
		}
	}
	if _, err := in.Wait(ctx); err != nil {
		return fmt.Errorf("waiting for guest shutdown: %w", err)
	}
	return nil
}

// Kill signals Firecracker. Killing an exited process is not an error.
func (in *instance) Kill(sig syscall.Signal) error { return in.proc.Kill(sig) }

// Wait implements vmm.Instance.
func (in *instance) Wait(ctx context.Context) (vmm.ExitStatus, error) {
	select {
	case <-in.done:
		return in.proc.Status(), nil
	case <-ctx.Done():
		return vmm.ExitStatus{}, fmt.Errorf("waiting for firecracker pid %d: %w", in.id.PID, ctx.Err())
	}
}

// startFailure describes a Firecracker that exited while starting.
func (in *instance) startFailure() error {
	<-in.done
	return fmt.Errorf("firecracker exited during start (%s): %s", in.proc.Status(), in.logTails())
}

// logTails returns the end of Firecracker's log and of the console (where
// its stderr goes).
func (in *instance) logTails() string {
	var s string
	t := vmproc.LogTail(in.files.Log, 5)
	if t == "" && in.jail != nil {
		t = vmproc.LogTail(filepath.Join(in.files.RunDir, logName), 5) // moved out of the removed jail
	}
	if t != "" {
		s = "log: " + t
	}
	if t := vmproc.LogTail(in.files.ConsoleLog, 5); t != "" {
		if s != "" {
			s += "; "
		}
		s += "output: " + t
	}
	if s == "" {
		return "no output"
	}
	return s
}
