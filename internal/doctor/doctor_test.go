package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
)

func mustFind(t *testing.T, r Report, name string) Check {
	t.Helper()
	c, ok := r.Find(name)
	if !ok {
		t.Fatalf("report has no %q check: %+v", name, r.Checks)
	}
	return c
}

func expect(t *testing.T, c Check, status Status, detailParts ...string) {
	t.Helper()
	if c.Status != status {
		t.Errorf("%s: status %s, want %s (detail %q)", c.Name, c.Status, status, c.Detail)
	}
	for _, p := range detailParts {
		if !strings.Contains(c.Detail, p) {
			t.Errorf("%s: detail %q does not contain %q", c.Name, c.Detail, p)
		}
	}
}

func TestHealthyHostPasses(t *testing.T) {
	r := Run(context.Background(), healthyIntelHost().options())
	for _, c := range r.Checks {
		if c.Name == CheckFirecracker {
			expect(t, c, Warn, "not found", "optional")
			continue
		}
		if c.Status != Pass {
			t.Errorf("%s: %s %q", c.Name, c.Status, c.Detail)
		}
	}
	if r.Failed() {
		t.Error("Failed() = true on a healthy host")
	}
	want := []string{CheckArch, CheckKVMDevice, CheckKVMKind, CheckQEMU, CheckFirecracker, CheckMke2fs,
		CheckE2fsck, CheckDebugfs, CheckDepmod, CheckTun, CheckNftables, CheckPrivileges, CheckStore, CheckDiskState, CheckDiskCache}
	var got []string
	for _, c := range r.Checks {
		got = append(got, c.Name)
	}
	if !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}

func TestOptionalChecksOmitted(t *testing.T) {
	opts := healthyIntelHost().options()
	opts.StoreCheck, opts.StateDir, opts.CacheDir = nil, "", ""
	r := Run(context.Background(), opts)
	for _, name := range []string{CheckStore, CheckDiskState, CheckDiskCache} {
		if _, ok := r.Find(name); ok {
			t.Errorf("%s present without its option", name)
		}
	}
	if len(r.Checks) != 12 {
		t.Errorf("%d checks, want 12", len(r.Checks))
	}
}

func TestArch(t *testing.T) {
	tests := []struct {
		machine string
		status  Status
		detail  string
	}{
		{"x86_64", Pass, "x86_64"},
		{"aarch64", Warn, "untested"},
		{"riscv64", Fail, "unsupported"},
		{"", Fail, "cannot determine"},
	}
	for _, tt := range tests {
		h := healthyIntelHost()
		h.machine = tt.machine
		expect(t, mustFind(t, Run(context.Background(), h.options()), CheckArch), tt.status, tt.detail)
	}
}

