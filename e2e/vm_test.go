package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/testenv"
)

// TestVM boots real microVMs through the CLI and daemon. The subtests share
// one installation (kernel import, image pull) and run in order.
func TestVM(t *testing.T) {
	e := newVMEnv(t)
	e.sub(t, "lifecycle", func(t *testing.T) { testVMLifecycle(t, e) })
	e.sub(t, "readopt", func(t *testing.T) { testVMReadopt(t, e) })
	e.sub(t, "badinput", func(t *testing.T) { testVMBadInput(t, e) })
	e.sub(t, "samename", func(t *testing.T) { testVMSameName(t, e) })
	e.sub(t, "manage", func(t *testing.T) { testVMManage(t, e) })

	// Whatever the subtests did, nothing is left running or on disk.
	if vms := e.listVMs(); len(vms) != 0 {
		t.Errorf("vms left: %+v", vms)
	}
	if left := e.vmDirs(); len(left) != 0 {
		t.Errorf("vm dirs left: %v", left)
	}
	if pids := testenv.QEMUPIDs(e.home); len(pids) != 0 {
		t.Errorf("QEMU processes left: %v", pids)
	}
}

func testVMLifecycle(t *testing.T, ve *vmEnv) {
	e := ve.env
	vm := e.createVM("life")
	if vm.State != "running" || vm.Name != "life" || vm.ImageName != "busybox" || vm.CPUs < 1 || vm.MemoryMiB != 512 {
		t.Fatalf("created vm = %+v", vm)
	}
	if vm.Accel != "tcg" && vm.Accel != "kvm" {
		t.Fatalf("accel %q", vm.Accel)
	}
	if vm.Emulated != (vm.Accel == "tcg") {
		t.Fatalf("emulated=%v with accel %s", vm.Emulated, vm.Accel)
	}
	pid, files := e.vmQEMU(vm)
	if len(files) < 2 {
		t.Fatalf("runtime files on the QEMU command line: %v", files)
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("runtime file: %v", err)
		}
	}
	// The VMM leads its own session: signals to the daemon's process group
	// do not reach it (readopt checks it survives the daemon's death).
	if sid := procStat(pid, 3); sid != pid {
		t.Fatalf("QEMU %d is in session %d, not its own", pid, sid)
	}

	// exec: output, exit status, stdin.
	if got := strings.TrimSpace(e.guest("life", "uname", "-r")); got != ve.kernelVersion {
		t.Fatalf("uname -r = %q, want %q", got, ve.kernelVersion)
	}
	if !strings.HasSuffix(ve.kernelVersion, "-cloud-amd64") {
		t.Fatalf("kernel version %q is not the Debian cloud kernel", ve.kernelVersion)
	}
	if r := e.run("vm", "exec", "life", "--", "sh", "-c", "exit 7"); r.code != 7 {
		t.Fatalf("exit 7: %+v", r)
	}
	if r := e.run("vm", "exec", "life", "--", "sh", "-c", "echo out; echo err >&2; exit 3"); r.code != 3 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Fatalf("stdout/stderr split: %+v", r)
	}
	stdin := "x\nsecond line\n"
	if r := e.runIn([]byte(stdin), "vm", "exec", "life", "--", "cat"); r.code != 0 || r.stdout != stdin {
		t.Fatalf("stdin not forwarded: %+v", r)
	}
	if got := strings.TrimSpace(e.guest("life", "hostname")); got != "life" {
		t.Fatalf("hostname %q", got)
	}
	if r := e.run("vm", "exec", "life", "--", "sh", "-c", "kill -9 $$"); r.code != 128+9 {
		t.Fatalf("command killed by SIGKILL: %+v", r)
	}
	// env, working directory and the image's PATH.
	out := e.must("vm", "exec", "-e", "FOO=bar", "-w", "/tmp", "life", "--", "sh", "-c", `echo "$FOO $(pwd) $PATH"`)
	if !strings.HasPrefix(out, "bar /tmp ") || !strings.Contains(out, "/usr/bin") {
		t.Fatalf("env/cwd: %q", out)
	}
	if got := strings.Fields(e.guest("life", "ls", "/sys/class/net")); len(got) != 1 || got[0] != "lo" {
		t.Fatalf("--net none vm has interfaces %v", got)
	}
	// The kernel's modules are mounted at /lib/modules/<release>, indexed:
	// modprobe resolves a module's dependencies and loads them.
	mods := e.guest("life", "sh", "-c", `test -f /lib/modules/$(uname -r)/modules.dep && modprobe br_netfilter && cat /proc/modules`)
	for _, m := range []string{"br_netfilter ", "bridge "} {
		if !strings.Contains(mods, m) {
			t.Fatalf("modprobe br_netfilter did not load %s:\n%s", m, mods)
		}
	}
	if vm.Emulated && !strings.Contains(e.must("vm", "show", "life"), "emulated") {
		t.Fatal("vm show does not flag the emulated accelerator")
	}

	// A file in /root survives a reboot (restart = new boot id).
	e.guest("life", "sh", "-c", "echo persisted > /root/keep && echo upper > /etc/upper-file")
	boot1 := e.bootID("life")
	out = e.must("vm", "restart", "life")
	if !strings.Contains(out, "life restarted") {
		t.Fatalf("restart: %q", out)
	}
	boot2 := e.bootID("life")
	if boot2 == boot1 {
		t.Fatalf("restart kept boot id %s", boot1)
	}
	if waitGone(pid, 5*time.Second) != true {
		t.Fatalf("the old QEMU %d survived the restart", pid)
	}
	if got := e.guest("life", "cat", "/root/keep", "/etc/upper-file"); got != "persisted\nupper\n" {
		t.Fatalf("after restart: %q", got)
	}

	// stop: the process and its runtime files go, the disks stay.
	pid, files = e.vmQEMU(e.showVM("life"))
	e.guest("life", "sh", "-c", "echo written-before-stop > /root/late")
	if out := e.must("vm", "stop", "life"); !strings.Contains(out, "life stopped") {
		t.Fatalf("stop: %q", out)
	}
	if !waitGone(pid, 5*time.Second) {
		t.Fatalf("QEMU %d still running after stop", pid)
	}
	if st := e.showVM("life"); st.State != "stopped" || st.LastError != "" {
		t.Fatalf("after stop: %+v", st)
	}
	for _, f := range files {
		if _, err := os.Lstat(f); !os.IsNotExist(err) {
			t.Fatalf("runtime file %s left after stop", f)
		}
	}
	if r := e.run("vm", "exec", "life", "--", "true"); r.code == 0 || !strings.Contains(r.stderr, "not running") {
		t.Fatalf("exec in a stopped vm: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(vm.Dir, "work.ext4")); err != nil {
		t.Fatalf("work disk gone after stop: %v", err)
	}

	// start: same disks, another boot.
	if out := e.must("vm", "start", "life"); !strings.Contains(out, "life running") {
		t.Fatalf("start: %q", out)
	}
	if e.bootID("life") == boot2 {
		t.Fatal("start kept the boot id")
	}
	if got := e.guest("life", "cat", "/root/keep", "/root/late"); got != "persisted\nwritten-before-stop\n" {
		t.Fatalf("after stop/start: %q", got)
	}

	// delete: refused while running, then forced; nothing left.
	pid, files = e.vmQEMU(e.showVM("life"))
	r := e.run("vm", "delete", "life")
	if r.code == 0 || !strings.Contains(r.stderr, "is running") || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("delete of a running vm: %+v", r)
	}
	if e.showVM("life").State != "running" || len(testenv.QEMUPIDs(vm.Dir)) != 1 {
		t.Fatal("refused delete changed the vm")
	}
	if out := e.must("vm", "delete", "-f", "life"); !strings.Contains(out, "life deleted") {
		t.Fatalf("delete: %q", out)
	}
	if !waitGone(pid, 5*time.Second) {
		t.Fatalf("QEMU %d still running after delete", pid)
	}
	e.assertNoLeaks(vm, files)
	if r := e.run("vm", "show", "life"); r.code != 4 {
		t.Fatalf("show after delete: %+v", r)
	}
}

