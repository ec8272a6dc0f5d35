package firecracker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bangerdev/banger/internal/vmm"
)

// Files in a VM's run dir (or, for sockets, in its jail root).
const (
	apiSocketName  = "fc.sock"
	vsockName      = "v.sock"
	consoleLogName = "console.log"
	logName        = "firecracker.log"
	metricsName    = "metrics.json"
	pidFileName    = "firecracker.pid"
	jailFileName   = "jail.json"
)

// layout is where one VM's files are on the host.
type layout struct {
	RunDir string
	// SockDir holds the API and vsock sockets: the run dir (or the jail
	// root), or a short symlink to it when paths would exceed the unix
	// socket limit.
	SockDir     string
	APISocket   string
	VsockSocket string
	ConsoleLog  string
	// Log and Metrics are Firecracker's own log and metrics files. Under
	// the jailer they live in the jail while it runs and the log is moved
	// to the run dir when it is removed.
	Log     string
	Metrics string
	PIDFile string
}

func newLayout(runDir, sockDir, dataDir string) layout {
	return layout{
		RunDir:      runDir,
		SockDir:     sockDir,
		APISocket:   filepath.Join(sockDir, apiSocketName),
		VsockSocket: filepath.Join(sockDir, vsockName),
		ConsoleLog:  filepath.Join(runDir, consoleLogName),
		Log:         filepath.Join(dataDir, logName),
		Metrics:     filepath.Join(dataDir, metricsName),
		PIDFile:     filepath.Join(runDir, pidFileName),
	}
}

// layoutOf rebuilds the layout of an identity (for Adopt).
func layoutOf(id vmm.Identity, j *jail) layout {
	data := id.RunDir
	if j != nil {
		data = j.Root
	}
	l := newLayout(id.RunDir, filepath.Dir(id.ControlSocket), data)
	l.APISocket, l.VsockSocket, l.PIDFile = id.ControlSocket, id.AgentSocket, id.PIDFile
	if id.ConsoleLog != "" {
		l.ConsoleLog = id.ConsoleLog
	}
	return l
}

func (l layout) identity(p interface {
	PID() int
	StartTime() uint64
}) vmm.Identity {
	return vmm.Identity{
		VMM: Name, PID: p.PID(), StartTime: p.StartTime(), RunDir: l.RunDir,
		ControlSocket: l.APISocket, AgentSocket: l.VsockSocket, ConsoleLog: l.ConsoleLog,
		PIDFile: l.PIDFile, Accel: vmm.AccelKVM,
	}
}

// removeRuntimeFiles removes what a Firecracker process leaves behind:
// sockets (including vsock listener sockets <v.sock>_<port>), the pidfile
// and the short socket-dir symlink. Logs stay.
func removeRuntimeFiles(l layout) {
	for _, p := range []string{l.APISocket, l.VsockSocket, l.PIDFile} {
		if p != "" {
			_ = os.Remove(p)
		}
	}
	if l.VsockSocket != "" {
		if m, err := filepath.Glob(l.VsockSocket + "_*"); err == nil {
			for _, p := range m {
				_ = os.Remove(p)
			}
		}
	}
	if l.SockDir == "" || l.SockDir == filepath.Clean(l.RunDir) {
		return
	}
	if fi, err := os.Lstat(l.SockDir); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		_ = os.Remove(l.SockDir)
	}
}

// writePIDFile records pid in the run dir; clearStale reads it back.
func writePIDFile(path string, pid int) error {
	if err := os.WriteFile(path, fmt.Appendf(nil, "%d\n", pid), 0o600); err != nil {
		return fmt.Errorf("writing pidfile: %w", err)
	}
	return nil
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale %s: %w", p, err)
	}
	return nil
}