func TestKVMKinds(t *testing.T) {
	tests := []struct {
		name       string
		host       func() *fakeHost
		kind       KVMKind
		kindStatus Status
		kindDetail string
		device     Status
		qemuAccel  string
	}{
		{"real intel", healthyIntelHost, KVMHardware, Pass, "hardware KVM (vmx, kvm_intel)", Pass, "accelerator KVM"},
		{"real amd", func() *fakeHost {
			h := healthyIntelHost()
			h.files["/proc/cpuinfo"] = amdCPUInfo
			delete(h.exists, "/sys/module/kvm_intel")
			h.exists["/sys/module/kvm_amd"] = true
			return h
		}, KVMHardware, Pass, "hardware KVM (svm, kvm_amd)", Pass, "accelerator KVM"},
		{"pvm module", func() *fakeHost { return healthyIntelHost().makePVM() },
			KVMPVM, Warn, pvmDetail, Pass, "TCG"},
		{"pvm module with vmx flag", func() *fakeHost {
			h := healthyIntelHost()
			h.exists["/sys/module/kvm_pvm"] = true
			delete(h.exists, "/sys/module/kvm_intel")
			return h
		}, KVMPVM, Warn, pvmDetail, Pass, "TCG"},
		{"no flag, no pvm module", func() *fakeHost {
			h := healthyIntelHost()
			h.files["/proc/cpuinfo"] = noVirtCPUInfo
			delete(h.exists, "/sys/module/kvm_intel")
			return h
		}, KVMPVM, Warn, pvmDetail, Pass, "TCG"},
		{"no kvm", func() *fakeHost {
			h := healthyIntelHost()
			h.files["/proc/cpuinfo"] = noVirtCPUInfo
			delete(h.exists, "/dev/kvm")
			delete(h.exists, "/sys/module/kvm_intel")
			return h
		}, KVMNone, Warn, "no KVM", Warn, "TCG"},
		{"arm64 kvm has no x86 flags", func() *fakeHost {
			h := healthyIntelHost()
			h.machine = "aarch64"
			h.files["/proc/cpuinfo"] = "processor\t: 0\nFeatures\t: fp asimd evtstrm\n"
			delete(h.exists, "/sys/module/kvm_intel")
			return h
		}, KVMHardware, Pass, "hardware KVM", Pass, "accelerator KVM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.host()
			if got := DetectKVM(h.probes()).Kind; got != tt.kind {
				t.Errorf("DetectKVM kind %s, want %s", got, tt.kind)
			}
			r := Run(context.Background(), h.options())
			kind := mustFind(t, r, CheckKVMKind)
			expect(t, kind, tt.kindStatus, tt.kindDetail)
			if tt.kind == KVMPVM && kind.Detail != pvmDetail {
				t.Errorf("PVM detail %q", kind.Detail)
			}
			expect(t, mustFind(t, r, CheckKVMDevice), tt.device)
			expect(t, mustFind(t, r, CheckQEMU), Pass, tt.qemuAccel)
		})
	}
}

func TestKVMDeviceNotOpenable(t *testing.T) {
	h := healthyIntelHost()
	h.openErr = &fs.PathError{Op: "open", Path: "/dev/kvm", Err: syscall.EACCES}
	c := mustFind(t, Run(context.Background(), h.options()), CheckKVMDevice)
	expect(t, c, Warn, "permission denied")
	if !strings.Contains(c.Hint, "kvm group") {
		t.Errorf("hint %q", c.Hint)
	}
}

func TestNoKVMHintLoadsModule(t *testing.T) {
	h := healthyIntelHost()
	delete(h.exists, "/dev/kvm")
	c := mustFind(t, Run(context.Background(), h.options()), CheckKVMDevice)
	if c.Hint != "load the KVM module: modprobe kvm_intel" {
		t.Errorf("hint %q", c.Hint)
	}
}

func TestQEMU(t *testing.T) {
	t.Run("missing", func(t *testing.T) {
		h := healthyIntelHost()
		delete(h.tools, "qemu-system-x86_64")
		c := mustFind(t, Run(context.Background(), h.options()), CheckQEMU)
		expect(t, c, Fail, "not found")
		if c.Hint != "apt-get install qemu-system-x86" {
			t.Errorf("hint %q", c.Hint)
		}
	})
	t.Run("version", func(t *testing.T) {
		c := mustFind(t, Run(context.Background(), healthyIntelHost().options()), CheckQEMU)
		expect(t, c, Pass, "QEMU 8.2.2 at /usr/bin/qemu-system-x86_64")
	})
	t.Run("microvm without acpi", func(t *testing.T) {
		h := healthyIntelHost()
		h.outputs["/usr/bin/qemu-system-x86_64 -M microvm,help"] = "microvm-machine options:\n  pic=<OnOffAuto>\n"
		expect(t, mustFind(t, Run(context.Background(), h.options()), CheckQEMU), Fail, "no acpi option")
	})
	t.Run("unparsable version", func(t *testing.T) {
		h := healthyIntelHost()
		h.outputs["/usr/bin/qemu-system-x86_64 --version"] = "something else\n"
		expect(t, mustFind(t, Run(context.Background(), h.options()), CheckQEMU), Fail, "no QEMU version")
	})
}

