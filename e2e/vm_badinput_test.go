package e2e

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/initrd/cpio"
	"github.com/bangerdev/banger/internal/kernel/kerneltest"
	"github.com/bangerdev/banger/internal/testenv"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

// testVMBadInput: requests that must be refused before anything is made.
func testVMBadInput(t *testing.T, ve *vmEnv) {
	e := ve.env
	hostMiB := hostMemoryMiB(t)
	cases := []struct {
		name string
		args []string
		code int    // 0: any non-zero
		want string // in stderr
	}{
		{"unknown image", []string{"--name", "bad1", "--image", "nope"}, 4, `image "nope" not found`},
		{"unknown kernel", []string{"--name", "bad2", "--image", "busybox", "--kernel", "nope"}, 4, `kernel "nope" not found`},
		{"name not a DNS label", []string{"--name", "Bad_Name", "--image", "busybox"}, 0, "not a DNS label"},
		{"name with leading dash", []string{"--name=-x", "--image", "busybox"}, 0, "not a DNS label"},
		{"name too long", []string{"--name", strings.Repeat("a", 64), "--image", "busybox"}, 0, "not a DNS label"},
		{"memory larger than the host", []string{"--name", "bad3", "--image", "busybox", "--memory", strconv.Itoa(hostMiB + 1024)}, 0, "larger than the host"},
		{"memory below the floor", []string{"--name", "bad4", "--image", "busybox", "--memory", "16"}, 0, "at least"},
		{"too many cpus", []string{"--name", "bad5", "--image", "busybox", "--cpus", "100000"}, 0, "cpus must be between"},
		{"bad disk size", []string{"--name", "bad6", "--image", "busybox", "--disk", "lots"}, 0, "--disk"},
	}
	for _, c := range cases {
		r := e.run(append([]string{"vm", "create"}, c.args...)...)
		if r.code == 0 || (c.code != 0 && r.code != c.code) || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and %q", c.name, r.code, r.stderr, c.code, c.want)
		}
		if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n > 1 {
			t.Errorf("%s: error is not one line (+hint): %q", c.name, r.stderr)
		}
	}
	for _, args := range [][]string{
		{"vm", "exec", "ghost", "--", "true"},
		{"vm", "delete", "ghost"},
		{"vm", "stop", "ghost"},
		{"vm", "logs", "ghost"},
	} {
		if r := e.run(args...); r.code != 4 || !strings.Contains(r.stderr, `"ghost" not found`) {
			t.Errorf("%v: %+v", args, r)
		}
	}
	if r := e.run("vm", "exec", "ghost"); r.code != 2 {
		t.Errorf("exec without a command: %+v", r)
	}
	// Nothing was made.
	if vms := e.listVMs(); len(vms) != 0 {
		t.Errorf("rows after refused creates: %+v", vms)
	}
	if left := e.vmDirs(); len(left) != 0 {
		t.Errorf("dirs after refused creates: %v", left)
	}
	if pids := testenv.QEMUPIDs(e.home); len(pids) != 0 {
		t.Errorf("QEMU after refused creates: %v", pids)
	}
}

// testVMSameName: two creates with one name at once; exactly one wins.
func testVMSameName(t *testing.T, ve *vmEnv) {
	e := ve.env
	const n = 3
	res := make([]result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = e.try(nil, nil, createArgs("same")...)
		}()
	}
	wg.Wait()
	wins := 0
	for i, r := range res {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		switch {
		case r.code == 0:
			wins++
		case !strings.Contains(r.stderr, `vm "same" already exists`):
			t.Errorf("losing create: %+v", r)
		}
	}
	if wins != 1 {
		t.Fatalf("%d creates of one name succeeded: %+v\ndaemon log:\n%s", wins, res, e.daemonLog())
	}
	vms := e.listVMs()
	if len(vms) != 1 || vms[0].Name != "same" || vms[0].State != "running" {
		t.Fatalf("vms after racing creates: %+v", vms)
	}
	if dirs := e.vmDirs(); len(dirs) != 1 || dirs[0] != vms[0].ID {
		t.Fatalf("vm dirs after racing creates: %v (want [%s])", dirs, vms[0].ID)
	}
	if pids := testenv.QEMUPIDs(e.home); len(pids) != 1 {
		t.Fatalf("QEMU processes after racing creates: %v", pids)
	}
	// Once it exists, the same name is refused at once.
	start := time.Now()
	if r := e.run(createArgs("same")...); r.code == 0 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("create of an existing name: %+v", r)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusing an existing name took %v", d)
	}
	_, files := e.vmQEMU(vms[0])
	e.must("vm", "delete", "--force", "same")
	e.assertNoLeaks(vms[0], files)
}

