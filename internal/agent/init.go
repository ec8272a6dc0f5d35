package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agentproto"
)

// initProc is banger-agent running as PID 1 from the initrd.
type initProc struct {
	version  string
	log      *Logger
	cfg      BootConfig
	stopOnce sync.Once
}

// RunInit boots the guest as PID 1 and never returns: it mounts the root
// and the rest of the system, configures the network, then either hands
// over to the image's systemd or stays init and serves the host.
func RunInit(version string) {
	in := &initProc{version: version, log: NewLogger(os.Stderr)}
	// Go exits on SIGTERM, SIGINT, SIGHUP... by default; PID 1 must not.
	// (Notify, not Ignore: an ignored disposition would be inherited by
	// every process the agent starts.)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPWR)
	defer func() {
		if r := recover(); r != nil {
			in.fatal(fmt.Errorf("panic: %v", r)) // rather than "Attempted to kill init"
		}
	}()
	in.earlyMounts()
	in.log.Logf("banger-agent %s starting as init", version)
	if err := in.boot(); err != nil {
		in.fatal(err)
	}
	in.run(sigs)
}

// earlyMounts mounts /dev, /proc and /sys and makes sure fds 0-2 are the
// console.
func (in *initProc) earlyMounts() {
	_ = os.MkdirAll("/dev", 0o755)
	devErr := unix.Mount("devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755")
	if _, err := unix.FcntlInt(1, unix.F_GETFD, 0); err != nil {
		if fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0); err == nil {
			for i := 0; i < 3; i++ {
				_ = unix.Dup2(fd, i)
			}
			if fd > 2 {
				unix.Close(fd)
			}
		}
	}
	if devErr != nil && !errors.Is(devErr, unix.EBUSY) {
		in.log.Logf("mount devtmpfs /dev: %v", devErr)
	}
	for _, m := range []struct{ src, dir, fs string }{{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}} {
		_ = os.MkdirAll(m.dir, 0o555)
		if err := unix.Mount(m.src, m.dir, m.fs, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			in.log.Logf("mount %s: %v", m.dir, err)
		}
	}
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF) // Ctrl-Alt-Del becomes SIGINT
	os.Setenv("PATH", defaultPath)
}

// boot does everything up to serving: root, system mounts, identity,
// network, and the systemd handover when asked.
func (in *initProc) boot() error {
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("reading /proc/cmdline: %w", err)
	}
	in.cfg = ParseCmdline(string(cmdline))
	for _, w := range in.cfg.Warnings {
		in.log.Logf("cmdline: %s (ignored)", w)
	}
	loadModules(in.log.Logf)

	if in.cfg.Root == "" {
		in.log.Logf("no banger.root: staying in the initramfs")
	} else {
		for _, dev := range []string{in.cfg.Root, in.cfg.Overlay} {
			if dev == "" {
				continue
			}
			if err := waitBlockDevice(dev, 10*time.Second); err != nil {
				return err
			}
		}
		if err := runPlan(RootPlan(in.cfg), in.log.Logf); err != nil {
			return fmt.Errorf("mounting the root: %w", err)
		}
		if err := switchRoot(newRoot); err != nil {
			return fmt.Errorf("switching root: %w", err)
		}
		in.log.Logf("switched root to the overlay of %s", in.cfg.Root)
		if in.cfg.Work != "" {
			in.mountWork()
		}
		if in.cfg.Modules != "" {
			in.mountModules()
		}
	}
	systemd := false
	switch in.cfg.Init {
	case "systemd":
		systemd = true
	case "auto":
		systemd = in.cfg.Root != "" && isSystemdImage("/")
	}
	_ = runPlan(SystemPlan(!systemd), in.log.Logf)
	if !systemd {
		devLinks()
	}
	in.identity()
	if in.cfg.Root != "" {
		sshHostKeys("/", in.cfg.Overlay, in.log.Logf)
	}
	if err := configureNetwork(in.cfg, in.log.Logf); err != nil {
		in.log.Logf("network: %v", err)
	}
	if systemd {
		in.handOver() // returns only on failure
	}
	return nil
}

// mountWork mounts the persistent work disk at /root and seeds it from the
// base image's /root on first use. Failures are logged; /root then stays
// the overlay's.
func (in *initProc) mountWork() {
	dev := in.cfg.Work
	if err := waitBlockDevice(dev, 10*time.Second); err != nil {
		in.log.Logf("work disk: %v", err)
		return
	}
	step := MountStep{Op: "mount", Source: dev, Target: "/root", FSType: "ext4", Flags: unix.MS_NOATIME}
	if err := runStep(step); err != nil {
		in.log.Logf("work disk: %s: %v", step, err)
		return
	}
	in.log.Logf("%s", step)
	start := time.Now()
	seeded, err := SeedWorkDir(filepath.Join(BaseMount, "root"), "/root")
	switch {
	case err != nil:
		in.log.Logf("work disk: seeding /root: %v", err)
	case seeded:
		in.log.Logf("work disk: seeded /root from the image in %v", time.Since(start).Round(time.Millisecond))
	}
}

