package kernel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/errkind"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := NewStore(filepath.Join(t.TempDir(), "kernels"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// assertClean checks the store root holds exactly the given kernel names.
func assertClean(t *testing.T, s *Store, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("store holds %v, want %v", got, names)
	}
}

func TestImportDebCodecs(t *testing.T) {
	for _, codec := range []string{".xz", ".zst", ".gz", ""} {
		t.Run("data.tar"+codec, func(t *testing.T) {
			ctx := context.Background()
			s := newStore(t)
			deb := makeDeb(t, t.TempDir(), codec, kernelDebEntries(t))
			if _, err := exec.LookPath("dpkg-deb"); err == nil {
				// The fixture is a real .deb as far as dpkg is concerned.
				if out, err := exec.Command("dpkg-deb", "-c", deb).CombinedOutput(); err != nil {
					t.Fatalf("dpkg-deb -c: %v: %s", err, out)
				}
			}
			k, err := s.ImportDeb(ctx, "fake", deb)
			if err != nil {
				t.Fatal(err)
			}
			want := fakeVmlinux()
			sum := sha256.Sum256(want)
			if k.Name != "fake" || k.Version != fakeRelease || k.SHA256 != hex.EncodeToString(sum[:]) ||
				k.Source != "deb:"+filepath.Base(deb) || !k.HasModules || !k.HasVmlinuz || k.HasInitrd ||
				k.Codec != "gzip" || k.Size != int64(len(want)) || k.ImportedAt.IsZero() {
				t.Fatalf("kernel = %+v", k)
			}
			if got, _ := os.ReadFile(k.Vmlinux); !bytes.Equal(got, want) {
				t.Fatal("vmlinux differs from the packaged kernel's ELF")
			}
			if got, _ := os.ReadFile(k.Vmlinuz); !bytes.Equal(got, fakeBzImage(t)) {
				t.Fatal("vmlinuz differs from the packaged bzImage")
			}
			if got, _ := os.ReadFile(k.Config); string(got) != "CONFIG_VIRTIO=m\n" {
				t.Fatalf("config = %q", got)
			}
			if got, _ := os.ReadFile(filepath.Join(k.ModulesDir, "kernel/drivers/virtio/virtio.ko")); string(got) != "\x7fELF fake module" {
				t.Fatalf("module = %q", got)
			}
			if _, err := os.Lstat(filepath.Join(k.ModulesDir, "build")); !os.IsNotExist(err) {
				t.Error("build symlink was copied")
			}
			entries, _ := os.ReadDir(k.Dir)
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if strings.Join(names, ",") != "config,manifest.json,modules,vmlinux,vmlinuz" {
				t.Errorf("kernel dir holds %v", names)
			}
			var m Manifest
			b, _ := os.ReadFile(filepath.Join(k.Dir, ManifestFile))
			if err := json.Unmarshal(b, &m); err != nil || m != k.Manifest {
				t.Fatalf("manifest.json = %s (%v)", b, err)
			}
			for _, n := range []string{"escape", "etc"} {
				if _, err := os.Stat(filepath.Join(filepath.Dir(s.Dir()), n)); err == nil {
					t.Errorf("hostile entry %s written outside the store", n)
				}
			}
			assertClean(t, s, "fake")
		})
	}
}