// testVMManage: --no-start, set, logs, ps, kill and prune.
func testVMManage(t *testing.T, ve *vmEnv) {
	e := ve.env
	vm := e.createVM("mng", "--no-start")
	e.createVM("prn", "--no-start")
	if vm.State != "created" || len(testenv.QEMUPIDs(vm.Dir)) != 0 {
		t.Fatalf("--no-start: %+v", vm)
	}
	// Without --name, a DNS-label name is generated.
	var gen api.VMInfo
	if err := json.Unmarshal([]byte(e.must("vm", "create", "--no-start", "--image", "busybox", "-o", "json")), &gen); err != nil {
		t.Fatal(err)
	}
	if !dnsLabel.MatchString(gen.Name) {
		t.Fatalf("generated name %q is not a DNS label", gen.Name)
	}
	e.must("vm", "delete", gen.Name)

	// set on a stopped VM: cpus and disk (grow only).
	out := e.must("vm", "set", "mng", "--cpus", "2", "--disk", "10G")
	if !strings.Contains(out, "mng: 2 cpus") || !strings.Contains(out, "10.0 GiB disk") {
		t.Fatalf("set: %q", out)
	}
	if st := e.showVM("mng"); st.CPUs != 2 || st.DiskBytes != 10<<30 {
		t.Fatalf("after set: %+v", st)
	}
	if fi, err := os.Stat(filepath.Join(vm.Dir, "work.ext4")); err != nil || fi.Size() != 10<<30 {
		t.Fatalf("work disk after set: %v %v", fi, err)
	}
	if r := e.run("vm", "set", "mng", "--disk", "1G"); r.code == 0 || !strings.Contains(r.stderr, "can only grow") {
		t.Fatalf("shrinking set: %+v", r)
	}
	if r := e.run("vm", "set", "mng"); r.code != 2 {
		t.Fatalf("set with nothing to change: %+v", r)
	}
	if st := e.showVM("mng"); st.DiskBytes != 10<<30 {
		t.Fatalf("refused set changed the disk: %+v", st)
	}

	// The guest sees the new size.
	e.must("vm", "start", "mng")
	if got := strings.TrimSpace(e.guest("mng", "nproc")); got != "2" {
		t.Fatalf("nproc after set --cpus 2: %q", got)
	}
	df := strings.Fields(lastLine(e.guest("mng", "df", "-k", "/root")))
	if len(df) < 2 {
		t.Fatalf("df: %v", df)
	}
	if kb, _ := strconv.ParseInt(df[1], 10, 64); kb < 9<<20 || kb > 10<<20 {
		t.Fatalf("/root is %d KiB after set --disk 10G", kb)
	}
	if r := e.run("vm", "set", "mng", "--cpus", "1"); r.code == 0 || !strings.Contains(r.stderr, "is running") {
		t.Fatalf("set on a running vm: %+v", r)
	}

	// prune asks, keeps running VMs and deletes the rest.
	r := e.runIn([]byte("n\n"), "vm", "prune")
	if r.code != 0 || !strings.Contains(r.stdout, "will delete: prn") || !strings.Contains(r.stdout, "aborted") {
		t.Fatalf("prune answered no: %+v", r)
	}
	if out := e.must("vm", "prune", "-f"); out != "prn deleted\n" {
		t.Fatalf("prune -f: %q", out)
	}
	if vms := e.listVMs(); len(vms) != 1 || vms[0].Name != "mng" {
		t.Fatalf("after prune: %+v", vms)
	}

	// logs: the console of the boot, with the agent's lines.
	logs := e.must("vm", "logs", "mng")
	if !strings.Contains(logs, "banger-agent") || !strings.Contains(logs, "ready") {
		t.Fatalf("vm logs lacks the agent's console lines:\n%s", logs)
	}
	// ps lists it (the alias of vm list).
	ps := e.must("ps")
	if !strings.Contains(ps, "NAME") || !strings.Contains(ps, "mng") || !strings.Contains(ps, "running") {
		t.Fatalf("ps: %q", ps)
	}

	// kill: the VMM dies at once, the VM is stopped, its files released.
	pid, files := e.vmQEMU(e.showVM("mng"))
	if out := e.must("vm", "kill", "mng"); out != "mng stopped\n" {
		t.Fatalf("kill: %q", out)
	}
	if !waitGone(pid, 5*time.Second) {
		t.Fatalf("QEMU %d alive after kill", pid)
	}
	if st := e.showVM("mng"); st.State != "stopped" {
		t.Fatalf("after kill: %+v", st)
	}
	for _, f := range files {
		if _, err := os.Lstat(f); !os.IsNotExist(err) {
			t.Errorf("runtime file %s left after kill", f)
		}
	}
	if r := e.run("vm", "kill", "mng"); r.code == 0 || !strings.Contains(r.stderr, "not running") {
		t.Fatalf("kill of a stopped vm: %+v", r)
	}
	if r := e.run("vm", "kill", "--signal", "NOPE", "mng"); r.code == 0 || !strings.Contains(r.stderr, "unknown signal") {
		t.Fatalf("kill with a bad signal: %+v", r)
	}
	if out := e.must("vm", "prune", "-f"); out != "mng deleted\n" {
		t.Fatalf("second prune: %q", out)
	}
	e.assertNoLeaks(vm, files)
	if out := e.must("vm", "prune", "-f"); out != "nothing to prune\n" {
		t.Fatalf("empty prune: %q", out)
	}
}