// identity sets the host name and writes /etc/hostname, /etc/hosts and
// /etc/resolv.conf.
func (in *initProc) identity() {
	if h := in.cfg.Hostname; h != "" {
		if err := unix.Sethostname([]byte(h)); err != nil {
			in.log.Logf("sethostname: %v", err)
		}
		if err := writeEtcFile("/etc/hostname", h+"\n"); err != nil {
			in.log.Logf("writing /etc/hostname: %v", err)
		}
		in.log.Logf("hostname %s", h)
	}
	if err := writeEtcFile("/etc/hosts", HostsFile(in.cfg.Hostname, in.cfg.Addr)); err != nil {
		in.log.Logf("writing /etc/hosts: %v", err)
	}
	if len(in.cfg.DNS) > 0 {
		if err := writeEtcFile("/etc/resolv.conf", ResolvConf(in.cfg.DNS)); err != nil {
			in.log.Logf("writing /etc/resolv.conf: %v", err)
		}
	}
}

// handOver installs the agent unit and execs systemd. It returns only if
// that failed, in which case the agent stays init.
func (in *initProc) handOver() {
	if err := installService(); err != nil {
		in.log.Logf("systemd handover: installing the agent unit: %v; staying init", err)
		return
	}
	in.log.Logf("handing over to systemd (agent unit %s)", ServiceUnit)
	err := syscall.Exec("/sbin/init", []string{"/sbin/init"}, os.Environ())
	in.log.Logf("exec /sbin/init: %v; staying init", err)
	_ = runPlan([]MountStep{cgroupStep}, in.log.Logf) // systemd would have mounted it
	devLinks()
}

// run is the agent-as-init main loop: reap, watch signals and the power
// button, and serve the host.
func (in *initProc) run(sigs chan os.Signal) {
	ctx := context.Background()
	reaper := NewReaper()
	go reaper.Run(ctx)
	stop := func(mode agentproto.ShutdownMode) {
		in.stopOnce.Do(func() { stopSystem(mode, in.cfg.Exit, in.log.Logf) })
	}
	go func() {
		for s := range sigs {
			switch s {
			case syscall.SIGTERM: // busybox reboot
				in.log.Logf("got %v", s)
				go stop(agentproto.ShutdownReboot)
			case syscall.SIGHUP, syscall.SIGQUIT:
				in.log.Logf("got %v (ignored)", s)
			default: // SIGINT (Ctrl-Alt-Del), SIGUSR1/2 (busybox halt/poweroff), SIGPWR
				in.log.Logf("got %v", s)
				go stop(agentproto.ShutdownPoweroff)
			}
		}
	}()
	go watchPowerButton(ctx, func() {
		in.log.Logf("power button pressed")
		go stop(agentproto.ShutdownPoweroff)
	}, in.log.Logf)
	srv := NewServer(Config{
		Version:  in.version,
		InitMode: ModeAgent,
		Shutdown: stop,
		Reaper:   reaper,
		Logf:     in.log.Logf,
	})
	in.log.Logf("ready")
	ServeChannels(ctx, srv, in.cfg.Chan, in.log.Logf)
	select {}
}

// fatal reports a boot failure and stops the VM so that the host sees it
// exit (with this message on the console) instead of hanging.
func (in *initProc) fatal(err error) {
	in.log.Logf("FATAL: %v", err)
	in.log.Logf("stopping the VM in 2s")
	time.Sleep(2 * time.Second)
	unix.Sync()
	_ = unix.Reboot(rebootCmd(agentproto.ShutdownPoweroff, in.cfg.Exit))
	select {}
}

// devLinks creates the /dev symlinks that udev or systemd would.
func devLinks() {
	for name, target := range map[string]string{
		"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2",
		"/dev/core": "/proc/kcore",
	} {
		_ = os.Symlink(target, name)
	}
}

// switchRoot makes dir the root, as switch_root(8) does: the initramfs
// cannot be pivot_root'ed, so its files are deleted (to free the memory)
// and dir is moved over / and chrooted into.
func switchRoot(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return err
	}
	if err := unix.Chdir(dir); err != nil {
		return err
	}
	if st.Type == unix.RAMFS_MAGIC || st.Type == unix.TMPFS_MAGIC {
		var rootSt unix.Stat_t
		if err := unix.Stat("/", &rootSt); err == nil {
			removeInitramfs("/", rootSt.Dev, dir)
		}
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving %s to /: %w", dir, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return unix.Chdir("/")
}

// removeInitramfs deletes what is on the initramfs (device dev) under
// path, without crossing into other file systems or into keep.
func removeInitramfs(path string, dev uint64, keep string) {
	ents, err := os.ReadDir(path)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(path, e.Name())
		if p == keep {
			continue
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil || st.Dev != dev {
			continue
		}
		if e.Type()&fs.ModeDir != 0 {
			removeInitramfs(p, dev, keep)
			_ = unix.Rmdir(p)
			continue
		}
		_ = unix.Unlink(p)
	}
}

// IsInit reports whether the process is PID 1.
func IsInit() bool { return os.Getpid() == 1 }
