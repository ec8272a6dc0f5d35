package firecracker

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/vmm/vmproc"
)

// clearStale refuses to start over a live Firecracker of the same run dir
// and removes what a dead one left: sockets, pidfile and a stale jail.
func clearStale(runDir string) error {
	if pid, live := liveOwner(runDir); live {
		return errkind.New(errkind.Conflict, "a firecracker process (pid %d) is already running for %s", pid, runDir)
	}
	for _, n := range []string{apiSocketName, vsockName, pidFileName} {
		if err := removeIfExists(filepath.Join(runDir, n)); err != nil {
			return err
		}
	}
	if j, err := loadJail(runDir); err == nil && j != nil {
		j.remove(runDir)
	}
	return nil
}

// liveOwner returns the process named by the run dir's pidfile when it is
// alive and is a Firecracker of that run dir.
func liveOwner(runDir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(runDir, pidFileName))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	args, err := vmproc.CmdlineOf(pid)
	if err != nil || !mentionsRunDir(pid, args, runDir) {
		return 0, false
	}
	st, err := vmproc.StartTimeOf(pid)
	return pid, err == nil && !st.Zombie()
}

// mentionsRunDir reports whether pid is a Firecracker of runDir: its
// arguments name the run dir (directly started) or its root is the jail
// recorded there.
func mentionsRunDir(pid int, args []string, runDir string) bool {
	for _, a := range args {
		if strings.Contains(a, runDir) {
			return true
		}
	}
	if j, err := loadJail(runDir); err == nil && j != nil {
		return j.isRootOf(pid)
	}
	return false
}
