package agent

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSSHHostKeysPerVM(t *testing.T) {
	keygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Skip("ssh-keygen not installed (openssh-client)")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("mkfs.ext4 not installed (e2fsprogs)")
	}
	root := t.TempDir()
	for _, d := range []string{"etc/ssh", "usr/bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/ssh/sshd_config"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	baked := filepath.Join(root, "etc/ssh/ssh_host_ed25519_key.pub")
	if err := os.WriteFile(baked, []byte("ssh-ed25519 AAAAbaked image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(keygen, filepath.Join(root, "usr/bin/ssh-keygen")); err != nil {
		t.Fatal(err)
	}
	disk := func(name string) string {
		p := filepath.Join(t.TempDir(), name)
		if out, err := exec.Command("truncate", "-s", "16M", p).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		if out, err := exec.Command(mkfs, "-q", "-F", p).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		return p
	}
	logf := func(f string, a ...any) { t.Logf(f, a...) }

	vm1 := disk("vm1")
	sshHostKeys(root, vm1, logf)
	key1, _ := os.ReadFile(baked)
	if len(key1) == 0 || strings.Contains(string(key1), "baked") {
		t.Fatalf("image key kept: %q", key1)
	}
	id, _ := ext4UUID(vm1)
	if m, _ := os.ReadFile(filepath.Join(root, hostKeysMarker)); strings.TrimSpace(string(m)) != id || len(id) != 32 {
		t.Fatalf("marker %q, uuid %q", m, id)
	}
	// Same VM (next boot): keys stay.
	sshHostKeys(root, vm1, logf)
	if again, _ := os.ReadFile(baked); string(again) != string(key1) {
		t.Fatal("keys regenerated on the same vm's next boot")
	}
	// Another VM from the same image: new keys.
	sshHostKeys(root, disk("vm2"), logf)
	if key2, _ := os.ReadFile(baked); string(key2) == string(key1) {
		t.Fatal("a second vm got the first vm's host keys")
	}
}
