package testenv

import (
	"archive/tar"
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestBusyboxRootfs(t *testing.T) {
	entries := BusyboxEntries(t)
	seen := map[string]Entry{}
	for _, e := range entries {
		if _, dup := seen[e.Path]; dup {
			t.Errorf("%s listed twice", e.Path)
		}
		if parent := path.Dir(e.Path); parent != "/" {
			if p, ok := seen[parent]; !ok || p.Type != tar.TypeDir {
				t.Errorf("%s comes before its parent directory %s", e.Path, parent)
			}
		}
		seen[e.Path] = e
	}
	for _, applet := range []string{"sh", "ls", "cat", "mount", "ip", "poweroff", "httpd", "nc", "awk", "wget", "vi", "tar"} {
		e, ok := seen["/bin/"+applet]
		if !ok || e.Type != tar.TypeSymlink || e.Target != "busybox" {
			t.Errorf("/bin/%s: %+v, want a symlink to busybox", applet, e)
		}
	}
	for _, skipped := range []string{"/bin/init", "/bin/linuxrc"} {
		if _, ok := seen[skipped]; ok {
			t.Errorf("%s present; the agent is the init", skipped)
		}
	}
	checks := []struct {
		path string
		typ  byte
		mode int64
		uid  int
	}{
		{"/bin/busybox", tar.TypeReg, 0o755, 0},
		{"/tmp", tar.TypeDir, 0o1777, 0},
		{"/root", tar.TypeDir, 0o700, 0},
		{"/home/dev", tar.TypeDir, 0o755, 1000},
		{BusyboxMarker, tar.TypeReg, 0o644, 0},
		{"/etc/passwd", tar.TypeReg, 0o644, 0},
		{"/usr/bin", tar.TypeSymlink, 0o777, 0},
	}
	for _, c := range checks {
		e, ok := seen[c.path]
		if !ok || e.Type != c.typ || e.Mode != c.mode || e.UID != c.uid {
			t.Errorf("%s: %+v, want type %c mode %o uid %d", c.path, e, c.typ, c.mode, c.uid)
		}
	}
	if !strings.Contains(string(seen["/etc/passwd"].Data), "dev:x:1000:1000:") {
		t.Errorf("/etc/passwd lacks user dev:\n%s", seen["/etc/passwd"].Data)
	}
	if string(seen[BusyboxMarker].Data) != BusyboxMarkerText {
		t.Errorf("marker holds %q", seen[BusyboxMarker].Data)
	}
	f, err := elf.NewFile(bytes.NewReader(seen["/bin/busybox"].Data))
	if err != nil {
		t.Fatalf("/bin/busybox is not ELF: %v", err)
	}
	if f.Machine != elf.EM_X86_64 {
		t.Errorf("/bin/busybox machine %s", f.Machine)
	}

	files := BusyboxFiles(t)
	if len(files) != len(entries) || !slices.IsSorted(files) {
		t.Errorf("BusyboxFiles: %d sorted=%v, want %d sorted", len(files), slices.IsSorted(files), len(entries))
	}
	for _, p := range []string{"/bin/sh", "/etc/hostname", "/tmp", "/usr/sbin"} {
		if _, ok := slices.BinarySearch(files, p); !ok {
			t.Errorf("BusyboxFiles lacks %s", p)
		}
	}
}

// TestBusyboxRootfsRuns unpacks the layer with GNU tar and runs the image's
// shell in it with chroot: the userland works and the users resolve.
func TestBusyboxRootfsRuns(t *testing.T) {
	RequireRoot(t)
	tarBin := RequireBinary(t, "tar")
	layer, err := TarEntries(BusyboxEntries(t))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	untar := exec.Command(tarBin, "-x", "--numeric-owner", "-p", "-C", root)
	untar.Stdin = bytes.NewReader(layer)
	if out, err := untar.CombinedOutput(); err != nil {
		t.Fatalf("tar -x: %v\n%s", err, out)
	}
	script := `set -e; id dev; cat /etc/hostname; ls -ld /tmp; test -f /root/.profile; ` +
		`/usr/bin/env true; /sbin/ip -V >/dev/null 2>&1 || true; echo done`
	cmd := exec.Command("chroot", root, "/bin/sh", "-c", script)
	cmd.Env = []string{"PATH=" + BusyboxPath}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("running the image's shell: %v\n%s", err, out)
	}
	for _, want := range []string{"uid=1000(dev) gid=1000(dev)", BusyboxHostname, "drwxrwxrwt", "done"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestBusyboxImageDeterministic(t *testing.T) {
	a, b := BusyboxImage(t), BusyboxImage(t)
	da, err := a.Digest()
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if da != db {
		t.Errorf("two builds differ: %s vs %s", da, db)
	}
	checkBusyboxImage(t, a)
}

func TestReadBusyboxRejectsDynamic(t *testing.T) {
	// /bin/ls is dynamically linked on Debian.
	if _, _, err := readBusybox("/bin/ls"); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("readBusybox(/bin/ls) = %v, want a dynamic-linking error", err)
	}
	if _, _, err := readBusybox(filepath.Join(t.TempDir(), "none")); !os.IsNotExist(err) {
		t.Errorf("missing binary: %v, want not-exist", err)
	}
}

// TestSetupInstallsRequiredTools keeps setupPackages in sync with the
// package list scripts/setup.sh installs.
func TestSetupInstallsRequiredTools(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(root, "scripts", "lib", "packages.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	listed := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			listed[line] = true
		}
	}
	for bin, pkg := range setupPackages {
		if !listed[pkg] {
			t.Errorf("%s comes from %s, which scripts/lib/packages.txt does not list", bin, pkg)
		}
	}
	for _, pkg := range []string{"docker-registry", "busybox-static", "qemu-system-x86", "e2fsprogs"} {
		if !listed[pkg] {
			t.Errorf("packages.txt lacks %s", pkg)
		}
	}
}

