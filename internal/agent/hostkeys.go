package agent

import (
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// hostKeysMarker records which VM the image's SSH host keys were made for.
const hostKeysMarker = "/etc/ssh/.banger-host-keys"

// ext4UUID reads the filesystem UUID from the superblock of an ext4 device
// (offset 1024 + 0x68, 16 bytes).
func ext4UUID(dev string) (string, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b := make([]byte, 16)
	if _, err := f.ReadAt(b, 1024+0x68); err != nil {
		return "", fmt.Errorf("reading the superblock of %s: %w", dev, err)
	}
	return hex.EncodeToString(b), nil
}

// sshHostKeys gives each VM its own SSH host keys: an image that ships sshd
// would otherwise hand the same keys to every VM made from it, which makes
// trust-on-first-use meaningless. The VM is identified by the UUID of its
// own overlay disk; keys are regenerated (ssh-keygen -A) once per VM.
func sshHostKeys(root, overlayDev string, logf func(string, ...any)) {
	if _, err := os.Stat(filepath.Join(root, "etc/ssh/sshd_config")); err != nil || overlayDev == "" {
		return
	}
	id, err := ext4UUID(overlayDev)
	if err != nil {
		logf("ssh host keys: %v", err)
		return
	}
	marker := filepath.Join(root, hostKeysMarker)
	if b, err := os.ReadFile(marker); err == nil && strings.TrimSpace(string(b)) == id {
		return
	}
	keygen := ""
	for _, p := range []string{"usr/bin/ssh-keygen", "bin/ssh-keygen"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			keygen = p
			break
		}
	}
	if keygen == "" {
		logf("ssh host keys: sshd present but no ssh-keygen; keeping the image's keys")
		return
	}
	old, _ := filepath.Glob(filepath.Join(root, "etc/ssh/ssh_host_*"))
	for _, p := range old {
		os.Remove(p)
	}
	// -f makes ssh-keygen -A write under root's /etc/ssh.
	if out, err := exec.Command(filepath.Join(root, keygen), "-A", "-f", root).CombinedOutput(); err != nil {
		logf("ssh host keys: ssh-keygen -A: %v: %s", err, strings.TrimSpace(string(out)))
		return
	}
	if err := os.WriteFile(marker, []byte(id+"\n"), 0o644); err != nil {
		logf("ssh host keys: %v", err)
		return
	}
	logf("ssh host keys: generated for this vm")
}
