package firecracker_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/firecracker"
)

// JailerEnv names the jailer binary the jailer tests use.
const jailerEnv = "BANGER_JAILER_BIN"

func jailerBinary(t *testing.T) string {
	t.Helper()
	p := os.Getenv(jailerEnv)
	if p == "" {
		t.Skip("no jailer: set $" + jailerEnv + " (from a Firecracker release tarball)")
	}
	if os.Geteuid() != 0 {
		t.Skip("the jailer needs root")
	}
	return p
}

func procUID(t *testing.T, pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "Uid:"); ok {
			return strings.Fields(rest)[0]
		}
	}
	return ""
}

// TestJailer boots the real Firecracker under the real jailer: hard-linked
// files, the jail user, adoption, and removal of the chroot on exit and
// after a crash nobody watched.
func TestJailer(t *testing.T) {
	bin := fcBinary(t)
	jailer := jailerBinary(t)
	needKVMDevice(t)
	spec := processSpec(t, filepath.Join(t.TempDir(), "run"))
	vmDir := filepath.Dir(spec.Disks[1].Path)
	d := firecracker.New(firecracker.Options{Binary: bin, JailerBinary: jailer, SkipHostCheck: true})
	inst := bootT(t, d, spec)
	id := inst.Identity()
	jailDir := filepath.Join(vmDir, "jail", filepath.Base(bin), "banger-"+spec.ID)
	root := filepath.Join(jailDir, "root")

	a, err1 := os.Stat("/proc/" + strconv.Itoa(id.PID) + "/root")
	b, err2 := os.Stat(root)
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		t.Errorf("firecracker root is not %s (%v, %v)", root, err1, err2)
	}
	if uid := procUID(t, id.PID); uid != "65534" {
		t.Errorf("firecracker runs as uid %s, want 65534", uid)
	}
	for i, dk := range spec.Disks {
		in := filepath.Join(root, "vd"+string(rune('a'+i))+".img")
		a, err1 := os.Stat(in)
		b, err2 := os.Stat(dk.Path)
		if err1 != nil || err2 != nil || !os.SameFile(a, b) {
			t.Errorf("%s is not a hard link of %s (%v, %v)", in, dk.Path, err1, err2)
			continue
		}
		owner := a.Sys().(*syscall.Stat_t).Uid
		if !dk.ReadOnly && owner != 65534 {
			t.Errorf("writable disk %s owned by %d", in, owner)
		}
	}
	ctx := ctxT(t, 20*time.Second)
	cfg, err := apiOf(t, inst).VMConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BootSource == nil || cfg.BootSource.KernelImagePath != "/vmlinux" || len(cfg.Drives) != 3 ||
		cfg.Drives[1].PathOnHost != "/vdb.img" || cfg.Vsock == nil || cfg.Vsock.UDSPath != "/v.sock" {
		t.Errorf("jailed config %+v", cfg)
	}
	if _, err := os.Stat(filepath.Join(spec.RunDir, "jail.json")); err != nil {
		t.Error(err)
	}

	// Adoption checks the jail; then a SIGKILL removes the chroot and
	// keeps Firecracker's log in the run dir.
	d2 := firecracker.New(firecracker.Options{Binary: bin, JailerBinary: jailer, SkipHostCheck: true})
	adopted, err := d2.Adopt(ctx, spec, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := adopted.Kill(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := inst.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := adopted.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	noLeftovers(t, id)
	if _, err := os.Stat(filepath.Join(vmDir, "jail")); !os.IsNotExist(err) {
		t.Errorf("jail not removed: %v", err)
	}
	for _, dk := range spec.Disks {
		if _, err := os.Stat(dk.Path); err != nil {
			t.Errorf("jail removal took the disk: %v", err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(spec.RunDir, "firecracker.log")); err != nil || !strings.Contains(string(b), "Running Firecracker") {
		t.Errorf("firecracker log not kept: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(spec.RunDir, "jail.json")); !os.IsNotExist(err) {
		t.Error("jail record left")
	}
}

// TestJailerCrashWhileUnwatched kills a jailed VM that no instance
// watches (the daemon was down): the next Adopt reports it gone and
// removes the chroot.
func TestJailerCrashWhileUnwatched(t *testing.T) {
	bin := fcBinary(t)
	jailer := jailerBinary(t)
	needKVMDevice(t)
	spec := processSpec(t, filepath.Join(t.TempDir(), "run"))
	base := t.TempDir()
	d := firecracker.New(firecracker.Options{Binary: bin, JailerBinary: jailer, SkipHostCheck: true, ChrootBaseDir: filepath.Join(base, "jails")})
	inst := bootT(t, d, spec)
	id := inst.Identity()
	// Simulate the daemon dying first: the jail record stays, then the
	// VM dies. Copy the record, since our own watcher cleans up.
	rec, err := os.ReadFile(filepath.Join(spec.RunDir, "jail.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(id.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := inst.Wait(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Recreate what an unwatched crash leaves: the record, the chroot and
	// a dead socket.
	jailRoot := filepath.Join(base, "jails", filepath.Base(bin), "banger-"+spec.ID, "root")
	if err := os.MkdirAll(jailRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(jailRoot, "vdb.img"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(spec.RunDir, "jail.json"), rec, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = firecracker.New(firecracker.Options{Binary: bin, JailerBinary: jailer, SkipHostCheck: true}).Adopt(ctxT(t, 10*time.Second), spec, id)
	if errkind.Of(err) != errkind.NotFound {
		t.Fatalf("adopt of a dead jailed vm: %v", err)
	}
	if _, err := os.Stat(filepath.Join(base, "jails")); !os.IsNotExist(err) {
		t.Errorf("chroot of the dead vm not removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(spec.RunDir, "jail.json")); !os.IsNotExist(err) {
		t.Error("jail record left")
	}
}

// TestJailerRefusesNodev checks a chroot base on a nodev mount is refused
// with a clear error before anything starts.
func TestJailerRefusesNodev(t *testing.T) {
	bin := fcBinary(t)
	jailer := jailerBinary(t)
	dir := t.TempDir()
	if err := runCmd("mount", "-t", "tmpfs", "-o", "nodev,size=16m", "tmpfs", dir); err != nil {
		t.Skipf("cannot mount a nodev tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = runCmd("umount", dir) })
	spec := processSpec(t, filepath.Join(t.TempDir(), "run"))
	d := firecracker.New(firecracker.Options{Binary: bin, JailerBinary: jailer, SkipHostCheck: true, ChrootBaseDir: filepath.Join(dir, "jails")})
	_, err := d.Boot(ctxT(t, 20*time.Second), spec)
	if errkind.Of(err) != errkind.InvalidArgument || !strings.Contains(err.Error(), "nodev") {
		t.Fatalf("boot with a nodev chroot base: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "jails")); len(ents) != 0 {
		t.Errorf("jail left: %v", ents)
	}
	noLeftovers(t, vmm.Identity{RunDir: spec.RunDir})
}
