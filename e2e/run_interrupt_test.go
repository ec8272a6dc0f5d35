package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/client"
	"github.com/bangerdev/banger/internal/testenv"
)

// TestRunInterrupt sends SIGINT to `banger vm run` at each stage of its
// life (creating the disks, booting the VMM, waiting for the agent,
// running the command) and checks the outcome: banger exits non-zero
// promptly; with --rm no VM and no QEMU process remain, without it the
// VM is listed and running or stopped, as its QEMU process says. All the
// while `vm list` must never be empty while a QEMU process of the
// installation runs.
func TestRunInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs (slow under TCG)")
	}
	e := rtEnv(t)
	home := e.home + string(filepath.Separator)
	t.Cleanup(func() {
		for _, pid := range testenv.QEMUPIDs(home) {
			t.Errorf("killing QEMU pid %d left running by the test", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})

	// Start the daemon now: the run and the monitor would otherwise both
	// try to start it.
	rtMust(t, e, "vm", "list")

	vmDirs := func() []string {
		dirs, _ := filepath.Glob(filepath.Join(e.home, "state", "vms", "*"))
		return dirs
	}
	// Each trigger reports when the run of VM name has reached its stage.
	type trigger func(name string, stdout *rtSyncBuffer) bool
	qemuOf := func(name string) []int { return testenv.QEMUPIDs("banger.hostname=" + name) }
	atDisks := func(string, *rtSyncBuffer) bool { return len(vmDirs()) > 0 }
	atBoot := func(name string, _ *rtSyncBuffer) bool { return len(qemuOf(name)) > 0 }
	var qemuSince time.Time
	atAgent := func(name string, _ *rtSyncBuffer) bool {
		// Into the guest boot: QEMU answered QMP within ~50ms of its exec
		// here; the agent needs seconds (KVM) to minutes (TCG).
		if len(qemuOf(name)) == 0 {
			return false
		}
		if qemuSince.IsZero() {
			qemuSince = time.Now()
		}
		return time.Since(qemuSince) > 700*time.Millisecond
	}
	atCommand := func(_ string, stdout *rtSyncBuffer) bool { return strings.Contains(stdout.String(), "started\n") }

	for _, tc := range []struct {
		name string
		rm   bool
		at   trigger
	}{
		{"rm-disks", true, atDisks},
		{"rm-boot", true, atBoot},
		{"rm-boot-again", true, atBoot},
		{"rm-agent", true, atAgent},
		{"rm-command", true, atCommand},
		{"keep-boot", false, atBoot},
		{"keep-agent", false, atAgent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			qemuSince = time.Time{}
			if pids := testenv.QEMUPIDs(home); len(pids) > 0 {
				t.Fatalf("QEMU running before the run: %v %q", pids, testenv.ProcArgs(pids[0]))
			}
			name := "intr-" + tc.name
			args := []string{"vm", "run", "--name", name, "--memory", vmMemMiB, "--net", "none"}
			if tc.rm {
				args = append(args, "--rm")
			}
			args = append(args, "--", "sh", "-c", "echo started; exec sleep 30")
			cmd := exec.Command(e.bins.Banger, args...)
			cmd.Env = e.environ()
			var out, errb rtSyncBuffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			mon := watchListVsQEMU(e, home)
			defer mon.stop()
			start := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan int, 1)
			go func() { exited <- exitOf(cmd.Wait()) }()

			// Wait for the stage, then interrupt.
			deadline := time.Now().Add(3 * time.Minute)
			for !tc.at(name, &out) {
				select {
				case code := <-exited:
					t.Fatalf("vm run ended (exit %d) before the stage was reached\nstdout: %s\nstderr: %s\ndaemon log:\n%s", code, out.String(), errb.String(), e.daemonLog())
				default:
				}
				if time.Now().After(deadline) {
					_ = cmd.Process.Kill()
					t.Fatalf("stage not reached in time\nstderr: %s\ndaemon log:\n%s", errb.String(), e.daemonLog())
				}
				time.Sleep(10 * time.Millisecond)
			}
			sigAt := time.Now()
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			var code int
			select {
			case code = <-exited:
			case <-time.After(90 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("vm run did not exit within 90s of SIGINT\nstderr: %s\ndaemon log:\n%s", errb.String(), e.daemonLog())
			}
			exitAfter := time.Since(sigAt)
			if code == 0 {
				t.Fatalf("interrupted vm run exited 0\nstderr: %s", errb.String())
			}

			// Let the daemon settle, then check the outcome.
			var vms []listedVM
			var pids []int
			settled := false
			for settle := time.Now().Add(150 * time.Second); time.Now().Before(settle); time.Sleep(200 * time.Millisecond) {
				vms, pids = listVMs(t, e), testenv.QEMUPIDs(home)
				if tc.rm {
					settled = len(vms) == 0 && len(pids) == 0 && len(vmDirs()) == 0
				} else {
					settled = len(vms) == 1 && vms[0].Name == name &&
						(vms[0].State == "running" && len(testenv.QEMUPIDs(vms[0].Dir+"/")) == 1 ||
							(vms[0].State == "stopped" || vms[0].State == "created") && len(pids) == 0)
				}
				if settled {
					break
				}
			}
			settleAfter := time.Since(sigAt)
			mon.stop()
			t.Logf("stage reached %.1fs after start; exit %d %.2fs after SIGINT; settled %.2fs after SIGINT; %d list samples",
				sigAt.Sub(start).Seconds(), code, exitAfter.Seconds(), settleAfter.Seconds(), mon.samples())
			if bad := mon.violations(); len(bad) > 0 {
				t.Errorf("vm list was empty while QEMU ran:\n%s", strings.Join(bad, "\n"))
			}
			if !settled {
				t.Errorf("no consistent end state: vms %+v, qemu pids %v, dirs %v\nstderr: %s\ndaemon log:\n%s",
					vms, pids, vmDirs(), errb.String(), e.daemonLog())
			}
			if exitAfter > 30*time.Second {
				t.Errorf("vm run took %s to exit after SIGINT", exitAfter)
			}
			if !tc.rm {
				if !strings.Contains(errb.String(), "vm "+name+" is ") || !strings.Contains(errb.String(), "stays (no --rm)") {
					t.Errorf("no word on the VM left running: %q", errb.String())
				}
				rtMust(t, e, "vm", "delete", "-f", name)
				rtNoVMs(t, e)
			}
		})
	}
}

