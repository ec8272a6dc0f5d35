package lookpath

import (
	"errors"
	"os/exec"
	"testing"
)

func TestFind(t *testing.T) {
	t.Setenv("PATH", "/nonexistent")
	// sh is in /bin (or /usr/bin) only: not found once PATH is useless.
	if _, err := Find("sh"); !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("sh without PATH: %v", err)
	}
	// e2fsck and ip live in an sbin directory on Debian.
	for _, name := range []string{"e2fsck", "ip"} {
		p, err := Find(name)
		if err != nil {
			t.Skipf("%s not installed here: %v", name, err)
		}
		if p != "/usr/sbin/"+name && p != "/sbin/"+name && p != "/usr/local/sbin/"+name {
			t.Errorf("%s found at %s, want an sbin dir", name, p)
		}
	}
	if p, err := Find("/bin/sh"); err != nil || p != "/bin/sh" {
		t.Errorf("absolute name: %q, %v", p, err)
	}
	if _, err := Find("no-such-tool-banger"); !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("missing tool: %v", err)
	}
}
