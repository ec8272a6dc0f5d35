// Package vmproc runs VMM processes detached from the caller and watches
// them, whether this process started them or adopted them after a restart.
//
// A started process gets its own session (so terminal signals and the
// caller's death do not reach it), /dev/null as stdin and a log file as
// stdout/stderr (a pipe would break when the caller dies). It is reaped by a
// goroutine blocked in wait, which records its exit status. An attached
// (adopted) process is not our child: it is watched through a pidfd (readable
// once the process exits, even before its parent reaps it) or, on kernels
// without pidfd_open, by polling /proc; its exit status is unknown.
package vmproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/vmm"
)

// Command is a process to start.
type Command struct {
	Path string
	Args []string // without argv[0]
	Dir  string
	// LogFile receives stdout and stderr (truncated at start).
	LogFile string
}

// Process is a started or attached VMM process.
type Process struct {
	pid       int
	startTime uint64
	cmd       *exec.Cmd // nil when attached
	pidfd     *os.File  // nil when started, or when pidfd_open is unavailable

	done   chan struct{}
	mu     sync.Mutex
	status vmm.ExitStatus
}

// Start launches c detached and starts reaping it.
func Start(c Command) (*Process, error) {
	log, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening process log: %w", err)
	}
	defer log.Close()
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Dir = c.Dir
	cmd.Stdin = nil // /dev/null
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", c.Path, err)
	}
	p := &Process{pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	// The child exists from fork on, so its start time is readable now;
	// it cannot be reused before we reap it below.
	if st, err := StartTimeOf(p.pid); err == nil {
		p.startTime = st.StartTime
	}
	go p.reap()
	return p, nil
}

func (p *Process) reap() {
	err := p.cmd.Wait()
	st := vmm.ExitStatus{Known: true}
	if ps := p.cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			if ws.Signaled() {
				st.Signal = ws.Signal()
			} else {
				st.Code = ws.ExitStatus()
			}
		}
	} else if err != nil {
		st.Known = false
	}
	p.finish(st)
}

func (p *Process) finish(st vmm.ExitStatus) {
	p.mu.Lock()
	p.status = st
	p.mu.Unlock()
	close(p.done)
}

// ErrGone is returned by Attach when the process no longer exists or the pid
// now names a different process.
var ErrGone = errors.New("process is gone")

// Attach watches an existing process. It fails with ErrGone unless pid is
// alive with the given start time and, when mustContain is not empty, its
// command line has an argument containing mustContain.
func Attach(pid int, startTime uint64, mustContain string) (*Process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("attaching to pid %d: %w", pid, ErrGone)
	}
	p := &Process{pid: pid, startTime: startTime, done: make(chan struct{})}
	// Open the pidfd before checking identity: if the checks pass, the
	// pidfd refers to the checked process even if the pid is reused later.
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	switch {
	case err == nil:
		p.pidfd = os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid))
	case errors.Is(err, unix.ESRCH):
		return nil, fmt.Errorf("attaching to pid %d: %w", pid, ErrGone)
	case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EPERM):
		// Fall back to polling /proc.
	default:
		return nil, fmt.Errorf("attaching to pid %d: pidfd_open: %w", pid, err)
	}
	if err := checkIdentity(pid, startTime, mustContain); err != nil {
		if p.pidfd != nil {
			p.pidfd.Close()
		}
		return nil, err
	}
	go p.watch()
	return p, nil
}

func checkIdentity(pid int, startTime uint64, mustContain string) error {
	st, err := StartTimeOf(pid)
	if err != nil {
		return fmt.Errorf("attaching to pid %d: %w", pid, ErrGone)
	}
	if st.StartTime != startTime {
		return fmt.Errorf("attaching to pid %d: start time %d, expected %d (pid reused): %w",
			pid, st.StartTime, startTime, ErrGone)
	}
	if st.Zombie() {
		return fmt.Errorf("attaching to pid %d: process has exited: %w", pid, ErrGone)
	}
	if mustContain == "" {
		return nil
	}
	args, err := CmdlineOf(pid)
	if err != nil {
		return fmt.Errorf("attaching to pid %d: %w", pid, ErrGone)
	}
	for _, a := range args {
		if strings.Contains(a, mustContain) {
			return nil
		}
	}
	return fmt.Errorf("attaching to pid %d: its command line does not mention %s: %w", pid, mustContain, ErrGone)
}

func (p *Process) watch() {
	defer p.finish(vmm.ExitStatus{Known: false})
	if p.pidfd != nil {
		rc, err := p.pidfd.SyscallConn()
		if err == nil {
			err = rc.Read(func(fd uintptr) bool {
				n, _ := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
				return n > 0
			})
		}
		if err == nil {
			return
		}
		// The pidfd could not be polled: fall back to /proc.
	}
	for p.alive() {
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *Process) alive() bool {
	st, err := StartTimeOf(p.pid)
	return err == nil && st.StartTime == p.startTime && !st.Zombie()
}

// PID returns the process id.
func (p *Process) PID() int { return p.pid }

// StartTime returns the process start time (/proc/<pid>/stat field 22).
func (p *Process) StartTime() uint64 { return p.startTime }

// Child reports whether this process started p (and so knows its status).
func (p *Process) Child() bool { return p.cmd != nil }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Status returns the exit status; it is meaningful once Done is closed.
func (p *Process) Status() vmm.ExitStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// Wait waits for the process to exit or ctx to end.
func (p *Process) Wait(ctx context.Context) (vmm.ExitStatus, error) {
	select {
	case <-p.done:
		return p.Status(), nil
	case <-ctx.Done():
		return vmm.ExitStatus{}, fmt.Errorf("waiting for pid %d: %w", p.pid, ctx.Err())
	}
}

// Signal sends sig to the process. It never signals a reused pid: children
// are signalled through Go's process handle, attached processes through
// their pidfd (or after re-checking the start time when there is none).
// Signalling an exited process returns os.ErrProcessDone.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return os.ErrProcessDone
	}
	var err error
	switch {
	case p.cmd != nil:
		err = p.cmd.Process.Signal(sig)
	case p.pidfd != nil:
		err = p.pidfdSignal(sig)
		if errors.Is(err, unix.ESRCH) {
			err = os.ErrProcessDone
		}
	default:
		if !p.alive() {
			return os.ErrProcessDone
		}
		err = unix.Kill(p.pid, sig)
	}
	if err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signalling pid %d: %w", p.pid, err)
	}
	return err
}

// Release frees the pidfd of an attached process after it has exited.
func (p *Process) Release() {
	if p.pidfd != nil && p.Exited() {
		p.pidfd.Close()
	}
}

func (p *Process) pidfdSignal(sig syscall.Signal) error {
	// Not pidfd.Fd(): that would switch the fd to blocking mode and take
	// it out of the poller watch() waits in.
	rc, err := p.pidfd.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.PidfdSendSignal(int(fd), sig, nil, 0)
	}); err != nil {
		return err
	}
	return serr
}

// Kill is Signal for callers that stop a VMM: signalling a process that
// already exited is not an error.
func (p *Process) Kill(sig syscall.Signal) error {
	if err := p.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// LogTail returns the last n lines of a log file joined on one line, or ""
// when it is missing or empty (used in VMM start-failure messages).
func LogTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}
