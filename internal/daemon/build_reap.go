package daemon

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/bangerdev/banger/internal/vmm/vmproc"
)

// reapBuildVMs kills the build VMs a previous daemon left running (one
// killed during `image build`) and removes their run directories. A build
// VM belongs to the build request that booted it, and that request died
// with its daemon; at start-up no build of this layout can be running.
// A process is killed only when its command line names the build's run
// directory, so a recycled pid is never hit.
func (d *Daemon) reapBuildVMs() {
	dir := d.layout.BuildRunDir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return // no build ever ran here
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "build-") {
			continue
		}
		run := filepath.Join(dir, e.Name())
		pidFiles, _ := filepath.Glob(filepath.Join(run, "*.pid"))
		for _, pf := range pidFiles {
			b, err := os.ReadFile(pf)
			if err != nil {
				continue
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || pid <= 1 {
				continue
			}
			args, err := vmproc.CmdlineOf(pid)
			if err != nil || !strings.Contains(strings.Join(args, " "), run+"/") {
				continue
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
				d.log.Warn("killed a build vm left by an earlier daemon", "pid", pid, "run_dir", run)
			}
		}
		if err := os.RemoveAll(run); err != nil {
			d.log.Warn("removing a stale build vm run dir", "dir", run, "err", err)
		}
	}
}