func TestStoreLifecycle(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	deb := makeDeb(t, t.TempDir(), ".gz", kernelDebEntries(t))
	if _, err := s.ImportDeb(ctx, "k1", deb); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportDeb(ctx, "k1", deb); !errors.Is(err, errkind.AlreadyExists) {
		t.Fatalf("duplicate import: %v", err)
	}
	if _, err := s.ImportDeb(ctx, "k0.test", deb); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "k0.test" || list[1].Name != "k1" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	k, err := s.Get(ctx, "k1")
	if err != nil || k.Version != fakeRelease || k.Model().SHA256 != k.SHA256 || k.Model().Dir != k.Dir {
		t.Fatalf("Get = %+v, %v", k, err)
	}
	if err := s.Remove(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "k1"); !errors.Is(err, errkind.NotFound) {
		t.Fatalf("Get after Remove: %v", err)
	}
	if err := s.Remove(ctx, "k1"); !errors.Is(err, errkind.NotFound) {
		t.Fatalf("second Remove: %v", err)
	}
	assertClean(t, s, "k0.test")

	for _, bad := range []string{"", "UPPER", "-lead", "a/b", "..", "x.staging", "a..b", strings.Repeat("a", 64)} {
		if _, err := s.Get(ctx, bad); !errors.Is(err, errkind.InvalidArgument) {
			t.Errorf("Get(%q): %v", bad, err)
		}
		if _, err := s.ImportDeb(ctx, bad, deb); !errors.Is(err, errkind.InvalidArgument) {
			t.Errorf("ImportDeb(%q): %v", bad, err)
		}
	}
	if err := ValidateName(strings.Repeat("a", 63)); err != nil {
		t.Errorf("63-char name rejected: %v", err)
	}
	assertClean(t, s, "k0.test")
}

func TestConcurrentImportConflict(t *testing.T) {
	s := newStore(t)
	if err := os.Mkdir(filepath.Join(s.Dir(), "busy.staging"), 0o755); err != nil {
		t.Fatal(err)
	}
	deb := makeDeb(t, t.TempDir(), ".gz", kernelDebEntries(t))
	if _, err := s.ImportDeb(context.Background(), "busy", deb); !errors.Is(err, errkind.Conflict) {
		t.Fatalf("import while staging exists: %v", err)
	}
	// The in-progress staging directory is left to its owner.
	assertClean(t, s, "busy.staging")
}

