// Command testinit is a minimal /init used by the initrd boot test: it
// loads the modules listed in /etc/modules.load, checks that the virtio
// block device and overlayfs appeared, prints a result line and powers off.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	unix.Mount("proc", "/proc", "proc", 0, "")
	unix.Mount("sysfs", "/sys", "sysfs", 0, "")
	if con, err := os.OpenFile("/dev/console", os.O_RDWR, 0); err == nil {
		for fd := 0; fd <= 2; fd++ {
			unix.Dup2(int(con.Fd()), fd)
		}
	}
	fmt.Println(run())
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func run() string {
	f, err := os.Open("/etc/modules.load")
	if err != nil {
		return "TESTINIT-FAIL " + err.Error()
	}
	defer f.Close()
	var loaded []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" {
			continue
		}
		m, err := os.Open(p)
		if err != nil {
			return "TESTINIT-FAIL " + err.Error()
		}
		err = unix.FinitModule(int(m.Fd()), "", 0)
		m.Close()
		if err != nil && err != unix.EEXIST {
			return fmt.Sprintf("TESTINIT-FAIL finit_module %s: %v", p, err)
		}
		loaded = append(loaded, strings.TrimSuffix(p[strings.LastIndex(p, "/")+1:], ".ko"))
	}
	vda := "no"
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, err := os.Stat("/sys/block/vda"); err == nil {
			vda = "yes"
			break
		}
	}
	fsys, _ := os.ReadFile("/proc/filesystems")
	overlay := "no"
	if strings.Contains(string(fsys), "\toverlay\n") {
		overlay = "yes"
	}
	return fmt.Sprintf("TESTINIT-OK loaded=%s vda=%s overlay=%s", strings.Join(loaded, ","), vda, overlay)
}
