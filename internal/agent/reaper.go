package agent

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Reaper collects every child that exits. An init process must reap
// orphans it inherits; it cannot then also let os/exec wait for its own
// children (both would race for the same exit status), so processes the
// agent starts are registered with the Reaper and get their status from it.
type Reaper struct {
	mu      sync.Mutex
	waiting map[int]chan unix.WaitStatus
}

// NewReaper returns a Reaper. Call Run to start reaping.
func NewReaper() *Reaper {
	return &Reaper{waiting: make(map[int]chan unix.WaitStatus)}
}

// Run reaps children until ctx ends. It wakes on SIGCHLD and also once a
// second, in case a signal was coalesced.
func (r *Reaper) Run(ctx context.Context) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		r.reapAll()
		select {
		case <-ctx.Done():
			return
		case <-sigs:
		case <-t.C:
		}
	}
}

func (r *Reaper) reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		r.mu.Lock()
		ch := r.waiting[pid]
		delete(r.waiting, pid)
		r.mu.Unlock()
		if ch != nil {
			ch <- ws
		}
	}
}

// Start starts cmd and returns a function that waits for its exit status.
// cmd must not use io.Reader/io.Writer stdio (only *os.File), because
// exec.Cmd.Wait is never called.
func (r *Reaper) Start(cmd *exec.Cmd) (func() unix.WaitStatus, error) {
	ch := make(chan unix.WaitStatus, 1)
	// Holding the lock across Start means a child that exits at once is
	// not looked up by reapAll before it is registered.
	r.mu.Lock()
	err := cmd.Start()
	if err == nil {
		r.waiting[cmd.Process.Pid] = ch
	}
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	proc := cmd.Process
	return func() unix.WaitStatus {
		ws := <-ch
		_ = proc.Release()
		return ws
	}, nil
}

// startProcess starts cmd with r when r is non-nil, else with os/exec.
func startProcess(r *Reaper, cmd *exec.Cmd) (func() unix.WaitStatus, error) {
	if r != nil {
		return r.Start(cmd)
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() unix.WaitStatus {
		_ = cmd.Wait()
		if cmd.ProcessState == nil {
			return unix.WaitStatus(255 << 8)
		}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
			return unix.WaitStatus(ws)
		}
		return unix.WaitStatus(255 << 8)
	}, nil
}
