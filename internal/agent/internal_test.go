package agent

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"unsafe"
)

func TestRtentryLayout(t *testing.T) {
	// struct rtentry on x86_64 is 120 bytes with rt_dev at offset 88.
	var rt rtentry
	if s := unsafe.Sizeof(rt); s != 120 {
		t.Errorf("size %d", s)
	}
	if o := unsafe.Offsetof(rt.dev); o != 88 {
		t.Errorf("rt_dev at %d", o)
	}
	if o := unsafe.Offsetof(rt.flags); o != 56 {
		t.Errorf("rt_flags at %d", o)
	}
}

func TestPickInterface(t *testing.T) {
	sys := t.TempDir()
	mk := func(name, typ, addr, index string) {
		d := filepath.Join(sys, name)
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "type"), []byte(typ+"\n"), 0o644)
		os.WriteFile(filepath.Join(d, "address"), []byte(addr+"\n"), 0o644)
		os.WriteFile(filepath.Join(d, "ifindex"), []byte(index+"\n"), 0o644)
	}
	mk("lo", "772", "00:00:00:00:00:00", "1")
	mk("eth1", "1", "52:54:00:00:00:02", "3")
	mk("eth0", "1", "52:54:00:00:00:01", "2")
	mk("sit0", "776", "00:00:00:00", "4")
	if got := pickInterface(sys, nil); got != "eth0" {
		t.Errorf("first: %q", got)
	}
	mac, _ := net.ParseMAC("52:54:00:00:00:02")
	if got := pickInterface(sys, mac); got != "eth1" {
		t.Errorf("by mac: %q", got)
	}
	mac, _ = net.ParseMAC("52:54:00:00:00:09")
	if got := pickInterface(sys, mac); got != "" {
		t.Errorf("missing mac: %q", got)
	}
}

func TestIsSystemdImage(t *testing.T) {
	// Debian's merged /usr: /sbin -> usr/sbin, /usr/sbin/init -> ../lib/systemd/systemd.
	deb := t.TempDir()
	os.MkdirAll(filepath.Join(deb, "usr/sbin"), 0o755)
	os.MkdirAll(filepath.Join(deb, "usr/lib/systemd"), 0o755)
	os.WriteFile(filepath.Join(deb, "usr/lib/systemd/systemd"), nil, 0o755)
	os.Symlink("../lib/systemd/systemd", filepath.Join(deb, "usr/sbin/init"))
	os.Symlink("usr/sbin", filepath.Join(deb, "sbin"))
	if !isSystemdImage(deb) {
		t.Error("Debian layout not detected")
	}
	// busybox: /sbin/init -> /bin/busybox (absolute, inside the image).
	bb := t.TempDir()
	os.MkdirAll(filepath.Join(bb, "sbin"), 0o755)
	os.MkdirAll(filepath.Join(bb, "bin"), 0o755)
	os.WriteFile(filepath.Join(bb, "bin/busybox"), nil, 0o755)
	os.Symlink("/bin/busybox", filepath.Join(bb, "sbin/init"))
	if isSystemdImage(bb) {
		t.Error("busybox taken for systemd")
	}
	// Absolute link to systemd, and no init at all.
	abs := t.TempDir()
	os.MkdirAll(filepath.Join(abs, "sbin"), 0o755)
	os.MkdirAll(filepath.Join(abs, "lib/systemd"), 0o755)
	os.WriteFile(filepath.Join(abs, "lib/systemd/systemd"), nil, 0o755)
	os.Symlink("/lib/systemd/systemd", filepath.Join(abs, "sbin/init"))
	if !isSystemdImage(abs) {
		t.Error("absolute systemd link not detected")
	}
	if isSystemdImage(t.TempDir()) {
		t.Error("empty root taken for systemd")
	}
}
