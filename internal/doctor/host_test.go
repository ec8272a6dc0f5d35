package doctor

// Tests against the real host: default probes, real /proc and /sys, real
// binaries and real processes.

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRunOnThisHost(t *testing.T) {
	state := t.TempDir()
	opts := Options{
		StateDir:   state,
		CacheDir:   filepath.Join(state, "not", "created", "yet"),
		StoreCheck: func(context.Context) error { return nil },
	}
	r := Run(context.Background(), opts)
	for _, c := range r.Checks {
		t.Logf("%-12s %s  %s  %s", c.Name, c.Status, c.Detail, c.Hint)
	}
	if len(r.Checks) != 15 {
		t.Fatalf("%d checks, want 15", len(r.Checks))
	}

	machine, err := unameMachine()
	if err != nil {
		t.Fatal(err)
	}
	if machine == "x86_64" {
		expect(t, mustFind(t, r, CheckArch), Pass, "x86_64")
	}

	// This lab's /dev/kvm is PVM: it must be recognised as such.
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		if k := DetectKVM(Probes{}); k.Kind != KVMPVM || k.Module != "kvm_pvm" {
			t.Errorf("DetectKVM on a kvm_pvm host = %+v", k)
		}
		c := mustFind(t, r, CheckKVMKind)
		expect(t, c, Warn)
		if c.Detail != pvmDetail {
			t.Errorf("kvm-kind detail %q, want %q", c.Detail, pvmDetail)
		}
	}

	if _, err := os.Stat("/dev/kvm"); err == nil && os.Geteuid() == 0 {
		expect(t, mustFind(t, r, CheckKVMDevice), Pass, "read-write")
	}

	if path, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		out, err := exec.Command(path, "--version").Output()
		if err != nil {
			t.Fatal(err)
		}
		v, err := ParseQEMUVersion(string(out))
		if err != nil {
			t.Fatal(err)
		}
		c := mustFind(t, r, CheckQEMU)
		expect(t, c, Pass, "QEMU "+v.String())
		if DetectKVM(Probes{}).Kind != KVMHardware {
			expect(t, c, Pass, "TCG")
		}
	}

	if path, err := lookPathSbin("mke2fs"); err == nil {
		out, _ := exec.Command(path, "-V").CombinedOutput()
		v, err := ParseE2fsprogsVersion(string(out))
		if err != nil {
			t.Fatal(err)
		}
		c := mustFind(t, r, CheckMke2fs)
		if v.Less(Version{1, 47, 1}) {
			expect(t, c, Warn, "mke2fs "+v.String(), "needs e2fsprogs ≥ 1.47.1")
		} else if c.Status == Fail {
			t.Errorf("mke2fs %s: %+v", v, c)
		}
		expect(t, mustFind(t, r, CheckE2fsck), Pass, "e2fsck")
		expect(t, mustFind(t, r, CheckDebugfs), Pass, "debugfs")
	}

	if os.Getenv(FirecrackerEnv) == "" {
		if _, err := exec.LookPath("firecracker"); err != nil {
			expect(t, mustFind(t, r, CheckFirecracker), Warn, "not found")
		}
	}

	if _, err := os.Stat("/dev/net/tun"); err == nil {
		expect(t, mustFind(t, r, CheckTun), Pass)
	}
	if os.Geteuid() == 0 {
		expect(t, mustFind(t, r, CheckPrivileges), Pass, "root")
	}
	expect(t, mustFind(t, r, CheckStore), Pass)

	var st syscall.Statfs_t
	if err := syscall.Statfs(state, &st); err != nil {
		t.Fatal(err)
	}
	if free := st.Bavail * uint64(st.Bsize); free >= DiskWarnBytes {
		expect(t, mustFind(t, r, CheckDiskState), Pass, "state dir "+state)
		// The cache dir does not exist: its nearest ancestor is measured.
		expect(t, mustFind(t, r, CheckDiskCache), Pass, "cache dir "+opts.CacheDir)
	}
}

