package firecracker

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
)

// Version is a Firecracker release number.
type Version struct{ Major, Minor, Patch int }

// MinVersion is the oldest Firecracker the driver runs. Older releases boot
// with an MP table and no ACPI, and distro kernels without
// VIRTIO_MMIO_CMDLINE_DEVICES (Debian's) then find no disks at all
// (notes/boot-lab.md §3.7).
var MinVersion = Version{1, 8, 0}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Less reports whether v is older than o.
func (v Version) Less(o Version) bool {
	if v.Major != o.Major {
		return v.Major < o.Major
	}
	if v.Minor != o.Minor {
		return v.Minor < o.Minor
	}
	return v.Patch < o.Patch
}

var versionRE = regexp.MustCompile(`Firecracker v(\d+)\.(\d+)\.(\d+)`)

// ParseVersion reads the version from `firecracker --version` output
// ("Firecracker v1.14.2", followed by a log line).
func ParseVersion(out string) (Version, error) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
		return Version{}, fmt.Errorf("no \"Firecracker vX.Y.Z\" in --version output %q", first)
	}
	var v Version
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	v.Patch, _ = strconv.Atoi(m[3])
	return v, nil
}

// probeVersion runs `bin --version` and checks the result is at least
// MinVersion.
func probeVersion(ctx context.Context, bin string) (Version, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return Version{}, errkind.WithHint(
			errkind.Wrap(errkind.Unavailable, err, "running %s --version", bin),
			"check that it is a Firecracker binary for this architecture")
	}
	v, err := ParseVersion(string(out))
	if err != nil {
		return Version{}, errkind.WithHint(errkind.Wrap(errkind.Unavailable, err, "%s is not a Firecracker binary", bin),
			"point firecracker_bin (or $"+BinaryEnv+") at a Firecracker release binary")
	}
	if v.Less(MinVersion) {
		return v, errkind.WithHint(
			errkind.New(errkind.Unavailable,
				"firecracker v%s at %s is too old: releases before v%s boot without ACPI, so distro kernels find no disks",
				v, bin, MinVersion),
			"install Firecracker v"+MinVersion.String()+" or newer (see docs/firecracker.md)")
	}
	return v, nil
}
