package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/testenv"
)

// vmMemory keeps test VMs small (the default is host RAM/8).
const vmMemory = "512"

// vmEnv is an env ready to boot VMs: the Debian cloud kernel imported as
// "cloud" and the busybox image pulled from a loopback registry as
// "busybox".
type vmEnv struct {
	*env
	kernelVersion string
}

// needQEMU skips t when QEMU is not installed.
func needQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
	}
}

// newBareVMEnv is an env whose daemon can boot VMs (banger-agent is built
// next to bangerd) without host networking, with no kernel or image yet. A cleanup kills any QEMU
// the test left behind, so a failing test does not leak VMs.
func newBareVMEnv(t *testing.T) *env {
	t.Helper()
	needQEMU(t)
	testenv.BuildBinaries(t, testenv.PkgAgent)
	e := newEnv(t)
	// VM tests leave the host network alone: no bridge, taps, firewall
	// rules or DNS listener (one bridge per host, other daemons may use it).
	cfg := filepath.Join(e.home, "config", "config.toml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("[network]\ndisabled = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, pid := range testenv.QEMUPIDs(e.home) {
			t.Errorf("killing QEMU pid %d left running by the test", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return e
}

func newVMEnv(t *testing.T) *vmEnv {
	t.Helper()
	e := newBareVMEnv(t)
	e.importKernel(t)
	reg := testenv.StartRegistry(t)
	ref := testenv.PushBusybox(t, reg)
	e.must("image", "pull", ref, "--kernel-ref", "cloud")
	var k struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal([]byte(e.must("kernel", "show", "cloud", "-o", "json")), &k); err != nil || k.Version == "" {
		t.Fatalf("kernel show: %v %+v", err, k)
	}
	return &vmEnv{env: e, kernelVersion: k.Version}
}

// sub runs a subtest whose failures the env's helpers report to it.
func (e *env) sub(t *testing.T, name string, fn func(t *testing.T)) {
	t.Helper()
	t.Run(name, func(st *testing.T) {
		e.t = st
		defer func() { e.t = t }()
		fn(st)
	})
}

// runEnv runs banger with extra environment variables (a daemon it starts
// inherits them) and optional stdin.
func (e *env) runEnv(extra []string, stdin []byte, args ...string) result {
	e.t.Helper()
	r, err := e.try(extra, stdin, args...)
	if err != nil {
		e.t.Fatalf("running banger %v: %v", args, err)
	}
	return r
}

// try runs banger like runEnv but reports a failure to start it as an
// error, so that it can be used from goroutines.
func (e *env) try(extra []string, stdin []byte, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bins.Banger, args...)
	cmd.Env = append(e.environ(), extra...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return result{stdout: out.String(), stderr: errb.String(), code: ee.ExitCode()}, nil
	}
	return result{stdout: out.String(), stderr: errb.String()}, err
}

// createArgs are the arguments of `vm create` for a small busybox VM.
// Test VMs have no NIC (host networking is disabled in their config, and
// --net none says so explicitly): the lifecycle does not need one.
func createArgs(name string, extra ...string) []string {
	return append([]string{"vm", "create", "--name", name, "--image", "busybox", "--memory", vmMemory, "--net", "none", "-o", "json"}, extra...)
}

// createVMs creates several VMs at once (concurrent CLI processes).
func (e *env) createVMs(names ...string) []api.VMInfo {
	e.t.Helper()
	res := make([]result, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = e.try(nil, nil, createArgs(n)...)
		}()
	}
	wg.Wait()
	vms := make([]api.VMInfo, len(names))
	for i, r := range res {
		if errs[i] != nil || r.code != 0 {
			e.t.Fatalf("vm create %s: %v %+v\ndaemon log:\n%s", names[i], errs[i], r, e.daemonLog())
		}
		if err := json.Unmarshal([]byte(r.stdout), &vms[i]); err != nil {
			e.t.Fatalf("vm create output: %v\n%s", err, r.stdout)
		}
	}
	return vms
}

// createVM creates and boots a small VM of the busybox image.
func (e *env) createVM(name string, extra ...string) api.VMInfo {
	e.t.Helper()
	var vm api.VMInfo
	out := e.must(createArgs(name, extra...)...)
	if err := json.Unmarshal([]byte(out), &vm); err != nil {
		e.t.Fatalf("vm create output: %v\n%s", err, out)
	}
	return vm
}

// showVM returns `vm show NAME -o json`.
func (e *env) showVM(name string) api.VMInfo {
	e.t.Helper()
	var vm api.VMInfo
	out := e.must("vm", "show", name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &vm); err != nil {
		e.t.Fatalf("vm show output: %v\n%s", err, out)
	}
	return vm
}

// listVMs returns `vm list -o json`.
func (e *env) listVMs() []api.VMInfo {
	e.t.Helper()
	var vms []api.VMInfo
	out := e.must("vm", "list", "-o", "json")
	if err := json.Unmarshal([]byte(out), &vms); err != nil {
		e.t.Fatalf("vm list output: %v\n%s", err, out)
	}
	return vms
}

// guest runs a command in a VM and fails unless it exits 0.
func (e *env) guest(name string, argv ...string) string {
	e.t.Helper()
	return e.must(append([]string{"vm", "exec", name, "--"}, argv...)...)
}

// bootID is the guest kernel's boot id (new at every boot).
func (e *env) bootID(name string) string {
	e.t.Helper()
	id := strings.TrimSpace(e.guest(name, "cat", "/proc/sys/kernel/random/boot_id"))
	if len(id) != 36 {
		e.t.Fatalf("boot id %q", id)
	}
	return id
}

// vmQEMU returns the pid of the one QEMU process running vm, and the
// runtime files named on its command line (sockets, pidfile, console).
func (e *env) vmQEMU(vm api.VMInfo) (int, []string) {
	e.t.Helper()
	pids := testenv.QEMUPIDs(vm.Dir)
	if len(pids) != 1 {
		e.t.Fatalf("vm %s: want one QEMU process, found %v", vm.Name, pids)
	}
	return pids[0], runtimeFiles(testenv.ProcArgs(pids[0]))
}

// runtimeFiles picks the socket and pidfile paths out of a QEMU argv.
func runtimeFiles(argv []string) []string {
	var files []string
	for i, a := range argv {
		if a == "-pidfile" && i+1 < len(argv) {
			files = append(files, argv[i+1])
		}
		for _, opt := range strings.Split(a, ",") {
			if p, ok := strings.CutPrefix(opt, "path="); ok && strings.HasSuffix(p, ".sock") {
				files = append(files, p)
			}
		}
	}
	return files
}

// waitGone waits until pid has exited (or is a zombie nobody reaped yet).
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil || testenv.ProcArgs(pid) == nil {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// assertNoLeaks checks that nothing of the VM is left: no QEMU process,
// no runtime files, no VM directory, no row.
func (e *env) assertNoLeaks(vm api.VMInfo, files []string) {
	e.t.Helper()
	if pids := testenv.QEMUPIDs(vm.ID); len(pids) > 0 {
		e.t.Errorf("vm %s: QEMU still running: %v", vm.Name, pids)
	}
	for _, f := range files {
		if _, err := os.Lstat(f); !os.IsNotExist(err) {
			e.t.Errorf("vm %s: runtime file %s left (%v)", vm.Name, f, err)
		}
	}
	for _, d := range []string{vm.Dir, vm.RunDir} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			e.t.Errorf("vm %s: dir %s left (%v)", vm.Name, d, err)
		}
	}
	for _, v := range e.listVMs() {
		if v.ID == vm.ID || v.Name == vm.Name {
			e.t.Errorf("vm %s: row left: %+v", vm.Name, v)
		}
	}
}

// vmDirs lists the per-VM directories (including staging leftovers).
func (e *env) vmDirs() []string {
	ents, _ := os.ReadDir(filepath.Join(e.home, "state", "vms"))
	var out []string
	for _, ent := range ents {
		out = append(out, ent.Name())
	}
	return out
}
