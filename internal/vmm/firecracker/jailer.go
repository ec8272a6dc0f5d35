package firecracker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/fsatomic"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/vmproc"
)

// jail is one VM's jailer chroot. It is recorded in the run dir
// (jail.json) so that a later process can adopt the VM, and remove the
// chroot after a crash.
type jail struct {
	// ID is the jailer (and Firecracker) --id.
	ID string `json:"id"`
	// Base is the --chroot-base-dir; Dir is <Base>/<exec name>/<ID>, what
	// cleanup removes; Root is Dir/root, the chroot.
	Base string `json:"base"`
	Dir  string `json:"dir"`
	Root string `json:"root"`
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
}

// Paths inside the chroot.
const (
	jailKernel = "/vmlinux"
	jailInitrd = "/initrd.img"
)

func jailDisk(i int) string { return "/vd" + string(rune('a'+i)) + ".img" }

// chrootBase picks the chroot base dir of a spec: the option, else "jail"
// next to the first writable disk (same file system, so hard links work,
// and removed with the VM's directory), else in the run dir.
func (d *Driver) chrootBase(spec vmm.Spec) string {
	if d.opts.ChrootBaseDir != "" {
		return d.opts.ChrootBaseDir
	}
	for _, dk := range spec.Disks {
		if !dk.ReadOnly {
			return filepath.Join(filepath.Dir(dk.Path), "jail")
		}
	}
	return filepath.Join(spec.RunDir, "jail")
}

// prepareJail builds the chroot: hard links of the kernel, initrd and disks
// (writable disks chowned to the jail user), and empty log and metrics
// files the jailed process can write, and the VM's tap handed to the jail
// user. It records the jail in the run dir.
func (d *Driver) prepareJail(spec vmm.Spec, bin string) (*jail, guestPaths, error) {
	id := instanceID(spec.ID)
	base := d.chrootBase(spec)
	dir := filepath.Join(base, filepath.Base(bin), id)
	j := &jail{ID: id, Base: base, Dir: dir, Root: filepath.Join(dir, "root"), UID: d.opts.JailUID, GID: d.opts.JailGID}
	if err := os.RemoveAll(dir); err != nil {
		return nil, guestPaths{}, fmt.Errorf("removing stale jail %s: %w", dir, err)
	}
	if err := os.MkdirAll(j.Root, 0o755); err != nil {
		return nil, guestPaths{}, fmt.Errorf("creating jail: %w", err)
	}
	if err := checkDeviceNodes(j.Root); err != nil {
		j.remove(spec.RunDir)
		return nil, guestPaths{}, err
	}
	if err := j.save(spec.RunDir); err != nil {
		j.remove(spec.RunDir)
		return nil, guestPaths{}, err
	}
	g, err := j.populate(spec)
	if err != nil {
		j.remove(spec.RunDir)
		return nil, guestPaths{}, err
	}
	if n := spec.Net; n != nil && n.Mode == vmm.NetTap {
		if err := shareTap(n.TapName, j.UID, j.GID); err != nil {
			j.remove(spec.RunDir)
			return nil, guestPaths{}, err
		}
	}
	return j, g, nil
}

// checkDeviceNodes refuses a chroot on a file system mounted nodev (a
// tmpfs /tmp often is): the jailer creates /dev/kvm in the jail, and
// Firecracker then fails with a bare "permission denied" on it.
func checkDeviceNodes(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("checking the jail's file system: %w", err)
	}
	if st.Flags&unix.ST_NODEV != 0 {
		return errkind.WithHint(
			errkind.New(errkind.InvalidArgument, "jail %s is on a file system mounted nodev: the jailer's /dev/kvm would not open", dir),
			"put the chroot base on a file system that allows device nodes")
	}
	return nil
}

func (j *jail) populate(spec vmm.Spec) (guestPaths, error) {
	g := guestPaths{Kernel: jailKernel, Vsock: "/" + vsockName}
	if err := j.link(spec.Kernel, jailKernel, false); err != nil {
		return g, err
	}
	if spec.Initrd != "" {
		g.Initrd = jailInitrd
		if err := j.link(spec.Initrd, jailInitrd, false); err != nil {
			return g, err
		}
	}
	for i, dk := range spec.Disks {
		p := jailDisk(i)
		if err := j.link(dk.Path, p, !dk.ReadOnly); err != nil {
			return g, err
		}
		g.Disks = append(g.Disks, p)
	}
	for _, n := range []string{logName, metricsName} {
		p := filepath.Join(j.Root, n)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			return g, fmt.Errorf("creating %s in the jail: %w", n, err)
		}
		if err := os.Chown(p, j.UID, j.GID); err != nil {
			return g, fmt.Errorf("chowning %s in the jail: %w", n, err)
		}
	}
	// Firecracker binds its sockets in the chroot's top directory.
	if err := os.Chown(j.Root, j.UID, j.GID); err != nil {
		return g, fmt.Errorf("chowning the jail: %w", err)
	}
	return g, nil
}