func TestFirecracker(t *testing.T) {
	tests := []struct {
		name     string
		host     func() *fakeHost
		opts     func(*Options)
		status   Status
		detail   []string
		noDetail string
	}{
		{name: "missing", host: healthyIntelHost,
			status: Warn, detail: []string{"not found", "optional"}},
		{name: "missing but required", host: healthyIntelHost,
			opts:   func(o *Options) { o.FirecrackerRequired = true },
			status: Fail, detail: []string{"not found", "selects Firecracker"}},
		{name: "1.7.0 on PATH", host: func() *fakeHost {
			h := healthyIntelHost().addFirecracker("/usr/local/bin/firecracker", "1.7.0")
			h.tools["firecracker"] = "/usr/local/bin/firecracker"
			return h
		}, status: Warn, detail: []string{"v1.7.0", "from PATH", "Firecracker < 1.8 has no ACPI; distro kernels find no disks"}},
		{name: "1.7.0 required", host: func() *fakeHost {
			return healthyIntelHost().addFirecracker("/opt/fc", "1.7.0")
		}, opts: func(o *Options) { o.FirecrackerBin, o.FirecrackerRequired = "/opt/fc", true },
			status: Fail, detail: []string{"< 1.8"}},
		{name: "1.14.2 from config", host: func() *fakeHost {
			return healthyIntelHost().addFirecracker("/opt/fc", "1.14.2")
		}, opts: func(o *Options) { o.FirecrackerBin = "/opt/fc" },
			status: Pass, detail: []string{"Firecracker v1.14.2 at /opt/fc (from config)"}},
		{name: "1.8.0 is enough", host: func() *fakeHost {
			return healthyIntelHost().addFirecracker("/opt/fc", "1.8.0")
		}, opts: func(o *Options) { o.FirecrackerBin = "/opt/fc" },
			status: Pass, detail: []string{"v1.8.0"}},
		{name: "1.14.2 from env", host: func() *fakeHost {
			h := healthyIntelHost().addFirecracker("/env/fc", "1.14.2")
			h.env[FirecrackerEnv] = "/env/fc"
			return h
		}, status: Pass, detail: []string{"/env/fc", "$BANGER_FIRECRACKER_BIN"}},
		{name: "config beats env", host: func() *fakeHost {
			h := healthyIntelHost().addFirecracker("/env/fc", "1.7.0").addFirecracker("/opt/fc", "1.14.2")
			h.env[FirecrackerEnv] = "/env/fc"
			return h
		}, opts: func(o *Options) { o.FirecrackerBin = "/opt/fc" },
			status: Pass, detail: []string{"/opt/fc"}},
		{name: "configured path missing", host: healthyIntelHost,
			opts:   func(o *Options) { o.FirecrackerBin = "/nowhere/fc" },
			status: Warn, detail: []string{"/nowhere/fc", "does not exist"}},
		{name: "configured bare name", host: func() *fakeHost {
			h := healthyIntelHost().addFirecracker("/usr/bin/firecracker-1.14", "1.14.2")
			h.tools["firecracker-1.14"] = "/usr/bin/firecracker-1.14"
			return h
		}, opts: func(o *Options) { o.FirecrackerBin = "firecracker-1.14" },
			status: Pass, detail: []string{"/usr/bin/firecracker-1.14"}},
		{name: "1.14.2 on PVM", host: func() *fakeHost {
			return healthyIntelHost().makePVM().addFirecracker("/opt/fc", "1.14.2")
		}, opts: func(o *Options) { o.FirecrackerBin = "/opt/fc" },
			status: Warn, detail: []string{"v1.14.2", "cannot run here", "PVM"}},
		{name: "1.14.2 without kvm", host: func() *fakeHost {
			h := healthyIntelHost().addFirecracker("/opt/fc", "1.14.2")
			delete(h.exists, "/dev/kvm")
			return h
		}, opts: func(o *Options) { o.FirecrackerBin = "/opt/fc" },
			status: Warn, detail: []string{"cannot run here: no /dev/kvm"}},
		{name: "garbage version", host: func() *fakeHost {
			h := healthyIntelHost()
			h.exists["/opt/fc"] = true
			h.outputs["/opt/fc --version"] = "Segmentation fault\n"
			return h
		}, opts: func(o *Options) { o.FirecrackerBin = "/opt/fc" },
			status: Warn, detail: []string{"no Firecracker version"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.host().options()
			if tt.opts != nil {
				tt.opts(&opts)
			}
			c := mustFind(t, Run(context.Background(), opts), CheckFirecracker)
			expect(t, c, tt.status, tt.detail...)
			if c.Status != Pass && c.Hint == "" {
				t.Errorf("no hint for %s %q", c.Status, c.Detail)
			}
		})
	}
}

