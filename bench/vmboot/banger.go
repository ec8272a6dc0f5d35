package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/api"
)

// bangerTimes is one cold path through the CLI and daemon.
type bangerTimes struct {
	create, exec, del, total time.Duration
	daemon                   daemonTimes
	guestReady               time.Duration // agent's "ready" line, guest clock
	// CPU time: of the three CLI processes, and of bangerd with the
	// children it reaped (mkfs, debugfs and the VM's QEMU).
	cliCPU, daemonCPU time.Duration
}

// daemonTimes is the daemon's "vm running" log line of one start: its own
// work before the VMM exec and after the agent answered, and the VMM and
// guest phases in between.
type daemonTimes struct {
	toExec, vmmStart, guest, afterAgent time.Duration
}

func (d daemonTimes) own() time.Duration { return d.toExec + d.afterAgent }

// bangerRun is `banger vm create` + `vm exec -- true` + `vm delete -f`:
// what `banger vm run` does, as three CLI processes.
func bangerRun(ctx context.Context, in *install, name, image string) (bangerTimes, error) {
	var t bangerTimes
	pid, err := in.daemonPID()
	if err != nil {
		return t, err
	}
	cpu0, err := procCPU(pid)
	if err != nil {
		return t, err
	}
	cli0 := in.cliCPU
	start := time.Now()
	out, err := in.run(ctx, "vm", "create", "--name", name, "--image", image, "--net", "none", "-o", "json")
	t.create = time.Since(start)
	if err != nil {
		return t, err
	}
	var vm api.VMInfo
	if err := json.Unmarshal([]byte(out), &vm); err != nil {
		return t, fmt.Errorf("vm create output: %w", err)
	}
	t.guestReady, _ = guestReady(filepath.Join(vm.Dir, "console.log"))
	if t.exec, err = in.timed(ctx, "vm", "exec", name, "--", "true"); err != nil {
		return t, err
	}
	if t.del, err = in.timed(ctx, "vm", "delete", "-f", name); err != nil {
		return t, err
	}
	t.total = time.Since(start)
	cpu1, err := procCPU(pid)
	if err != nil {
		return t, err
	}
	t.daemonCPU, t.cliCPU = cpu1-cpu0, in.cliCPU-cli0
	t.daemon, err = daemonTimesOf(in.daemonLog(), name)
	return t, err
}

// showVM returns `vm show NAME -o json`.
func showVM(ctx context.Context, in *install, name string) (api.VMInfo, error) {
	var vm api.VMInfo
	out, err := in.run(ctx, "vm", "show", name, "-o", "json")
	if err != nil {
		return vm, err
	}
	return vm, json.Unmarshal([]byte(out), &vm)
}

// daemonTimesOf finds the last "vm running" line for vm in the daemon log.
func daemonTimesOf(logPath, vm string) (daemonTimes, error) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return daemonTimes{}, err
	}
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := lines[i]
		if !strings.Contains(l, `msg="vm running"`) || !strings.Contains(l, " vm="+vm+" ") {
			continue
		}
		var d daemonTimes
		fields := map[string]*time.Duration{
			"to_vmm_exec": &d.toExec, "vmm_start": &d.vmmStart, "guest_to_agent": &d.guest, "after_agent": &d.afterAgent,
		}
		for _, kv := range strings.Fields(l) {
			k, v, ok := strings.Cut(kv, "=")
			if p := fields[k]; ok && p != nil {
				if *p, err = time.ParseDuration(v); err != nil {
					return d, fmt.Errorf("daemon log %s: %w", kv, err)
				}
				delete(fields, k)
			}
		}
		if len(fields) > 0 {
			return d, fmt.Errorf("daemon log line lacks timings: %s", l)
		}
		return d, nil
	}
	return daemonTimes{}, fmt.Errorf("no \"vm running\" line for %s in %s", vm, logPath)
}

// guestReady reads the guest-clock time of banger-agent's "ready" console
// line ("banger-agent: [    1.459] ready"): the guest's own boot time,
// which host load but not banger changes.
func guestReady(console string) (time.Duration, error) {
	b, err := os.ReadFile(console)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(l), "banger-agent: [")
		if !ok {
			continue
		}
		ts, msg, ok := strings.Cut(rest, "]")
		if !ok || strings.TrimSpace(msg) != "ready" {
			continue
		}
		sec, err := strconv.ParseFloat(strings.TrimSpace(ts), 64)
		if err != nil {
			return 0, err
		}
		return time.Duration(sec * float64(time.Second)), nil
	}
	return 0, fmt.Errorf("no ready line in %s", console)
}
