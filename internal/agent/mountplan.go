package agent

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Paths used while booting. The base and writable disks end up under /run
// in the new root so that shutdown can still reach them.
const (
	stageBase = "/.banger/base"
	stageRW   = "/.banger/rw"
	newRoot   = "/newroot"
	// BaseMount is where the read-only base disk stays mounted.
	BaseMount = "/run/banger/base"
	// RWMount is where the per-VM writable disk (overlay upper) stays mounted.
	RWMount = "/run/banger/rw"
)

// MountStep is one step of a mount plan.
type MountStep struct {
	Op     string // "mkdir", "mount" or "move"
	Source string
	Target string
	FSType string
	Flags  uintptr
	Data   string
	// RetryData, when set, is tried after a failed mount with Data.
	RetryData string
	Mode      os.FileMode // for mkdir
	// Optional steps only log their failure.
	Optional bool
}

func (s MountStep) String() string {
	switch s.Op {
	case "mkdir":
		return fmt.Sprintf("mkdir %s", s.Target)
	case "move":
		return fmt.Sprintf("move %s -> %s", s.Source, s.Target)
	}
	d := s.Data
	if d == "" {
		d = "-"
	}
	return fmt.Sprintf("mount %s on %s type %s (%s)", s.Source, s.Target, s.FSType, d)
}

// RootPlan is what the init does in the initramfs before switching root:
// mount the base disk read-only and the writable disk (or a tmpfs), join
// them with overlayfs at /newroot, give the new root its /run, and move
// everything the new root keeps into it.
func RootPlan(cfg BootConfig) []MountStep {
	steps := []MountStep{
		{Op: "mkdir", Target: stageBase, Mode: 0o755},
		{Op: "mkdir", Target: stageRW, Mode: 0o755},
		{Op: "mkdir", Target: newRoot, Mode: 0o755},
		{Op: "mount", Source: cfg.Root, Target: stageBase, FSType: "ext4",
			Flags: unix.MS_RDONLY | unix.MS_NOATIME, RetryData: "noload"},
	}
	if cfg.Overlay != "" {
		steps = append(steps, MountStep{Op: "mount", Source: cfg.Overlay, Target: stageRW, FSType: "ext4", Flags: unix.MS_NOATIME})
	} else {
		steps = append(steps, MountStep{Op: "mount", Source: "tmpfs", Target: stageRW, FSType: "tmpfs", Data: "mode=0755"})
	}
	steps = append(steps,
		MountStep{Op: "mkdir", Target: stageRW + "/upper", Mode: 0o755},
		MountStep{Op: "mkdir", Target: stageRW + "/work", Mode: 0o755},
		MountStep{Op: "mount", Source: "overlay", Target: newRoot, FSType: "overlay",
			Data: "lowerdir=" + stageBase + ",upperdir=" + stageRW + "/upper,workdir=" + stageRW + "/work"},
		MountStep{Op: "mkdir", Target: newRoot + "/run", Mode: 0o755},
		MountStep{Op: "mount", Source: "tmpfs", Target: newRoot + "/run", FSType: "tmpfs",
			Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=0755"},
		MountStep{Op: "mkdir", Target: newRoot + BaseMount, Mode: 0o755},
		MountStep{Op: "mkdir", Target: newRoot + RWMount, Mode: 0o755},
		MountStep{Op: "move", Source: stageBase, Target: newRoot + BaseMount},
		MountStep{Op: "move", Source: stageRW, Target: newRoot + RWMount},
	)
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		steps = append(steps,
			MountStep{Op: "mkdir", Target: newRoot + d, Mode: 0o755},
			MountStep{Op: "move", Source: d, Target: newRoot + d})
	}
	return steps
}

// SystemPlan is what the init mounts in the new root after switching:
// /tmp, /dev/pts, /dev/shm, and (when it stays PID 1) the cgroup2 tree.
func SystemPlan(agentInit bool) []MountStep {
	steps := []MountStep{
		{Op: "mount", Source: "tmpfs", Target: "/tmp", FSType: "tmpfs",
			Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777", Optional: true},
		{Op: "mount", Source: "devpts", Target: "/dev/pts", FSType: "devpts",
			Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "gid=5,mode=620,ptmxmode=666", Optional: true},
		{Op: "mount", Source: "tmpfs", Target: "/dev/shm", FSType: "tmpfs",
			Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777", Optional: true},
	}
	if agentInit {
		steps = append(steps, cgroupStep)
	}
	return steps
}

var cgroupStep = MountStep{Op: "mount", Source: "cgroup2", Target: "/sys/fs/cgroup", FSType: "cgroup2",
	Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, Optional: true}

// runPlan executes steps, logging each one.
func runPlan(steps []MountStep, logf func(string, ...any)) error {
	for _, s := range steps {
		err := runStep(s)
		if err == nil {
			logf("%s", s)
			continue
		}
		if s.Optional {
			logf("%s: %v (continuing)", s, err)
			continue
		}
		return fmt.Errorf("%s: %w", s, err)
	}
	return nil
}

func runStep(s MountStep) error {
	switch s.Op {
	case "mkdir":
		err := os.MkdirAll(s.Target, s.Mode)
		if err != nil && errors.Is(err, unix.EROFS) {
			if fi, serr := os.Stat(s.Target); serr == nil && fi.IsDir() {
				return nil
			}
		}
		return err
	case "move":
		return unix.Mount(s.Source, s.Target, "", unix.MS_MOVE, "")
	case "mount":
		if err := os.MkdirAll(s.Target, 0o755); err != nil {
			return err
		}
		err := unix.Mount(s.Source, s.Target, s.FSType, s.Flags, s.Data)
		if err != nil && s.RetryData != "" {
			if err2 := unix.Mount(s.Source, s.Target, s.FSType, s.Flags, s.RetryData); err2 == nil {
				return nil
			}
		}
		return err
	}
	return fmt.Errorf("unknown step %q", s.Op)
}