// TestVMBootFailures boots guests that cannot come up: a kernel file that
// is not a kernel (QEMU refuses it), and a real kernel with a corrupt
// initrd (the guest never answers; the daemon's agent timeout is cut to
// keep the test short). Both end in state error, with nothing running.
func TestVMBootFailures(t *testing.T) {
	e := newBareVMEnv(t)
	const timeout = 10 * time.Second
	// The first command starts the daemon with the short agent timeout.
	if r := e.runEnv([]string{"BANGER_AGENT_TIMEOUT=" + timeout.String()}, nil, "version"); r.code != 0 {
		t.Fatalf("version: %+v", r)
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.ext4")
	vmmtest.BusyboxBaseDisk(t, base)
	junk := filepath.Join(dir, "junk")
	b := make([]byte, 4<<20)
	_, _ = rand.Read(b)
	if err := os.WriteFile(junk, b, 0o644); err != nil {
		t.Fatal(err)
	}
	vmlinux := kerneltest.DebianCloudKernel(t).Vmlinux
	e.must("image", "register", "--name", "notkernel", "--rootfs", base, "--kernel", junk)
	e.must("image", "register", "--name", "badinitrd", "--rootfs", base, "--kernel", vmlinux, "--initrd", junk)
	// A guest that boots fine but never runs the agent: busybox init as /init.
	hang := filepath.Join(dir, "hang.img")
	writeHangingInitrd(t, hang)
	e.must("image", "register", "--name", "hanging", "--rootfs", base, "--kernel", vmlinux, "--initrd", hang)

	e.sub(t, "not a kernel", func(t *testing.T) {
		r := e.run("vm", "create", "--name", "nk", "--image", "notkernel", "--memory", vmMemory, "--net", "none")
		if r.code == 0 || !strings.Contains(r.stderr, "qemu") {
			t.Fatalf("create with a junk kernel: %+v", r)
		}
		vm := e.showVM("nk")
		if vm.State != "error" || !strings.Contains(vm.LastError, "qemu") {
			t.Fatalf("vm after failed boot: %+v", vm)
		}
		if pids := testenv.QEMUPIDs(vm.Dir); len(pids) != 0 {
			t.Fatalf("QEMU left: %v", pids)
		}
		assertNoSockets(t, vm.Dir)
		e.must("vm", "delete", "nk")
		e.assertNoLeaks(vm, nil)
	})

	e.sub(t, "corrupt initrd", func(t *testing.T) {
		start := time.Now()
		r := e.run("vm", "create", "--name", "mute", "--image", "badinitrd", "--memory", vmMemory, "--net", "none")
		took := time.Since(start)
		vm := e.showVM("mute")
		if r.code == 0 || !strings.Contains(r.stderr, "did not come up") || !strings.Contains(r.stderr, vm.ConsoleLog) {
			t.Fatalf("create with a corrupt initrd: %+v", r)
		}
		// The kernel panics (panic=-1) and the VMM exits: no need to wait
		// for the agent timeout.
		if took > timeout+20*time.Second {
			t.Errorf("failed after %v with a %v agent timeout", took, timeout)
		}
		if vm.State != "error" || !strings.Contains(vm.LastError, vm.ConsoleLog) {
			t.Fatalf("vm after the failed boot: %+v", vm)
		}
		if pids := testenv.QEMUPIDs(vm.Dir); len(pids) != 0 {
			t.Fatalf("QEMU left: %v", pids)
		}
		assertNoSockets(t, vm.Dir)
		// The console shows why: the kernel could not use the initrd.
		logs := e.must("vm", "logs", "mute")
		if !strings.Contains(logs, "Kernel panic") && !strings.Contains(logs, "nitramfs") {
			t.Fatalf("console log of the failed boot:\n%s", logs)
		}
		e.must("vm", "delete", "mute")
		e.assertNoLeaks(vm, nil)
	})

	e.sub(t, "never answers", func(t *testing.T) {
		start := time.Now()
		r := e.run("vm", "create", "--name", "silent", "--image", "hanging", "--memory", vmMemory, "--net", "none")
		took := time.Since(start)
		vm := e.showVM("silent")
		if r.code == 0 || !strings.Contains(r.stderr, "did not come up") || !strings.Contains(r.stderr, vm.ConsoleLog) {
			t.Fatalf("create that never answers: %+v", r)
		}
		if took < timeout || took > timeout+20*time.Second {
			t.Errorf("failed after %v with a %v agent timeout", took, timeout)
		}
		if vm.State != "error" || !strings.Contains(vm.LastError, vm.ConsoleLog) {
			t.Fatalf("vm after timeout: %+v", vm)
		}
		if pids := testenv.QEMUPIDs(vm.Dir); len(pids) != 0 {
			t.Fatalf("QEMU left after the timeout: %v", pids)
		}
		assertNoSockets(t, vm.Dir)
		e.must("vm", "delete", "silent")
		e.assertNoLeaks(vm, nil)
	})
}

// writeHangingInitrd writes an initrd whose /init is busybox's init: the
// guest boots and idles but never answers the host.
func writeHangingInitrd(t *testing.T, path string) {
	t.Helper()
	bb, err := os.ReadFile(testenv.BusyboxBinary)
	if err != nil {
		t.Skipf("busybox-static: %v", err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := cpio.NewWriter(f)
	for _, step := range []func() error{
		func() error { return w.Dir("dev", 0o755) },
		func() error { return w.CharDev("dev/console", 0o600, 5, 1) },
		func() error { return w.Dir("proc", 0o755) },
		func() error { return w.File("init", 0o755, bb) },
		w.Close,
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// assertNoSockets fails when a socket or pidfile is left under dir.
func assertNoSockets(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, ent := range ents {
		if ent.Type()&os.ModeSocket != 0 || strings.HasSuffix(ent.Name(), ".pid") {
			t.Errorf("%s left in %s", ent.Name(), dir)
		}
	}
}

// hostMemoryMiB reads MemTotal from /proc/meminfo.
func hostMemoryMiB(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb int
		if _, err := fmt.Sscanf(sc.Text(), "MemTotal: %d kB", &kb); err == nil {
			return kb / 1024
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
	return 0
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
