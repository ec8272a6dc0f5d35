package agent

import (
	"os/exec"
	"sync"
	"time"
)

// basicTargetTimeout bounds how long a command waits for systemd's
// basic.target; past it the command runs anyway.
const basicTargetTimeout = 90 * time.Second

// sysReady holds commands back, in a guest booted into systemd, until
// basic.target is active: sockets listen (socket-activated daemons such as
// Docker start on first use), mounts and sysinit are done. The agent itself
// starts before that, so that the host sees a VM as up early; commands run
// at that moment would find half a system. Once reached it is never
// checked again.
type sysReady struct {
	mu    sync.Mutex
	done  bool
	probe func() bool // reports whether basic.target is active
	logf  func(string, ...any)
}

func newSysReady(logf func(string, ...any)) *sysReady {
	return &sysReady{logf: logf, probe: func() bool {
		return exec.Command("systemctl", "is-active", "--quiet", "basic.target").Run() == nil
	}}
}

// wait returns once basic.target is active, or after timeout.
func (r *sysReady) wait(timeout time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	start := time.Now()
	for !r.probe() {
		if time.Since(start) > timeout {
			r.logf("basic.target not active after %v: running commands anyway", timeout)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		r.logf("commands waited %v for basic.target", d.Round(time.Millisecond))
	}
	r.done = true
}