func TestMke2fs(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(*fakeHost)
		status Status
		detail string
		hint   string
	}{
		{"1.47.2", func(*fakeHost) {}, Pass, "mke2fs 1.47.2: mke2fs -d - available", ""},
		{"1.47.1", func(h *fakeHost) {
			h.outputs["/usr/sbin/mke2fs -V"] = "mke2fs 1.47.1 (20-May-2024)\n"
		}, Pass, "mke2fs -d - available", ""},
		{"1.47.0", func(h *fakeHost) {
			h.outputs["/usr/sbin/mke2fs -V"] = "mke2fs 1.47.0 (5-Feb-2023)\n\tUsing EXT2FS Library version 1.47.0\n"
		}, Warn, "mke2fs 1.47.0: tarball mode (mke2fs -d -) needs e2fsprogs ≥ 1.47.1", "bookworm-backports"},
		{"1.47.2 without libarchive", func(h *fakeHost) {
			delete(h.exists, "/usr/lib/x86_64-linux-gnu/libarchive.so.13")
		}, Warn, "libarchive.so.13 was not found", "apt-get install libarchive13"},
		{"missing", func(h *fakeHost) { delete(h.tools, "mke2fs") }, Fail, "not found", "apt-get install e2fsprogs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := healthyIntelHost()
			tt.mod(h)
			c := mustFind(t, Run(context.Background(), h.options()), CheckMke2fs)
			expect(t, c, tt.status, tt.detail)
			if (tt.hint == "" && c.Hint != "") || !strings.Contains(c.Hint, tt.hint) {
				t.Errorf("hint %q, want %q", c.Hint, tt.hint)
			}
		})
	}
}

func TestE2fsprogsToolsMissing(t *testing.T) {
	h := healthyIntelHost()
	delete(h.tools, "e2fsck")
	delete(h.tools, "debugfs")
	r := Run(context.Background(), h.options())
	expect(t, mustFind(t, r, CheckE2fsck), Fail, "e2fsck not found")
	expect(t, mustFind(t, r, CheckDebugfs), Fail, "debugfs not found")
	if !r.Failed() {
		t.Error("Failed() = false with missing tools")
	}
}

func TestDepmodMissingWarns(t *testing.T) {
	h := healthyIntelHost()
	delete(h.tools, "depmod")
	r := Run(context.Background(), h.options())
	expect(t, mustFind(t, r, CheckDepmod), Warn, "no /lib/modules")
	if r.Failed() {
		t.Error("a missing depmod fails the host; it should only warn")
	}
}

func TestDisk(t *testing.T) {
	tests := []struct {
		free   uint64
		status Status
		detail string
	}{
		{100 << 30, Pass, "100.0 GiB free in state dir /state"},
		{5 << 30, Pass, "5.0 GiB"},
		{5<<30 - 1, Warn, "need 5 GiB or more"},
		{3 << 30, Warn, "3.0 GiB"},
		{1 << 30, Warn, "1.0 GiB"},
		{512 << 20, Fail, "512.0 MiB free in state dir /state (need at least 1 GiB)"},
		{0, Fail, "0 B"},
	}
	for _, tt := range tests {
		h := healthyIntelHost()
		h.free["/state"] = tt.free
		r := Run(context.Background(), h.options())
		expect(t, mustFind(t, r, CheckDiskState), tt.status, tt.detail)
		expect(t, mustFind(t, r, CheckDiskCache), Pass, "cache dir /cache")
		if r.Failed() != (tt.status == Fail) {
			t.Errorf("free %d: Failed() = %v", tt.free, r.Failed())
		}
	}
	h := healthyIntelHost()
	delete(h.free, "/cache")
	expect(t, mustFind(t, Run(context.Background(), h.options()), CheckDiskCache), Warn, "unknown")
}

