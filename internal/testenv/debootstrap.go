package testenv

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DebianImage describes a Debian bookworm ext4 image built with
// debootstrap for tests.
type DebianImage struct {
	// File is the image's name in the test cache dir.
	File string
	// Label is the ext4 volume label.
	Label string
	// Include lists extra packages (--include).
	Include []string
	// Setup, if set, adjusts the tree before the ext4 is made.
	Setup func(tree string) error
}

// BuildDebianImage returns the path of a cached `debootstrap
// --variant=minbase bookworm` ext4 image (1 GiB), building it on first use
// under a file lock shared by concurrent test processes. It skips the test
// when debootstrap cannot reach the host's Debian mirror.
func BuildDebianImage(t testing.TB, spec DebianImage) string {
	t.Helper()
	RequireRoot(t)
	RequireBinary(t, "debootstrap")
	RequireBinary(t, "mkfs.ext4")
	dir, err := CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, spec.File)
	lockf, err := os.OpenFile(img+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lockf.Close()
	if err := syscall.Flock(int(lockf.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img); err == nil {
		return img
	}
	tree, err := os.MkdirTemp(dir, ".debootstrap-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tree)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	mirror := DebianMirror()
	args := []string{"--variant=minbase"}
	if len(spec.Include) > 0 {
		args = append(args, "--include="+strings.Join(spec.Include, ","))
	}
	out, err := exec.CommandContext(ctx, "debootstrap", append(args, "bookworm", tree, mirror)...).CombinedOutput()
	if err != nil {
		s := string(out)
		if len(s) > 2000 {
			s = s[len(s)-2000:]
		}
		t.Skipf("debootstrap from %s failed (mirror unreachable?): %v\n%s", mirror, err, s)
	}
	if spec.Setup != nil {
		if err := spec.Setup(tree); err != nil {
			t.Fatal(err)
		}
	}
	tmp := img + ".tmp"
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", spec.Label, "-d", tree, tmp, "1G").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if err := os.Rename(tmp, img); err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s in %v", img, time.Since(start).Round(time.Second))
	return img
}

// DebianMirror is the first Debian archive URI of the host's apt sources
// (deb.debian.org when none is found).
func DebianMirror() string {
	for _, f := range []string{"/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) >= 2 && f[0] == "URIs:" && !strings.Contains(f[1], "security"):
				return f[1]
			case len(f) >= 3 && f[0] == "deb" && !strings.Contains(f[1], "security") && strings.HasPrefix(f[1], "http"):
				return f[1]
			}
		}
	}
	return "http://deb.debian.org/debian"
}