type listedVM struct {
	Name, State, Dir string
}

func listVMs(t *testing.T, e *env) []listedVM {
	t.Helper()
	r := rtRun(t, e, nil, "vm", "list", "-o", "json")
	var vms []listedVM
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &vms) != nil {
		t.Fatalf("vm list: %+v", r)
	}
	return vms
}

// listMonitor polls the daemon's VM list (GET /v1/vms, what `vm list`
// prints) and the QEMU processes of one installation
// and records every time the list was empty while a QEMU process ran
// before and after the list call (so it ran while the daemon answered).
type listMonitor struct {
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	mu      sync.Mutex
	bad     []string
	nsample int
}

func watchListVsQEMU(e *env, home string) *listMonitor {
	m := &listMonitor{done: make(chan struct{})}
	c := client.New(e.socket())
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			select {
			case <-m.done:
				return
			default:
			}
			before := testenv.QEMUPIDs(home)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			vms, err := c.ListVMs(ctx)
			cancel()
			after := testenv.QEMUPIDs(home)
			if err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			m.mu.Lock()
			m.nsample++
			if len(vms) == 0 && sharesPID(before, after) {
				m.bad = append(m.bad, fmt.Sprintf("%s: empty list, qemu pids %v", time.Now().Format("15:04:05.000"), after))
			}
			m.mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return m
}

func sharesPID(a, b []int) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

func (m *listMonitor) stop() {
	m.once.Do(func() { close(m.done) })
	m.wg.Wait()
}

func (m *listMonitor) samples() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nsample
}

func (m *listMonitor) violations() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bad
}