func TestStore(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status Status
		detail string
		hint   string
	}{
		{"ok", nil, Pass, "read-only", ""},
		{"not found", errkind.New(errkind.NotFound, "state database %s", "/state/banger.db"), Warn, "no state database yet", "bangerd creates it"},
		{"enoent", &fs.PathError{Op: "open", Path: "/state/banger.db", Err: fs.ErrNotExist}, Warn, "no state database yet", "bangerd creates it"},
		{"corrupt", errors.New("file is not a database"), Fail, "state database: file is not a database", "check that this user"},
		{"hinted", errkind.WithHint(errors.New("schema 9 is newer than this banger (7)"), "upgrade banger"), Fail, "schema 9", "upgrade banger"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := healthyIntelHost().options()
			opts.StoreCheck = func(context.Context) error { return tt.err }
			c := mustFind(t, Run(context.Background(), opts), CheckStore)
			expect(t, c, tt.status, tt.detail)
			if !strings.Contains(c.Hint, tt.hint) {
				t.Errorf("hint %q, want %q", c.Hint, tt.hint)
			}
		})
	}
}

func TestPrivileges(t *testing.T) {
	tests := []struct {
		name   string
		euid   int
		status string
		want   Status
		detail string
	}{
		{"root", 0, "", Pass, "running as root"},
		{"cap_net_admin", 1000, "Name:\tbangerd\nCapEff:\t0000000000001000\n", Pass, "CAP_NET_ADMIN"},
		{"no caps", 1000, "Name:\tbanger\nCapEff:\t0000000000000000\n", Warn, "networking need it"},
		{"other caps", 1000, "CapEff:\t0000000000000400\n", Warn, "networking need it"},
		{"unreadable", 1000, "Name:\tbanger\n", Warn, "capabilities are unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := healthyIntelHost()
			h.euid = tt.euid
			h.files["/proc/self/status"] = tt.status
			expect(t, mustFind(t, Run(context.Background(), h.options()), CheckPrivileges), tt.want, tt.detail)
		})
	}
}

func TestTunAndNftables(t *testing.T) {
	h := healthyIntelHost()
	delete(h.exists, "/dev/net/tun")
	h.nftErr = syscall.EPERM
	r := Run(context.Background(), h.options())
	expect(t, mustFind(t, r, CheckTun), Warn, "/dev/net/tun missing")
	expect(t, mustFind(t, r, CheckNftables), Warn, "without CAP_NET_ADMIN")
	if r.Failed() {
		t.Error("networking warnings must not fail the report")
	}

	h = healthyIntelHost()
	h.nftErr = syscall.EAFNOSUPPORT
	expect(t, mustFind(t, Run(context.Background(), h.options()), CheckNftables), Warn, "nf_tables unavailable")
	expect(t, mustFind(t, Run(context.Background(), healthyIntelHost().options()), CheckNftables), Pass, "2 tables")
}

func TestCheckTimeout(t *testing.T) {
	h := healthyIntelHost()
	p := h.probes()
	fakeRun := p.Run
	p.Run = func(ctx context.Context, name string, args ...string) (string, error) {
		if strings.HasSuffix(name, "qemu-system-x86_64") {
			<-ctx.Done() // a hung binary: only the check's timeout ends it
			return "", ctx.Err()
		}
		return fakeRun(ctx, name, args...)
	}
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	opts := h.options()
	opts.Probes = p
	opts.CheckTimeout = 100 * time.Millisecond
	opts.StoreCheck = func(context.Context) error { <-release; return nil } // ignores its context
	start := time.Now()
	r := Run(context.Background(), opts)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Run took %s with a 100ms check timeout", d)
	}
	expect(t, mustFind(t, r, CheckQEMU), Fail, "did not finish within 100ms")
	expect(t, mustFind(t, r, CheckStore), Fail, "did not finish")
	expect(t, mustFind(t, r, CheckMke2fs), Pass)
}

