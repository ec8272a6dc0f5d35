package vmlinux_test

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/kernel/kerneltest"
	"github.com/bangerdev/banger/internal/vmlinux"
)

// debianVmlinuz unpacks boot/vmlinuz-* from the cached Debian cloud kernel
// package.
func debianVmlinuz(t *testing.T) []byte {
	t.Helper()
	if testing.Short() {
		t.Skip("real-kernel test skipped in -short mode")
	}
	deb := kerneltest.DebianCloudDeb(t)
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed")
	}
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", `dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --wildcards './boot/vmlinuz-*'`, "sh", deb, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("unpacking vmlinuz from %s: %v: %s", deb, err, out)
	}
	m, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(m) != 1 {
		t.Fatalf("found %d vmlinuz files in %s", len(m), deb)
	}
	b, err := os.ReadFile(m[0])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExtractDebianCloud(t *testing.T) {
	bz := debianVmlinuz(t)
	h, err := vmlinux.ParseHeader(bz)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, codec, err := vmlinux.Extract(bz)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot protocol %#x, %s payload %d bytes at %#x -> %d bytes ELF in %v, release %s",
		h.BootProtocol, codec, h.PayloadLength, h.PayloadOffset, len(got), time.Since(start), vmlinux.Release(bz))

	f, err := elf.NewFile(bytes.NewReader(got))
	if err != nil {
		t.Fatalf("output is not a readable ELF: %v", err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Fatalf("ELF class %v machine %v type %v, want 64-bit x86-64 executable", f.Class, f.Machine, f.Type)
	}
	if rel, elfRel := vmlinux.Release(bz), vmlinux.Release(got); rel == "" || rel != elfRel {
		t.Fatalf("release from bzImage %q, from vmlinux %q", rel, elfRel)
	}

	// Compare with the reference decoder for the codec, when installed.
	payload := bz[h.PayloadOffset : h.PayloadOffset+h.PayloadLength]
	var ref []string
	switch codec {
	case vmlinux.CodecLZ4:
		ref = []string{"lz4", "-dc"}
	case vmlinux.CodecXZ:
		ref = []string{"xz", "-dc"}
	case vmlinux.CodecZstd:
		ref = []string{"zstd", "-dc"}
	case vmlinux.CodecGzip:
		ref = []string{"gzip", "-dc"}
	}
	if _, err := exec.LookPath(ref[0]); err != nil {
		t.Skipf("%s not installed; skipping byte comparison", ref[0])
	}
	if codec != vmlinux.CodecGzip {
		payload = payload[:len(payload)-4] // the size trailer the CLI does not expect
	}
	cmd := exec.Command(ref[0], ref[1:]...)
	cmd.Stdin = bytes.NewReader(payload)
	want, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v", ref, err)
	}
	if sha256.Sum256(got) != sha256.Sum256(want) {
		t.Fatalf("output (%d bytes) differs from %v (%d bytes)", len(got), ref, len(want))
	}
}