// link hard-links src into the jail. A writable file must be linked (the
// VM writes to it) and is chowned to the jail user, which changes the
// original file's owner too. A read-only file is copied when it lives on
// another file system, and must be readable by the jail user.
func (j *jail) link(src, inJail string, writable bool) error {
	dst := filepath.Join(j.Root, inJail)
	err := os.Link(src, dst)
	if errors.Is(err, syscall.EXDEV) && !writable {
		err = fsatomic.CopyFile(src, dst)
	}
	if err != nil {
		if errors.Is(err, syscall.EXDEV) {
			return errkind.WithHint(
				errkind.New(errkind.InvalidArgument, "jail %s is on another file system than %s, which must be hard-linked into it", j.Base, src),
				"set the chroot base on the file system of the VM disks")
		}
		return fmt.Errorf("linking %s into the jail: %w", src, err)
	}
	if writable {
		if err := os.Chown(dst, j.UID, j.GID); err != nil {
			return fmt.Errorf("chowning %s for the jail: %w", src, err)
		}
		return nil
	}
	fi, err := os.Stat(dst)
	if err != nil {
		return err
	}
	if !readableBy(fi, j.UID, j.GID) {
		return errkind.WithHint(
			errkind.New(errkind.InvalidArgument, "%s (mode %v) is not readable by the jail user %d:%d", src, fi.Mode().Perm(), j.UID, j.GID),
			"make it world-readable (chmod o+r)")
	}
	return nil
}

func readableBy(fi os.FileInfo, uid, gid int) bool {
	perm := fi.Mode().Perm()
	if perm&0o004 != 0 {
		return true
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	return (int(st.Uid) == uid && perm&0o400 != 0) || (int(st.Gid) == gid && perm&0o040 != 0)
}

// args returns the jailer arguments that exec bin in the jail. The jailer
// runs in the foreground (vmproc detaches it) and execs Firecracker in
// place, so the pid stays the same.
func (j *jail) args(bin string) []string {
	a := []string{
		"--id", j.ID, "--exec-file", bin,
		"--uid", strconv.Itoa(j.UID), "--gid", strconv.Itoa(j.GID),
		"--chroot-base-dir", j.Base,
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		a = append(a, "--cgroup-version", "2")
	}
	return append(a, "--",
		"--api-sock", "/"+apiSocketName,
		"--log-path", "/"+logName, "--level", "Info", "--show-level",
		"--metrics-path", "/"+metricsName,
	)
}

func (j *jail) save(runDir string) error {
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	if err := fsatomic.WriteFile(filepath.Join(runDir, jailFileName), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("recording jail: %w", err)
	}
	return nil
}

// loadJail reads the jail recorded in runDir, or returns nil when there is
// none.
func loadJail(runDir string) (*jail, error) {
	b, err := os.ReadFile(filepath.Join(runDir, jailFileName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading jail record: %w", err)
	}
	var j jail
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("parsing jail record %s: %w", filepath.Join(runDir, jailFileName), err)
	}
	if j.ID == "" || j.Root == "" || filepath.Dir(j.Root) != j.Dir || !filepath.IsAbs(j.Dir) {
		return nil, fmt.Errorf("jail record in %s is incomplete", runDir)
	}
	return &j, nil
}

// isRootOf reports whether pid runs chrooted in the jail. The jailer
// pivots into the chroot in a new mount namespace, so the root's path is
// "/" from outside; the directory itself is compared instead.
func (j *jail) isRootOf(pid int) bool {
	a, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/root")
	if err != nil {
		return false
	}
	b, err := os.Stat(j.Root)
	return err == nil && os.SameFile(a, b)
}

// owns reports whether pid is this jail's Firecracker: chrooted in the jail
// and started with its --id.
func (j *jail) owns(pid int) bool {
	if !j.isRootOf(pid) {
		return false
	}
	args, err := vmproc.CmdlineOf(pid)
	if err != nil {
		return false
	}
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--id" && args[i+1] == j.ID {
			return true
		}
	}
	return false
}

// remove keeps Firecracker's log (moved to the run dir) and removes the
// chroot, the jail record and the base dirs left empty.
func (j *jail) remove(runDir string) {
	logDst := filepath.Join(runDir, logName)
	if src := filepath.Join(j.Root, logName); fileExists(src) {
		if err := os.Rename(src, logDst); err != nil {
			_ = fsatomic.CopyFile(src, logDst)
		}
	}
	_ = os.RemoveAll(j.Dir)
	_ = os.Remove(filepath.Dir(j.Dir)) // <base>/<exec name>, when empty
	_ = os.Remove(j.Base)
	_ = os.Remove(filepath.Join(runDir, jailFileName))
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
