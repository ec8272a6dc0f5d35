package agent

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ModulesLoadFile lists, one per line, the kernel modules the initrd
// carries, in load order.
const ModulesLoadFile = "/etc/modules.load"

// ReadModuleList reads a modules.load file: one path per line (relative
// paths are relative to /), blank lines and # comments ignored.
func ReadModuleList(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mods []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !filepath.IsAbs(line) {
			line = "/" + line
		}
		mods = append(mods, line)
	}
	return mods, sc.Err()
}

// loadModules loads each module with finit_module, ignoring modules that
// are already loaded (or built in).
func loadModules(logf func(string, ...any)) {
	mods, err := ReadModuleList(ModulesLoadFile)
	if errors.Is(err, os.ErrNotExist) {
		logf("modules: no %s", ModulesLoadFile)
		return
	}
	if err != nil {
		logf("modules: %v", err)
		return
	}
	start := time.Now()
	loaded := 0
	for _, m := range mods {
		if err := loadModule(m); err != nil {
			logf("modules: %s: %v", m, err)
			continue
		}
		loaded++
	}
	logf("modules: loaded %d of %d in %v", loaded, len(mods), time.Since(start).Round(time.Millisecond))
}

func loadModule(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	err = unix.FinitModule(fd, "", 0)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

// ModulesStep mounts the kernel's module tree (the disk named by
// banger.modules) read-only at /lib/modules/<release>, where modprobe and
// the kernel's module autoloading look for it.
func ModulesStep(dev, release string) MountStep {
	return MountStep{Op: "mount", Source: dev, Target: filepath.Join("/lib/modules", release), FSType: "ext4",
		Flags: unix.MS_RDONLY | unix.MS_NOATIME | unix.MS_NOSUID | unix.MS_NODEV, RetryData: "noload"}
}

// mountModules mounts the modules disk in the new root. Failures are
// logged: the guest then lacks modprobe, nothing else.
func (in *initProc) mountModules() {
	dev := in.cfg.Modules
	if err := waitBlockDevice(dev, 10*time.Second); err != nil {
		in.log.Logf("modules disk: %v", err)
		return
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		in.log.Logf("modules disk: uname: %v", err)
		return
	}
	step := ModulesStep(dev, unix.ByteSliceToString(uts.Release[:]))
	if err := runStep(step); err != nil {
		in.log.Logf("modules disk: %s: %v", step, err)
		return
	}
	in.log.Logf("%s", step)
}

// waitBlockDevice waits for dev (/dev/vdX) to exist, creating the node from
// /sys/block when devtmpfs has not.
func waitBlockDevice(dev string, timeout time.Duration) error {
	name := filepath.Base(dev)
	sysDev := filepath.Join("/sys/class/block", name, "dev")
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(dev); err == nil {
			return nil
		}
		if _, err := os.Stat(sysDev); err == nil {
			return mknodFromSys(dev, sysDev, unix.S_IFBLK)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("block device %s did not appear within %v", dev, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}