func TestImportDebRejects(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	dir := t.TempDir()
	noKernel := makeDeb(t, dir, ".gz", kernelDebEntries(t)[5:])
	text := filepath.Join(dir, "notes.deb")
	os.WriteFile(text, []byte("just some text, not an ar archive\n"), 0o644)
	for name, p := range map[string]string{"no kernel": noKernel, "not a deb": text} {
		if _, err := s.ImportDeb(ctx, "x", p); !errors.Is(err, errkind.InvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := s.ImportDeb(ctx, "x", filepath.Join(dir, "missing.deb")); !errors.Is(err, errkind.NotFound) {
		t.Errorf("missing deb: %v", err)
	}
	// A package whose vmlinuz is not a kernel.
	entries := kernelDebEntries(t)
	entries[4].data = []byte("#!/bin/sh\necho not a kernel\n")
	bad := makeDeb(t, t.TempDir(), ".gz", entries)
	if _, err := s.ImportDeb(ctx, "x", bad); !errors.Is(err, errkind.InvalidArgument) {
		t.Errorf("bogus vmlinuz: %v", err)
	}
	// Corrupt compressed data (with the xz tool, when installed, and the
	// pure-Go decoder).
	for _, codec := range []string{".xz", ".zst", ".gz"} {
		p := makeDeb(t, t.TempDir(), codec, kernelDebEntries(t))
		b, _ := os.ReadFile(p)
		for i := len(b) - 200; i < len(b)-100; i++ {
			b[i] ^= 0x5a
		}
		os.WriteFile(p, b, 0o644)
		if _, err := s.ImportDeb(ctx, "x", p); !errors.Is(err, errkind.InvalidArgument) {
			t.Errorf("corrupt data.tar%s: %v", codec, err)
		}
	}
	assertClean(t, s)
}

func TestImportFiles(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bz := write("vmlinuz", fakeBzImage(t))
	elfPath := write("vmlinux", fakeVmlinux())
	initrd := write("initrd.img", []byte("070701 fake initrd"))
	write("lib/modules/"+fakeRelease+"/kernel/fs/overlay.ko", []byte("mod"))
	text := write("README", []byte("not a kernel"))

	s := newStore(t)
	cases := []struct {
		name  string
		files Files
		check func(Kernel) bool
	}{
		{"bz-only", Files{Vmlinuz: bz}, func(k Kernel) bool { return k.HasVmlinuz && k.Codec == "gzip" }},
		{"elf-only", Files{Vmlinux: elfPath}, func(k Kernel) bool { return !k.HasVmlinuz && k.Codec == "" && k.Vmlinuz == "" }},
		{"both", Files{Vmlinuz: bz, Vmlinux: elfPath}, func(k Kernel) bool { return k.HasVmlinuz && k.Codec == "" }},
		{"swapped", Files{Vmlinuz: elfPath, Vmlinux: bz}, func(k Kernel) bool { return k.HasVmlinuz }},
		{"full", Files{Vmlinuz: bz, Initrd: initrd, ModulesDir: filepath.Join(src, "lib/modules")}, func(k Kernel) bool {
			got, _ := os.ReadFile(filepath.Join(k.ModulesDir, "kernel/fs/overlay.ko"))
			ird, _ := os.ReadFile(k.Initrd)
			return k.HasModules && k.HasInitrd && string(got) == "mod" && string(ird) == "070701 fake initrd"
		}},
	}
	sum := sha256.Sum256(fakeVmlinux())
	for _, tc := range cases {
		k, err := s.ImportFiles(ctx, tc.name, tc.files)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if k.SHA256 != hex.EncodeToString(sum[:]) || k.Version != fakeRelease || !strings.HasPrefix(k.Source, "files:") || !tc.check(k) {
			t.Errorf("%s: kernel = %+v", tc.name, k)
		}
	}

	for name, f := range map[string]Files{
		"text":          {Vmlinuz: text},
		"text as elf":   {Vmlinux: text},
		"two bzImages":  {Vmlinuz: bz, Vmlinux: bz},
		"nothing":       {Initrd: initrd},
		"bad modules":   {Vmlinuz: bz, ModulesDir: src},
		"initrd as elf": {Vmlinux: initrd},
	} {
		if _, err := s.ImportFiles(ctx, "bad", f); !errors.Is(err, errkind.InvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := s.ImportFiles(ctx, "bad", Files{Vmlinuz: filepath.Join(src, "nope")}); !errors.Is(err, errkind.NotFound) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := s.ImportFiles(ctx, "bad", Files{Vmlinuz: bz, ModulesDir: filepath.Join(src, "nope")}); !errors.Is(err, errkind.NotFound) {
		t.Errorf("missing modules dir: %v", err)
	}
	assertClean(t, s, "both", "bz-only", "elf-only", "full", "swapped")
}

func TestCatalog(t *testing.T) {
	entries, err := Catalog()
	if err != nil || len(entries) == 0 {
		t.Fatalf("Catalog = %v, %v", entries, err)
	}
	e, err := Lookup(DefaultName)
	if err != nil || e.Source.Kind != "apt" || e.Source.Package == "" || e.Description == "" {
		t.Fatalf("Lookup(%s) = %+v, %v", DefaultName, e, err)
	}
	if _, err := Lookup("no-such-kernel"); !errors.Is(err, errkind.NotFound) {
		t.Fatalf("Lookup unknown: %v", err)
	}
	if _, err := newStore(t).Pull(context.Background(), "no-such-kernel"); !errors.Is(err, errkind.NotFound) {
		t.Fatalf("Pull unknown: %v", err)
	}
	for _, bad := range []string{
		`{"version": 2, "kernels": []}`,
		`{"version": 1, "kernels": [{"name": "Bad Name", "source": {"kind": "apt", "package": "x"}}]}`,
		`{"version": 1, "kernels": [{"name": "a", "source": {"kind": "ftp"}}]}`,
		`{"version": 1, "kernels": [{"name": "a", "source": {"kind": "apt", "package": "x"}}, {"name": "a", "source": {"kind": "apt", "package": "x"}}]}`,
	} {
		if _, err := parseCatalog([]byte(bad)); err == nil {
			t.Errorf("parseCatalog accepted %s", bad)
		}
	}
}
