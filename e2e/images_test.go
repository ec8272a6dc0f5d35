package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/kernel/kerneltest"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/testenv"
)

// TestImagePullBusybox pulls a busybox image from a real docker-registry on
// loopback through the CLI and daemon, then checks the ext4 it produced.
func TestImagePullBusybox(t *testing.T) {
	e := newEnv(t)
	reg := testenv.StartRegistry(t)
	ref := testenv.PushBusybox(t, reg)

	// No kernel yet: the pull is refused before any download, naming the flags.
	r := e.run("image", "pull", ref)
	if r.code == 0 || !strings.Contains(r.stderr+r.stdout, "--kernel") {
		t.Fatalf("pull without kernel: %+v", r)
	}

	e.importKernel(t)
	out := e.must("image", "pull", ref, "--kernel-ref", "cloud", "-o", "json")
	var im model.Image
	if err := json.Unmarshal([]byte(out), &im); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if im.Name != "busybox" || !im.Managed || im.KernelRef != "cloud" || !strings.HasPrefix(im.ManifestDigest, "sha256:") {
		t.Fatalf("image = %+v", im)
	}
	if im.SizeBytes < 1<<30 {
		t.Fatalf("size %d below the 1 GiB floor", im.SizeBytes)
	}
	if len(im.Config.Env) == 0 || !strings.HasPrefix(im.Config.Env[0], "PATH=") {
		t.Fatalf("image config env not kept: %+v", im.Config)
	}
	if out, err := exec.Command("e2fsck", "-fn", im.RootfsPath).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck: %v\n%s", err, out)
	}
	got := ext4Files(t, im.RootfsPath)
	for _, want := range testenv.BusyboxFiles(t) {
		if !got[want] {
			t.Errorf("missing %s in rootfs", want)
		}
	}
	// No staging dirs left behind.
	left, _ := filepath.Glob(filepath.Join(e.home, "state", "images", "*.staging"))
	if len(left) > 0 {
		t.Fatalf("staging left: %v", left)
	}

	// Same name again: already exists, before any download.
	if r := e.run("image", "pull", ref, "--kernel-ref", "cloud"); r.code == 0 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("second pull: %+v", r)
	}
	// A second pull under another name downloads nothing new (blob cache).
	e.must("image", "pull", ref, "--kernel-ref", "cloud", "--name", "busybox2")
	list := e.must("image", "list")
	if !strings.Contains(list, "busybox2") || !strings.Contains(list, "busybox") {
		t.Fatalf("list: %s", list)
	}
	e.must("image", "delete", "busybox2")
	if _, err := os.Stat(filepath.Dir(im.RootfsPath)); err != nil {
		t.Fatalf("deleting busybox2 touched busybox: %v", err)
	}
	if r := e.run("kernel", "rm", "cloud"); r.code == 0 || !strings.Contains(r.stderr, "used by image") {
		t.Fatalf("kernel rm while used: %+v", r)
	}
	out = e.must("image", "cache", "prune", "--dry-run")
	if !strings.Contains(out, "would free") {
		t.Fatalf("prune dry run: %s", out)
	}

	// Bad input: malformed ref, unknown repo; nothing is left behind.
	if r := e.run("image", "pull", "UPPER//bad::ref", "--kernel-ref", "cloud"); r.code == 0 {
		t.Fatalf("malformed ref accepted: %+v", r)
	}
	if r := e.run("image", "pull", reg.Host+"/nope:latest", "--kernel-ref", "cloud"); r.code == 0 {
		t.Fatalf("missing repo accepted: %+v", r)
	}
	left, _ = filepath.Glob(filepath.Join(e.home, "state", "images", "*.staging"))
	if len(left) > 0 {
		t.Fatalf("staging left after failures: %v", left)
	}
}

// importKernel imports the cached Debian cloud kernel as "cloud".
func (e *env) importKernel(t *testing.T) {
	t.Helper()
	deb := kerneltest.DebianCloudDeb(t)
	out := e.must("kernel", "import", "cloud", "--from-deb", deb)
	if !strings.Contains(out, "cloud") {
		t.Fatalf("kernel import: %s", out)
	}
}

// ext4Files lists every path in an ext4 image with debugfs.
func ext4Files(t *testing.T, img string) map[string]bool {
	t.Helper()
	files := map[string]bool{}
	var walk func(dir string)
	walk = func(dir string) {
		b, err := exec.Command("debugfs", "-R", "ls -p "+dir, img).Output()
		if err != nil {
			t.Fatalf("debugfs ls %s: %v", dir, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			// /inode/mode/uid/gid/name/size/
			f := strings.Split(line, "/")
			if len(f) < 7 {
				continue
			}
			name := f[5]
			if name == "." || name == ".." || name == "lost+found" {
				continue
			}
			p := filepath.Join(dir, name)
			files[p] = true
			if strings.HasPrefix(f[2], "04") { // directory
				walk(p)
			}
		}
	}
	walk("/")
	return files
}