func TestNonCriticalTimeoutWarns(t *testing.T) {
	h := healthyIntelHost()
	opts := h.options()
	opts.Probes.Nftables = func(ctx context.Context) (int, error) { <-ctx.Done(); return 0, ctx.Err() }
	opts.CheckTimeout = 50 * time.Millisecond
	expect(t, mustFind(t, Run(context.Background(), opts), CheckNftables), Warn, "did not finish")
}

func TestCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	opts := healthyIntelHost().options()
	opts.StoreCheck = func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	c := mustFind(t, Run(ctx, opts), CheckStore)
	// Either the check saw the cancellation or the runner did; both are failures.
	if c.Status != Fail {
		t.Errorf("store after cancel: %+v", c)
	}
}

func TestPanickingCheckIsReported(t *testing.T) {
	opts := healthyIntelHost().options()
	opts.StoreCheck = func(context.Context) error { panic("boom") }
	r := Run(context.Background(), opts)
	expect(t, mustFind(t, r, CheckStore), Fail, "panicked: boom")
	expect(t, mustFind(t, r, CheckArch), Pass)
}

func TestReportJSON(t *testing.T) {
	r := Report{Checks: []Check{
		{Name: "arch", Status: Pass, Detail: "x86_64"},
		{Name: "kvm-kind", Status: Warn, Detail: pvmDetail, Hint: "h"},
	}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"checks":[{"name":"arch","status":"PASS","detail":"x86_64","hint":""},` +
		`{"name":"kvm-kind","status":"WARN","detail":"` + pvmDetail + `","hint":"h"}]}`
	if string(b) != want {
		t.Errorf("json\n got %s\nwant %s", b, want)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || !slices.Equal(back.Checks, r.Checks) {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}

func TestReportCounts(t *testing.T) {
	r := Report{Checks: []Check{{Status: Pass}, {Status: Warn}, {Status: Warn}}}
	if r.Failed() || r.Count(Warn) != 2 || r.Count(Pass) != 1 {
		t.Errorf("counts wrong: failed=%v warn=%d pass=%d", r.Failed(), r.Count(Warn), r.Count(Pass))
	}
	r.Checks = append(r.Checks, Check{Status: Fail})
	if !r.Failed() {
		t.Error("Failed() = false with a FAIL")
	}
}

func TestHelpers(t *testing.T) {
	flags := []struct{ in, want string }{
		{intelCPUInfo, "vmx"},
		{amdCPUInfo, "svm"},
		{noVirtCPUInfo, ""},
		{"", ""},
		{"vmx flags are in another line\nflags : sse\n", ""},
	}
	for _, f := range flags {
		if got := cpuVirtFlag(f.in); got != f.want {
			t.Errorf("cpuVirtFlag(%q) = %q, want %q", f.in, got, f.want)
		}
	}
	caps := []struct {
		status string
		bit    uint
		want   bool
		err    bool
	}{
		{"CapEff:\t000001fffeffffff\n", capNetAdmin, true, false},
		{"CapEff:\t0000000000000000\n", capNetAdmin, false, false},
		{"CapEff:\t0000000000001000", capNetAdmin, true, false},
		{"CapEff:\tzz\n", capNetAdmin, false, true},
		{"CapPrm:\t000001fffeffffff\n", capNetAdmin, false, true},
	}
	for _, c := range caps {
		got, err := hasEffectiveCap(c.status, c.bit)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("hasEffectiveCap(%q) = %v, %v", c.status, got, err)
		}
	}
	sizes := []struct {
		n    uint64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{5 << 30, "5.0 GiB"}, {3 << 40, "3.0 TiB"}, {1 << 62, "4096.0 PiB"},
	}
	for _, s := range sizes {
		if got := formatBytes(s.n); got != s.want {
			t.Errorf("formatBytes(%d) = %q, want %q", s.n, got, s.want)
		}
	}
}
