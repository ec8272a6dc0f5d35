// Package doctor checks whether a host can run banger: CPU architecture,
// KVM (and whether it is hardware KVM or PVM), QEMU, Firecracker, e2fsprogs,
// networking prerequisites, the state database and free disk space.
//
// Run executes every check concurrently, each bounded by its own timeout, and
// returns the results in a fixed order. Everything the checks read from the
// host goes through Probes, so tests can describe any host.
package doctor

import (
	"context"
	"fmt"
	"time"
)

// Status is the outcome of one check.
type Status string

// Check outcomes. WARN means banger works with reduced features or speed;
// FAIL means something banger needs is missing or broken.
const (
	Pass Status = "PASS"
	Warn Status = "WARN"
	Fail Status = "FAIL"
)

// Check is the result of one readiness check.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Hint   string `json:"hint"`
}

// Report is the ordered list of check results.
type Report struct {
	Checks []Check `json:"checks"`
}

// Failed reports whether any check failed.
func (r Report) Failed() bool { return r.Count(Fail) > 0 }

// Count returns how many checks ended with status s.
func (r Report) Count(s Status) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

// Find returns the check with the given name.
func (r Report) Find(name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

// Check names, in report order.
const (
	CheckArch        = "arch"
	CheckKVMDevice   = "kvm-device"
	CheckKVMKind     = "kvm-kind"
	CheckQEMU        = "qemu"
	CheckFirecracker = "firecracker"
	CheckMke2fs      = "mke2fs"
	CheckE2fsck      = "e2fsck"
	CheckDebugfs     = "debugfs"
	CheckDepmod      = "depmod"
	CheckTun         = "tun"
	CheckNftables    = "nftables"
	CheckPrivileges  = "privileges"
	CheckStore       = "store"
	CheckDiskState   = "disk-state"
	CheckDiskCache   = "disk-cache"
)

// DefaultCheckTimeout bounds each check when Options.CheckTimeout is zero.
const DefaultCheckTimeout = 10 * time.Second

// Options carries what the checks need from outside the package.
type Options struct {
	// FirecrackerBin is the configured Firecracker binary. When empty,
	// $BANGER_FIRECRACKER_BIN and then PATH are tried.
	FirecrackerBin string
	// FirecrackerRequired is set when the configuration selects Firecracker
	// as the VMM: Firecracker problems then FAIL instead of WARN.
	FirecrackerRequired bool
	// StateDir and CacheDir are checked for free space (the nearest existing
	// ancestor is used when a directory does not exist yet). An empty
	// directory omits its check.
	StateDir string
	CacheDir string
	// StoreCheck opens the state database read-only and reports the result.
	// Nil omits the store check. An error matching errkind.NotFound or
	// fs.ErrNotExist is reported as WARN (no database yet), any other as FAIL.
	StoreCheck func(ctx context.Context) error
	// CheckTimeout bounds each check; zero means DefaultCheckTimeout.
	CheckTimeout time.Duration
	// Probes reads the host. Nil fields use the real implementations.
	Probes Probes
}

// Free-space thresholds for the state and cache directories.
const (
	DiskWarnBytes = 5 << 30
	DiskFailBytes = 1 << 30
)

// env is what every check sees: the options, the completed probes and the
// host facts gathered once before the checks start.
type env struct {
	opts    Options
	probes  Probes
	machine string
	kvm     KVMInfo
}

type checkDef struct {
	name string
	// critical checks report a timeout as FAIL, the others as WARN.
	critical bool
	run      func(ctx context.Context, e *env) Check
}

// Run executes all checks and returns their results in a stable order.
// Checks run concurrently; each is bounded by Options.CheckTimeout, and one
// that does not finish in time is reported without waiting for it (its
// context is cancelled, which kills any process it started).
func Run(ctx context.Context, opts Options) Report {
	p := opts.Probes.withDefaults()
	e := &env{opts: opts, probes: p}
	e.machine, _ = p.Machine()
	e.kvm = DetectKVM(p)

	defs := checkDefs(opts)
	timeout := opts.CheckTimeout
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}

	results := make([]chan Check, len(defs))
	for i, d := range defs {
		results[i] = make(chan Check, 1)
		go func(d checkDef, out chan<- Check) {
			out <- runOne(ctx, e, d, timeout)
		}(d, results[i])
	}
	report := Report{Checks: make([]Check, len(defs))}
	for i := range defs {
		report.Checks[i] = <-results[i]
	}
	return report
}

// runOne runs d under its own timeout. The check's goroutine may outlive the
// timeout (a callback that ignores its context); its result is then dropped
// into a buffered channel and discarded.
func runOne(ctx context.Context, e *env, d checkDef, timeout time.Duration) Check {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan Check, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- Check{Name: d.name, Status: Fail, Detail: fmt.Sprintf("internal error: check panicked: %v", r)}
			}
		}()
		c := d.run(cctx, e)
		c.Name = d.name
		done <- c
	}()
	select {
	case c := <-done:
		return c
	case <-cctx.Done():
		status := Warn
		if d.critical {
			status = Fail
		}
		detail := fmt.Sprintf("did not finish within %s", timeout)
		if ctx.Err() != nil {
			detail = fmt.Sprintf("interrupted: %v", ctx.Err())
		}
		return Check{Name: d.name, Status: status, Detail: detail}
	}
}

func checkDefs(opts Options) []checkDef {
	defs := []checkDef{
		{CheckArch, true, checkArch},
		{CheckKVMDevice, false, checkKVMDevice},
		{CheckKVMKind, false, checkKVMKind},
		{CheckQEMU, true, checkQEMU},
		{CheckFirecracker, opts.FirecrackerRequired, checkFirecracker},
		{CheckMke2fs, true, checkMke2fs},
		{CheckE2fsck, true, checkToolPresent("e2fsck", "apt-get install e2fsprogs")},
		{CheckDebugfs, true, checkToolPresent("debugfs", "apt-get install e2fsprogs")},
		{CheckDepmod, false, checkDepmod},
		{CheckTun, false, checkTun},
		{CheckNftables, false, checkNftables},
		{CheckPrivileges, false, checkPrivileges},
	}
	if opts.StoreCheck != nil {
		defs = append(defs, checkDef{CheckStore, true, checkStore})
	}
	if opts.StateDir != "" {
		defs = append(defs, checkDef{CheckDiskState, true, checkDisk("state", opts.StateDir)})
	}
	if opts.CacheDir != "" {
		defs = append(defs, checkDef{CheckDiskCache, true, checkDisk("cache", opts.CacheDir)})
	}
	return defs
}
