// Package lookpath finds host executables the way banger needs: on PATH,
// then in the sbin directories, which a non-root PATH often lacks although
// e2fsprogs, iproute2, nftables and kmod install there on Debian.
package lookpath

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// sbinDirs are searched, in order, after PATH.
var sbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}

// Find returns the path of the executable name. A name with a slash is
// only checked, like exec.LookPath does. The error of a name found nowhere
// wraps exec.ErrNotFound.
func Find(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil || strings.ContainsRune(name, '/') {
		return p, err
	}
	for _, dir := range sbinDirs {
		c := filepath.Join(dir, name)
		if fi, serr := os.Stat(c); serr == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return c, nil
		}
	}
	return "", fmt.Errorf("%s: not on PATH or in %s: %w", name, strings.Join(sbinDirs, ":"), exec.ErrNotFound)
}
