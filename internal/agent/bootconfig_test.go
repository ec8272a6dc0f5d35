package agent_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent"
)

func TestSplitCmdline(t *testing.T) {
	got := agent.SplitCmdline(`console=ttyS0  quiet banger.hostname="my box" a="b c"d` + "\n")
	want := []string{"console=ttyS0", "quiet", "banger.hostname=my box", "a=b cd"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestParseCmdline(t *testing.T) {
	cfg := agent.ParseCmdline("console=ttyS0 quiet banger.root=/dev/vda banger.overlay=vdb banger.work=/dev/vdc banger.modules=vdd " +
		"banger.hostname=dev-box banger.ip=172.30.0.2/24 banger.gw=172.30.0.1 banger.dns=172.30.0.1,1.1.1.1 " +
		"banger.mac=52:54:00:30:00:02 banger.chan=vsock:1024 banger.init=systemd banger.exit=reboot banger.future=x")
	want := agent.BootConfig{
		Root: "/dev/vda", Overlay: "/dev/vdb", Work: "/dev/vdc", Modules: "/dev/vdd", Hostname: "dev-box",
		Addr:    netip.MustParsePrefix("172.30.0.2/24"),
		Gateway: netip.MustParseAddr("172.30.0.1"),
		DNS:     []netip.Addr{netip.MustParseAddr("172.30.0.1"), netip.MustParseAddr("1.1.1.1")},
		MAC:     []byte{0x52, 0x54, 0, 0x30, 0, 2},
		Chan:    agent.Channel{Kind: "vsock", Port: 1024},
		Init:    "systemd", Exit: "reboot",
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got  %+v\nwant %+v", cfg, want)
	}

	if got := agent.ModulesStep("/dev/vdd", "6.1.0-56-cloud-amd64").String(); got != "mount /dev/vdd on /lib/modules/6.1.0-56-cloud-amd64 type ext4 (-)" {
		t.Errorf("modules step: %s", got)
	}

	def := agent.ParseCmdline("console=ttyS0 banger.chan=serial:org.banger.agent")
	if def.Init != "auto" || def.Exit != "poweroff" || def.Chan != (agent.Channel{Kind: "serial", Name: "org.banger.agent"}) || def.Root != "" || def.Warnings != nil {
		t.Errorf("defaults: %+v", def)
	}

	bad := agent.ParseCmdline("banger.ip=10.0.0.300/24 banger.gw=x banger.init=openrc banger.exit=halt banger.chan=tcp:1 banger.hostname=-bad- banger.mac=zz banger.dns=1.2.3.4,nope")
	if len(bad.Warnings) != 8 {
		t.Errorf("warnings %q", bad.Warnings)
	}
	if bad.Init != "auto" || bad.Exit != "poweroff" || bad.Addr.IsValid() || len(bad.DNS) != 1 {
		t.Errorf("bad values kept: %+v", bad)
	}

	// A gateway outside the subnet is dropped, not installed.
	off := agent.ParseCmdline("banger.ip=10.0.0.2/24 banger.gw=10.0.1.1")
	if off.Gateway.IsValid() || len(off.Warnings) != 1 {
		t.Errorf("off-subnet gateway: %+v", off)
	}
}

func TestParseChannel(t *testing.T) {
	for in, want := range map[string]agent.Channel{
		"serial:x.y":  {Kind: "serial", Name: "x.y"},
		"serial":      {Kind: "serial", Name: agent.DefaultSerialPort},
		"vsock":       {Kind: "vsock", Port: agent.DefaultVsockPort},
		"vsock:52000": {Kind: "vsock", Port: 52000},
	} {
		got, err := agent.ParseChannel(in)
		if err != nil || got != want {
			t.Errorf("%q: %+v %v", in, got, err)
		}
	}
	for _, in := range []string{"vsock:abc", "pipe:1", ""} {
		if _, err := agent.ParseChannel(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestRootPlan(t *testing.T) {
	plan := agent.RootPlan(agent.ParseCmdline("banger.root=/dev/vda banger.overlay=/dev/vdb"))
	var lines []string
	for _, s := range plan {
		lines = append(lines, s.String())
	}
	got := strings.Join(lines, "\n")
	want := strings.Join([]string{
		"mkdir /.banger/base",
		"mkdir /.banger/rw",
		"mkdir /newroot",
		"mount /dev/vda on /.banger/base type ext4 (-)",
		"mount /dev/vdb on /.banger/rw type ext4 (-)",
		"mkdir /.banger/rw/upper",
		"mkdir /.banger/rw/work",
		"mount overlay on /newroot type overlay (lowerdir=/.banger/base,upperdir=/.banger/rw/upper,workdir=/.banger/rw/work)",
		"mkdir /newroot/run",
		"mount tmpfs on /newroot/run type tmpfs (mode=0755)",
		"mkdir /newroot/run/banger/base",
		"mkdir /newroot/run/banger/rw",
		"move /.banger/base -> /newroot/run/banger/base",
		"move /.banger/rw -> /newroot/run/banger/rw",
		"mkdir /newroot/dev", "move /dev -> /newroot/dev",
		"mkdir /newroot/proc", "move /proc -> /newroot/proc",
		"mkdir /newroot/sys", "move /sys -> /newroot/sys",
	}, "\n")
	if got != want {
		t.Fatalf("plan:\n%s\nwant:\n%s", got, want)
	}
	if plan[3].Flags&unix.MS_RDONLY == 0 || plan[3].RetryData != "noload" {
		t.Errorf("base mount is not read-only with a noload retry: %+v", plan[3])
	}
	if plan[4].Flags&unix.MS_RDONLY != 0 {
		t.Errorf("overlay disk mounted read-only")
	}
	// Without an overlay disk the upper layer is a tmpfs.
	tmp := agent.RootPlan(agent.ParseCmdline("banger.root=/dev/vda"))
	if s := tmp[4].String(); s != "mount tmpfs on /.banger/rw type tmpfs (mode=0755)" {
		t.Errorf("no overlay disk: %s", s)
	}

	if n := len(agent.SystemPlan(false)); n != 3 {
		t.Errorf("systemd system plan has %d steps", n)
	}
	sp := agent.SystemPlan(true)
	if sp[len(sp)-1].FSType != "cgroup2" {
		t.Errorf("agent-init system plan lacks cgroup2: %+v", sp)
	}
	for _, s := range sp {
		if !s.Optional {
			t.Errorf("%s is not optional", s)
		}
	}
}

func TestHasKey(t *testing.T) {
	// The ACPI power button as the kernel shows it: KEY_POWER (116) is
	// bit 52 of the second 64-bit word from the right.
	if !agent.HasKey("10000000000000 0", 116) {
		t.Error("power button not recognised")
	}
	// A keyboard-like bitmap without KEY_POWER.
	if agent.HasKey("1 0 0 fffffffffffffffe", 116) || agent.HasKey("", 116) || agent.HasKey("zz 0", 116) {
		t.Error("false positive")
	}
	if !agent.HasKey("4 0 0 0", 194) {
		t.Error("bit 194 not found")
	}
}

func TestEtcFiles(t *testing.T) {
	if got := agent.HostsFile("box.example", netip.MustParsePrefix("172.30.0.2/24")); got !=
		"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n172.30.0.2\tbox.example box\n" {
		t.Errorf("hosts %q", got)
	}
	if got := agent.HostsFile("box", netip.Prefix{}); !strings.HasSuffix(got, "127.0.1.1\tbox\n") {
		t.Errorf("hosts without ip %q", got)
	}
	if got := agent.ResolvConf([]netip.Addr{netip.MustParseAddr("172.30.0.1"), netip.MustParseAddr("::1")}); got != "nameserver 172.30.0.1\nnameserver ::1\n" {
		t.Errorf("resolv.conf %q", got)
	}
}

func TestReadModuleList(t *testing.T) {
	p := filepath.Join(t.TempDir(), "modules.load")
	os.WriteFile(p, []byte("/lib/modules/virtio.ko\n\n# comment\nlib/modules/virtio_blk.ko\n"), 0o644)
	got, err := agent.ReadModuleList(p)
	if err != nil || !reflect.DeepEqual(got, []string{"/lib/modules/virtio.ko", "/lib/modules/virtio_blk.ko"}) {
		t.Fatalf("%q %v", got, err)
	}
}

func TestSeedWorkDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("owner checks need root")
	}
	src := filepath.Join(t.TempDir(), "root")
	os.MkdirAll(filepath.Join(src, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(src, ".ssh/authorized_keys"), []byte("key\n"), 0o600)
	os.WriteFile(filepath.Join(src, "script"), []byte("#!/bin/sh\n"), 0o755)
	os.Link(filepath.Join(src, "script"), filepath.Join(src, "script-link"))
	os.Symlink(".ssh/authorized_keys", filepath.Join(src, "keys"))
	os.Chown(filepath.Join(src, ".ssh"), 1000, 1001)
	os.Chmod(src, 0o710)
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(filepath.Join(src, "script"), old, old)

	dst := t.TempDir()
	seeded, err := agent.SeedWorkDir(src, dst)
	if err != nil || !seeded {
		t.Fatalf("seeded %v err %v", seeded, err)
	}
	check := func(rel string, mode os.FileMode, uid, gid uint32) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(dst, rel))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != mode || st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: %v %d:%d, want %v %d:%d", rel, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
		}
	}
	check(".", os.ModeDir|0o710, 0, 0)
	check(".ssh", os.ModeDir|0o700, 1000, 1001)
	check(".ssh/authorized_keys", 0o600, 0, 0)
	check("script", 0o755, 0, 0)
	check("keys", os.ModeSymlink|0o777, 0, 0)
	a, _ := os.Stat(filepath.Join(dst, "script"))
	b, _ := os.Stat(filepath.Join(dst, "script-link"))
	if !os.SameFile(a, b) {
		t.Error("hard link became a copy")
	}
	if !a.ModTime().Equal(old) {
		t.Errorf("mtime %v", a.ModTime())
	}
	if _, err := os.Stat(filepath.Join(dst, agent.SeedMarker)); err != nil {
		t.Error("no marker")
	}
	// A seeded disk is left alone.
	os.WriteFile(filepath.Join(dst, "script"), []byte("mine"), 0o755)
	seeded, err = agent.SeedWorkDir(src, dst)
	if err != nil || seeded {
		t.Fatalf("second seed: %v %v", seeded, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "script")); string(b) != "mine" {
		t.Error("user file overwritten")
	}
	// An image without /root gives an empty 0700 /root.
	empty := t.TempDir()
	os.Chmod(empty, 0o755)
	if seeded, err := agent.SeedWorkDir(filepath.Join(src, "missing"), empty); err != nil || !seeded {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(empty); fi.Mode().Perm() != 0o700 {
		t.Errorf("empty /root mode %v", fi.Mode())
	}
}
