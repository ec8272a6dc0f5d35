package vmm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/errkind"
)

func TestCmdline(t *testing.T) {
	got, err := Cmdline("banger.root=/dev/vda  banger.ip=10.0.0.2/24", "banger.chan=serial:x")
	if err != nil {
		t.Fatal(err)
	}
	want := BaseCmdline + " banger.chan=serial:x banger.root=/dev/vda banger.ip=10.0.0.2/24"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	for _, bad := range []string{"banger.chan=vsock:1", "console=tty0", "tsc_early_khz=1"} {
		if _, err := Cmdline("quiet " + bad); errkind.Of(err) != errkind.InvalidArgument {
			t.Errorf("Cmdline(%q) = %v, want invalid argument", bad, err)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := Spec{ID: "a", RunDir: dir, Kernel: file, Initrd: file, CPUs: 1, MemoryMiB: 256,
		Disks: []Disk{{Path: file, ReadOnly: true}}, Net: &Net{Mode: NetTap, TapName: "tap0", MAC: "52:54:00:00:00:01"}}
	if err := good.Validate(); err != nil {
		t.Fatalf("good spec: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*Spec)
		kind *errkind.Kind
	}{
		{"no id", func(s *Spec) { s.ID = "" }, errkind.InvalidArgument},
		{"relative run dir", func(s *Spec) { s.RunDir = "run" }, errkind.InvalidArgument},
		{"zero cpus", func(s *Spec) { s.CPUs = 0 }, errkind.InvalidArgument},
		{"tiny memory", func(s *Spec) { s.MemoryMiB = 8 }, errkind.InvalidArgument},
		{"missing kernel", func(s *Spec) { s.Kernel = filepath.Join(dir, "nope") }, errkind.NotFound},
		{"kernel is dir", func(s *Spec) { s.Kernel = dir }, errkind.InvalidArgument},
		{"missing disk", func(s *Spec) { s.Disks = append(s.Disks, Disk{Path: "/nope"}) }, errkind.NotFound},
		{"tap without name", func(s *Spec) { s.Net = &Net{Mode: NetTap} }, errkind.InvalidArgument},
		{"bad mac", func(s *Spec) { s.Net = &Net{Mode: NetUser, MAC: "zz"} }, errkind.InvalidArgument},
		{"bad mode", func(s *Spec) { s.Net = &Net{Mode: "bridge"} }, errkind.InvalidArgument},
	}
	for _, tt := range tests {
		s := good
		s.Disks = append([]Disk(nil), good.Disks...)
		tt.mod(&s)
		if err := s.Validate(); errkind.Of(err) != tt.kind {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.kind)
		}
	}
}

func TestShortSocketDir(t *testing.T) {
	short := t.TempDir()
	got, err := ShortSocketDir(short, t.TempDir(), "agent.sock")
	if err != nil || got != short {
		t.Fatalf("short dir: %q, %v", got, err)
	}
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	if err := os.MkdirAll(long, 0o700); err != nil {
		t.Fatal(err)
	}
	links := t.TempDir()
	got, err = ShortSocketDir(long, links, "agent.sock")
	if err != nil {
		t.Fatal(err)
	}
	if len(got)+len("/agent.sock") > 107 {
		t.Errorf("%q still too long", got)
	}
	if target, _ := os.Readlink(got); target != long {
		t.Errorf("link %s -> %q, want %s", got, target, long)
	}
	again, err := ShortSocketDir(long, links, "agent.sock")
	if err != nil || again != got {
		t.Errorf("second call: %q, %v", again, err)
	}
	// A link with the same name pointing elsewhere is refused.
	if err := os.Remove(got); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/elsewhere", got); err != nil {
		t.Fatal(err)
	}
	if _, err := ShortSocketDir(long, links, "agent.sock"); errkind.Of(err) != errkind.Conflict {
		t.Errorf("hijacked link: %v, want conflict", err)
	}
}
