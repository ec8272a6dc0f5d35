package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// layerNames are the layers the Debian rootfs is split into, bottom first.
var layerNames = []string{"usr", "var", "rest"}

// variants are the rootfs flavours: minbase, and minbase plus packages
// that bring setuid binaries, hardlinks and security.capability xattrs.
var variants = map[string][]string{
	"min": nil,
	"big": {"--include=git,curl,python3,iputils-ping,libcap2-bin,ca-certificates"},
}

// ensureLayers returns the layer tarballs of a debootstrap minbase
// bookworm rootfs (variant "min" or "big"), building and caching them under
// cacheDir when missing (needs root and the Debian mirror; 30–60 s).
func ensureLayers(ctx context.Context, cacheDir, variant string) ([]string, error) {
	extra, ok := variants[variant]
	if !ok {
		return nil, fmt.Errorf("unknown variant %q (min or big)", variant)
	}
	dir := filepath.Join(cacheDir, "layers")
	if variant != "min" {
		dir = filepath.Join(cacheDir, variant, "layers")
	}
	var paths []string
	missing := false
	for _, n := range layerNames {
		p := filepath.Join(dir, n+".tar")
		paths = append(paths, p)
		if _, err := os.Stat(p); err != nil {
			missing = true
		}
	}
	if !missing {
		return paths, nil
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("building the Debian rootfs needs root (debootstrap); or fill %s", dir)
	}
	mirror, err := debianMirror()
	if err != nil {
		return nil, err
	}
	root := dir + ".rootfs.staging"
	os.RemoveAll(root)
	defer os.RemoveAll(root)
	args := append([]string{"--variant=minbase"}, extra...)
	args = append(args, "bookworm", root, mirror)
	logf("debootstrap %s from %s (30–60 s)…", strings.Join(args[:len(args)-2], " "), mirror)
	if err := os.MkdirAll(filepath.Dir(root), 0o755); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "debootstrap", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("debootstrap: %w\n%s", err, tail(out))
	}
	staging := dir + ".staging"
	os.RemoveAll(staging)
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var rest []string
	for _, e := range ents {
		if e.Name() != "usr" && e.Name() != "var" {
			rest = append(rest, e.Name())
		}
	}
	sets := map[string][]string{"usr": {"usr"}, "var": {"var"}, "rest": rest}
	for _, n := range layerNames {
		args := append([]string{"--format=pax", "--xattrs", "--xattrs-include=*", "--numeric-owner", "--sort=name",
			"-cf", filepath.Join(staging, n+".tar"), "-C", root}, sets[n]...)
		if out, err := exec.CommandContext(ctx, "tar", args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("tar %s: %w\n%s", n, err, tail(out))
		}
	}
	os.RemoveAll(dir)
	if err := os.Rename(staging, dir); err != nil {
		return nil, err
	}
	return paths, nil
}

// debianMirror reads the mirror URI configured for apt.
func debianMirror() (string, error) {
	f, err := os.Open("/etc/apt/sources.list.d/debian.sources")
	if err != nil {
		return "", fmt.Errorf("finding the Debian mirror: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "URIs:"); ok {
			if fields := strings.Fields(rest); len(fields) > 0 {
				return fields[0], nil
			}
		}
	}
	return "", fmt.Errorf("no URIs: line in /etc/apt/sources.list.d/debian.sources")
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