// fakeTB records how a helper ended the test.
type fakeTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func runFake(fn func(testing.TB)) *fakeTB {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

func TestMissingCapability(t *testing.T) {
	tests := []struct {
		ci, bySetup     bool
		skipped, failed bool
	}{
		{ci: false, bySetup: false, skipped: true},
		{ci: false, bySetup: true, skipped: true},
		{ci: true, bySetup: false, skipped: true},
		{ci: true, bySetup: true, failed: true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("ci=%v/setup=%v", tc.ci, tc.bySetup), func(t *testing.T) {
			t.Setenv("CI", fmt.Sprint(tc.ci))
			f := runFake(func(tb testing.TB) { missing(tb, tc.bySetup, "no %s", "thing") })
			if f.skipped != tc.skipped || f.failed != tc.failed || !strings.HasPrefix(f.msg, "no thing") {
				t.Errorf("skipped=%v failed=%v msg=%q", f.skipped, f.failed, f.msg)
			}
		})
	}
	t.Run("binary", func(t *testing.T) {
		t.Setenv("CI", "true")
		f := runFake(func(tb testing.TB) { RequireBinary(tb, "banger-no-such-tool") })
		if !f.skipped {
			t.Errorf("unknown tool under CI: skipped=%v failed=%v, want a skip", f.skipped, f.failed)
		}
	})
}

func TestRequireBinaryFindsSbin(t *testing.T) {
	t.Setenv("PATH", "/bin")
	p := RequireBinary(t, "debugfs")
	if !strings.HasSuffix(p, "/debugfs") {
		t.Errorf("RequireBinary(debugfs) = %q", p)
	}
}

func TestCacheDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "cache")
	t.Setenv(CacheEnv, dir)
	got, err := CacheDir()
	if err != nil || got != dir {
		t.Fatalf("CacheDir() = %q, %v; want %q", got, err, dir)
	}
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() || st.Mode().Perm() != 0o755 {
		t.Errorf("cache dir: %v %v", st, err)
	}
	sub := CacheSubdir(t, "kernel")
	if sub != filepath.Join(dir, "kernel") {
		t.Errorf("CacheSubdir = %q", sub)
	}
}

func TestDetectAccel(t *testing.T) {
	accel := RequireKVMOrTCG(t)
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil && accel != AccelTCG {
		t.Errorf("PVM host: accel %s, want tcg", accel)
	}
	if _, err := os.Stat("/dev/kvm"); err != nil && accel != AccelTCG {
		t.Errorf("no /dev/kvm: accel %s, want tcg", accel)
	}
}

func TestBuildBinaries(t *testing.T) {
	const pkg = "./internal/testenv/testdata/hello"
	bins := BuildBinaries(t, pkg)
	p := bins.Paths[pkg]
	if filepath.Dir(p) != bins.Dir || filepath.Base(p) != "hello" {
		t.Fatalf("built %q in %q", p, bins.Dir)
	}
	st1, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p).Output()
	if err != nil || !strings.HasPrefix(string(out), "hello from ") {
		t.Fatalf("running %s: %q %v", p, out, err)
	}
	again := BuildBinaries(t, pkg)
	st2, err := os.Stat(again.Paths[pkg])
	if err != nil {
		t.Fatal(err)
	}
	if again.Paths[pkg] != p || !os.SameFile(st1, st2) || !st1.ModTime().Equal(st2.ModTime()) {
		t.Errorf("second BuildBinaries rebuilt: %s", again.Paths[pkg])
	}
}

func TestBuildBinariesProject(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the project binaries; skipped in -short")
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range []string{PkgBanger, PkgBangerd, PkgAgent} {
		if m, _ := filepath.Glob(filepath.Join(root, pkg, "*.go")); len(m) == 0 {
			t.Skipf("%s has no Go files yet", pkg)
		}
	}
	bins := BuildBinaries(t)
	for _, p := range []string{bins.Banger, bins.Bangerd, bins.Agent} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s: %v", p, err)
		}
	}
	f, err := elf.Open(bins.Agent)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked", bins.Agent)
		}
	}
}