// testVMReadopt kills bangerd with SIGKILL while VMs run: the next command
// restarts it, and it re-adopts the VM that still runs (same boot) and
// marks the one whose QEMU died meanwhile stopped, releasing its files.
func testVMReadopt(t *testing.T, ve *vmEnv) {
	e := ve.env
	vms := e.createVMs("adopt-a", "adopt-b")
	a, b := vms[0], vms[1]
	bootA := e.bootID("adopt-a")
	pidA, _ := e.vmQEMU(a)
	pidB, filesB := e.vmQEMU(b)
	e.guest("adopt-a", "sh", "-c", "echo 1 > /root/before")

	old := e.daemonPID()
	if old == 0 {
		t.Fatal("no daemon pid")
	}
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitGone(old, 5*time.Second) {
		t.Fatalf("bangerd %d survived SIGKILL", old)
	}
	// While no daemon runs, adopt-b's VMM dies too.
	if err := syscall.Kill(pidB, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitGone(pidB, 5*time.Second) {
		t.Fatalf("QEMU %d survived SIGKILL", pidB)
	}
	if syscall.Kill(pidA, 0) != nil {
		t.Fatalf("QEMU %d of adopt-a died with the daemon", pidA)
	}

	// The next command starts a new daemon, which re-adopts adopt-a.
	if got := e.bootID("adopt-a"); got != bootA {
		t.Fatalf("boot id after daemon restart %s, want %s (vm rebooted?)", got, bootA)
	}
	if now := e.daemonPID(); now == old || now == 0 {
		t.Fatalf("daemon pid %d after restart (old %d)", now, old)
	}
	if !strings.Contains(e.daemonLog(), "re-adopted running vm") {
		t.Fatalf("no re-adoption in the daemon log:\n%s", e.daemonLog())
	}
	if got := e.guest("adopt-a", "cat", "/root/before"); got != "1\n" {
		t.Fatalf("file after readopt: %q", got)
	}
	if st := e.showVM("adopt-a"); st.State != "running" {
		t.Fatalf("adopt-a after readopt: %+v", st)
	}
	if pids := testenv.QEMUPIDs(a.Dir); len(pids) != 1 || pids[0] != pidA {
		t.Fatalf("adopt-a QEMU pids %v, want [%d]", pids, pidA)
	}
	// A clean daemon stop leaves the VM running too.
	e.must("daemon", "stop")
	if got := e.bootID("adopt-a"); got != bootA {
		t.Fatalf("boot id after daemon stop/start %s, want %s", got, bootA)
	}
	// adopt-b is reconciled to stopped, its runtime files released.
	if st := e.showVM("adopt-b"); st.State != "stopped" {
		t.Fatalf("adopt-b after readopt: %+v", st)
	}
	for _, f := range filesB {
		if _, err := os.Lstat(f); !os.IsNotExist(err) {
			t.Errorf("runtime file %s of the dead vm left", f)
		}
	}
	// The adopted VM stops cleanly through the new daemon, the other boots.
	e.must("vm", "stop", "adopt-a")
	if !waitGone(pidA, 5*time.Second) {
		t.Fatalf("adopted QEMU %d still running after stop", pidA)
	}
	e.must("vm", "start", "adopt-b")
	if got := strings.TrimSpace(e.guest("adopt-b", "hostname")); got != "adopt-b" {
		t.Fatalf("adopt-b hostname %q", got)
	}
	// A VMM that dies under the running daemon is noticed: the VM goes to
	// error with the console log named, and its runtime files are released.
	pidB, filesB = e.vmQEMU(e.showVM("adopt-b"))
	if err := syscall.Kill(pidB, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var st api.VMInfo
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if st = e.showVM("adopt-b"); st.State != "running" {
			break
		}
	}
	if st.State != "error" || !strings.Contains(st.LastError, st.ConsoleLog) {
		t.Fatalf("adopt-b after its QEMU was killed: %+v", st)
	}
	for _, f := range filesB {
		if _, err := os.Lstat(f); !os.IsNotExist(err) {
			t.Errorf("runtime file %s of the crashed vm left", f)
		}
	}
	if r := e.run("vm", "exec", "adopt-b", "--", "true"); r.code == 0 || !strings.Contains(r.stderr, "not running") {
		t.Fatalf("exec in a crashed vm: %+v", r)
	}
	out := e.must("vm", "delete", "-f", "adopt-b", "adopt-a")
	if out != "adopt-b deleted\nadopt-a deleted\n" {
		t.Fatalf("delete output (given order): %q", out)
	}
	e.assertNoLeaks(a, nil)
	e.assertNoLeaks(b, filesB)
}

// procStat reads numeric field i of /proc/PID/stat counted after the
// command name: 1 is the parent pid, 2 the process group, 3 the session.
// It returns -1 when unknown.
func procStat(pid, i int) int {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return -1
	}
	s := string(b)
	j := strings.LastIndexByte(s, ')')
	if j < 0 {
		return -1
	}
	f := strings.Fields(s[j+1:])
	if len(f) <= i {
		return -1
	}
	n, err := strconv.Atoi(f[i])
	if err != nil {
		return -1
	}
	return n
}