// writeScript writes an executable shell script and returns its path.
func writeScript(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFirecrackerVersionFromRealProcess(t *testing.T) {
	kind := DetectKVM(Probes{}).Kind
	old := writeScript(t, "firecracker-v1.7.0", `echo "Firecracker v1.7.0"; echo`)
	c := mustFind(t, Run(context.Background(), Options{FirecrackerBin: old}), CheckFirecracker)
	expect(t, c, Warn, "v1.7.0", "Firecracker < 1.8 has no ACPI")

	c = mustFind(t, Run(context.Background(), Options{FirecrackerBin: old, FirecrackerRequired: true}), CheckFirecracker)
	expect(t, c, Fail, "v1.7.0")

	cur := writeScript(t, "firecracker", `[ "$1" = --version ] || exit 2; echo "Firecracker v1.14.2"`)
	t.Setenv(FirecrackerEnv, cur)
	c = mustFind(t, Run(context.Background(), Options{}), CheckFirecracker)
	switch kind {
	case KVMHardware:
		expect(t, c, Pass, "v1.14.2", "$"+FirecrackerEnv)
	case KVMPVM:
		expect(t, c, Warn, "v1.14.2", "cannot run here", "PVM")
	case KVMNone:
		expect(t, c, Warn, "v1.14.2", "no /dev/kvm")
	}

	broken := writeScript(t, "firecracker", `echo "fc: bad option" >&2; exit 1`)
	c = mustFind(t, Run(context.Background(), Options{FirecrackerBin: broken}), CheckFirecracker)
	expect(t, c, Warn, "--version", "exit status 1")
}

func TestHungBinaryIsKilledAtTimeout(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	// The script records its pid (its process group, as Run makes it a group
	// leader) and then waits in a child process.
	hung := writeScript(t, "firecracker", "echo $$ > "+pidFile+"; sleep 30; echo done")
	start := time.Now()
	r := Run(context.Background(), Options{FirecrackerBin: hung, CheckTimeout: 300 * time.Millisecond})
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Run took %s", d)
	}
	expect(t, mustFind(t, r, CheckFirecracker), Warn, "did not finish within 300ms")

	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("script did not start: %v", err)
	}
	pgid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
	// The whole group, sleep included, must be gone (killed and reaped).
	deadline := time.Now().Add(10 * time.Second) // orphans are reaped by PID 1
	for syscall.Kill(-pgid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("process group %d still alive after the check timed out", pgid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestFreeBytesWalksToExistingAncestor(t *testing.T) {
	dir := t.TempDir()
	got, err := freeBytes(filepath.Join(dir, "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	want := st.Bavail * uint64(st.Bsize)
	// Other processes write to the same filesystem: allow 256 MiB of drift.
	if diff := int64(got) - int64(want); diff > 256<<20 || diff < -256<<20 {
		t.Errorf("freeBytes = %d, statfs = %d", got, want)
	}
	if _, err := freeBytes(filepath.Join(dir, "file", "x")); err != nil {
		t.Errorf("freeBytes below a missing path: %v", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := freeBytes(filepath.Join(file, "x")); err == nil {
		t.Error("freeBytes below a regular file: want ENOTDIR error")
	}
}

func TestLookPathSbin(t *testing.T) {
	t.Setenv("PATH", "/usr/bin:/bin") // an ordinary user's PATH on Debian
	want, err := exec.LookPath("/usr/sbin/mke2fs")
	if err != nil {
		t.Skip("mke2fs is not in /usr/sbin on this host")
	}
	got, err := lookPathSbin("mke2fs")
	if err != nil || got != want {
		t.Errorf("lookPathSbin(mke2fs) = %q, %v; want %q", got, err, want)
	}
	if _, err := lookPathSbin("no-such-tool-banger"); !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("missing tool: %v", err)
	}
}

func TestNftablesOverNetlink(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := nftablesTables(ctx)
	if os.Geteuid() != 0 {
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("unprivileged nf_tables query: %d, %v; want EPERM", n, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("nf_tables query as root: %v", err)
	}
	nft, lerr := lookPathSbin("nft")
	if lerr != nil {
		return
	}
	// Cross-check the count with nft itself.
	out, err := exec.Command(nft, "list", "tables").Output()
	if err != nil {
		t.Skipf("nft list tables: %v", err)
	}
	want := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "table ") {
			want++
		}
	}
	if n != want {
		t.Errorf("netlink counted %d tables, nft lists %d", n, want)
	}
}

func TestNftablesCountsCreatedTable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating an nftables table needs root")
	}
	nft, err := lookPathSbin("nft")
	if err != nil {
		t.Skip("nft not installed")
	}
	before, err := nftablesTables(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const table = "banger_doctor_test"
	if out, err := exec.Command(nft, "add", "table", "inet", table).CombinedOutput(); err != nil {
		t.Skipf("nft add table: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command(nft, "delete", "table", "inet", table).Run() })
	after, err := nftablesTables(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if after != before+1 {
		t.Errorf("tables before %d, after adding one %d", before, after)
	}
}
