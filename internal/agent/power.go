package agent

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agentproto"
)

// Linux input constants.
const (
	evKey       = 1
	keyPower    = 116
	inputEvSize = 24 // struct input_event on 64-bit
)

// HasKey reports whether a /sys/class/input/*/capabilities/key bitmap
// (space-separated 64-bit hex words, most significant first) has bit key.
func HasKey(bitmap string, key int) bool {
	words := strings.Fields(bitmap)
	idx := len(words) - 1 - key/64
	if idx < 0 || idx >= len(words) {
		return false
	}
	w, err := strconv.ParseUint(words[idx], 16, 64)
	return err == nil && w&(1<<(key%64)) != 0
}

// findPowerButtons returns the event devices that report KEY_POWER.
func findPowerButtons() []string {
	caps, _ := filepath.Glob("/sys/class/input/event*/device/capabilities/key")
	var devs []string
	for _, c := range caps {
		b, err := os.ReadFile(c)
		if err != nil || !HasKey(string(b), keyPower) {
			continue
		}
		ev := filepath.Base(filepath.Dir(filepath.Dir(filepath.Dir(c))))
		dev := "/dev/input/" + ev
		if _, err := os.Stat(dev); err != nil {
			_ = os.MkdirAll("/dev/input", 0o755)
			if err := mknodFromSys(dev, filepath.Join("/sys/class/input", ev, "dev"), unix.S_IFCHR); err != nil {
				continue
			}
		}
		devs = append(devs, dev)
	}
	return devs
}

// watchPowerButton calls press when an ACPI power button is pressed
// (QEMU's system_powerdown). The button may be registered a little after
// the init starts, so it looks for a while.
func watchPowerButton(ctx context.Context, press func(), logf func(string, ...any)) {
	var devs []string
	for i := 0; i < 50 && len(devs) == 0; i++ {
		if devs = findPowerButtons(); len(devs) == 0 {
			sleepCtx(ctx, 100*time.Millisecond)
		}
	}
	if len(devs) == 0 {
		if _, err := os.Stat("/sys/class/input"); err != nil {
			logf("power button: no input subsystem; ACPI power button ignored")
		} else {
			logf("power button: no event device with KEY_POWER (is evdev loaded?)")
		}
		return
	}
	for _, dev := range devs {
		f, err := os.Open(dev)
		if err != nil {
			logf("power button: %v", err)
			continue
		}
		logf("power button: watching %s", dev)
		go func() {
			defer f.Close()
			buf := make([]byte, inputEvSize*16)
			for {
				n, err := f.Read(buf)
				if err != nil {
					return
				}
				for off := 0; off+inputEvSize <= n; off += inputEvSize {
					ev := buf[off : off+inputEvSize]
					typ := binary.LittleEndian.Uint16(ev[16:18])
					code := binary.LittleEndian.Uint16(ev[18:20])
					val := int32(binary.LittleEndian.Uint32(ev[20:24]))
					if typ == evKey && code == keyPower && val == 1 {
						press()
					}
				}
			}
		}()
	}
}

// rebootCmd picks the reboot(2) command for a stop request: the
// command line's banger.exit for poweroff (Firecracker cannot power off,
// it exits on reboot), a restart for an explicit reboot.
func rebootCmd(mode agentproto.ShutdownMode, exit string) int {
	if mode == agentproto.ShutdownReboot || exit == "reboot" {
		return unix.LINUX_REBOOT_CMD_RESTART
	}
	return unix.LINUX_REBOOT_CMD_POWER_OFF
}

// stopSystem is the PID 1 shutdown: terminate every process, sync,
// unmount or remount read-only, and reboot(2). It does not return.
func stopSystem(mode agentproto.ShutdownMode, exit string, logf func(string, ...any)) {
	cmd := rebootCmd(mode, exit)
	logf("stopping (%s, banger.exit=%s)", mode, exit)
	_ = unix.Kill(-1, unix.SIGTERM)
	deadline := time.Now().Add(3 * time.Second)
	for userProcesses() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := userProcesses(); n > 0 {
		logf("killing %d remaining processes", n)
		_ = unix.Kill(-1, unix.SIGKILL)
		time.Sleep(100 * time.Millisecond)
	}
	unix.Sync()
	for _, m := range []string{"/root", "/tmp", "/dev/shm", "/dev/pts"} {
		if err := unix.Unmount(m, 0); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			if err := unix.Mount("", m, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil && m == "/root" {
				logf("remounting %s read-only: %v", m, err)
			}
		}
	}
	for _, m := range []string{"/", RWMount} {
		if err := unix.Mount("", m, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil && err != unix.ENOENT && err != unix.EINVAL {
			logf("remounting %s read-only: %v", m, err)
		}
	}
	unix.Sync()
	logf("%s", map[int]string{unix.LINUX_REBOOT_CMD_RESTART: "rebooting", unix.LINUX_REBOOT_CMD_POWER_OFF: "powering off"}[cmd])
	err := unix.Reboot(cmd)
	// Only reached if reboot(2) failed.
	logf("reboot(2): %v; halting", err)
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_HALT)
	select {}
}

// userProcesses counts processes other than init and kernel threads.
func userProcesses() int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Field 4 (ppid) follows the ")" that ends the command name.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		var state string
		var ppid int
		if _, err := fmt.Sscan(s[i+1:], &state, &ppid); err != nil {
			continue
		}
		if pid == 2 || ppid == 2 || state == "Z" {
			continue // kernel threads and zombies about to be reaped
		}
		n++
	}
	return n
}
