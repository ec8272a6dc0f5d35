// Package apt downloads Debian kernel packages with the host's apt
// configuration. Meta packages such as linux-image-cloud-amd64 hold no
// kernel; they are followed to the versioned linux-image-<release> package
// they depend on.
package apt

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/internal/errkind"
)

// maxMetaDepth bounds how many meta packages are followed.
const maxMetaDepth = 4

// Available reports whether apt-get and apt-cache are on PATH.
func Available() bool {
	for _, tool := range []string{"apt-get", "apt-cache"} {
		if _, err := exec.LookPath(tool); err != nil {
			return false
		}
	}
	return true
}

// ResolveKernelPackage returns the package that actually ships the kernel
// for pkg: pkg itself, or, when pkg is a meta package depending on another
// linux-image-* package, that package (followed transitively).
func ResolveKernelPackage(ctx context.Context, pkg string) (string, error) {
	cur := pkg
	for range maxMetaDepth {
		deps, err := depends(ctx, cur)
		if err != nil {
			return "", err
		}
		next := ""
		for _, d := range deps {
			if strings.HasPrefix(d, "linux-image-") && d != cur {
				next = d
				break
			}
		}
		if next == "" {
			return cur, nil
		}
		cur = next
	}
	return "", fmt.Errorf("resolving kernel package %s: too many meta packages", pkg)
}

// depends returns the package names in the Depends field of the candidate
// version of pkg (alternatives after "|" are ignored).
func depends(ctx context.Context, pkg string) ([]string, error) {
	out, err := run(ctx, "", "apt-cache", "show", "--no-all-versions", pkg)
	if err != nil {
		return nil, errkind.Wrap(errkind.NotFound, err, "looking up package %s", pkg)
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		v, ok := strings.CutPrefix(line, "Depends:")
		if !ok {
			continue
		}
		for _, alt := range strings.Split(v, ",") {
			first, _, _ := strings.Cut(alt, "|")
			name, _, _ := strings.Cut(strings.TrimSpace(first), " ")
			name, _, _ = strings.Cut(name, ":")
			if name != "" {
				names = append(names, name)
			}
		}
		break
	}
	return names, nil
}

// Download fetches the kernel package for pkg (following meta packages)
// into dir with `apt-get download` and returns the path of the .deb.
func Download(ctx context.Context, dir, pkg string) (string, error) {
	real, err := ResolveKernelPackage(ctx, pkg)
	if err != nil {
		return "", err
	}
	before, err := debs(dir)
	if err != nil {
		return "", err
	}
	if _, err := run(ctx, dir, "apt-get", "download", real); err != nil {
		return "", errkind.Wrap(errkind.Unavailable, err, "downloading package %s", real)
	}
	after, err := debs(dir)
	if err != nil {
		return "", err
	}
	var found string
	for p := range after {
		if !strings.HasPrefix(filepath.Base(p), real+"_") {
			continue
		}
		// Prefer the file this call created; apt-get may keep an older one.
		if found == "" || !before[p] {
			found = p
		}
	}
	if found != "" {
		return found, nil
	}
	return "", fmt.Errorf("downloading package %s: no .deb appeared in %s", real, dir)
}

func debs(dir string) (map[string]bool, error) {
	m, err := filepath.Glob(filepath.Join(dir, "*.deb"))
	if err != nil {
		return nil, err
	}
	set := make(map[string]bool, len(m))
	for _, p := range m {
		set[p] = true
	}
	return set, nil
}

func run(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
		}
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return stdout.String(), nil
}
