package agent

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agentproto"
)

// Where the agent installs itself in a systemd image.
const (
	ServiceBinary = "/usr/local/lib/banger/banger-agent"
	ServiceUnit   = "/etc/systemd/system/banger-agent.service"
	serviceWants  = "/etc/systemd/system/multi-user.target.wants/banger-agent.service"
)

// UnitFile is the systemd unit that runs the agent after the handover.
// It has no default dependencies so that it starts early and is not held
// up by the image's units; KillMode=process keeps processes started
// through exec alive across agent restarts.
const UnitFile = `[Unit]
Description=banger guest agent
Documentation=https://github.com/bangerdev/banger
DefaultDependencies=no
After=local-fs.target

[Service]
Type=simple
ExecStart=` + ServiceBinary + ` serve
Restart=always
RestartSec=1
KillMode=process
OOMScoreAdjust=-900

[Install]
WantedBy=multi-user.target
`

// isSystemdImage reports whether root's /sbin/init is systemd.
func isSystemdImage(root string) bool {
	p, err := resolveIn(root, "/sbin/init")
	return err == nil && filepath.Base(p) == "systemd"
}

// resolveIn resolves path's symlinks as if root were "/" (absolute links
// stay inside root) and returns the resolved path relative to root.
func resolveIn(root, path string) (string, error) {
	todo := strings.Split(strings.Trim(path, "/"), "/")
	resolved := "/"
	for hops := 0; len(todo) > 0; {
		part := todo[0]
		todo = todo[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			resolved = filepath.Dir(resolved)
			continue
		}
		next := filepath.Join(resolved, part)
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			resolved = next
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("resolving %s: too many links", path)
		}
		l, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(l) {
			resolved = "/"
		}
		todo = append(strings.Split(strings.Trim(l, "/"), "/"), todo...)
	}
	return resolved, nil
}

// installService copies the running binary into the root and enables the
// agent unit.
func installService() error {
	if err := os.MkdirAll(filepath.Dir(ServiceBinary), 0o755); err != nil {
		return err
	}
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		return fmt.Errorf("opening own binary: %w", err)
	}
	defer src.Close()
	tmp := ServiceBinary + ".tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return fmt.Errorf("copying own binary: %w", err)
	}
	if err := dst.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, ServiceBinary); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(serviceWants), 0o755); err != nil {
		return err
	}
	if err := writeEtcFile(ServiceUnit, UnitFile); err != nil {
		return fmt.Errorf("writing %s: %w", ServiceUnit, err)
	}
	_ = os.Remove(serviceWants)
	if err := os.Symlink(ServiceUnit, serviceWants); err != nil {
		return fmt.Errorf("enabling %s: %w", ServiceUnit, err)
	}
	return nil
}

// systemd's signals for an orderly poweroff and reboot (SIGRTMIN+4 and
// SIGRTMIN+5, with glibc's SIGRTMIN of 34).
const (
	sigSystemdPoweroff = unix.Signal(34 + 4)
	sigSystemdReboot   = unix.Signal(34 + 5)
)

// systemdShutdown asks systemd (PID 1) for a clean stop.
func systemdShutdown(exit string) func(agentproto.ShutdownMode) {
	return func(mode agentproto.ShutdownMode) {
		sig := sigSystemdPoweroff
		if rebootCmd(mode, exit) == unix.LINUX_REBOOT_CMD_RESTART {
			sig = sigSystemdReboot
		}
		_ = unix.Kill(1, sig)
	}
}
