package doctor

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Version is a dotted release number such as 1.47.0. Missing components are
// zero, so "7.2" equals "7.2.0".
type Version struct {
	Major, Minor, Patch int
}

func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
}

// Compare returns -1, 0 or +1 as v is older than, equal to or newer than o.
func (v Version) Compare(o Version) int {
	for _, d := range [...]int{v.Major - o.Major, v.Minor - o.Minor, v.Patch - o.Patch} {
		switch {
		case d < 0:
			return -1
		case d > 0:
			return 1
		}
	}
	return 0
}

// Less reports whether v is older than o.
func (v Version) Less(o Version) bool { return v.Compare(o) < 0 }

// ParseVersion parses "1.47.0", "v1.14.2", "7.2" or "1.47.1-rc2". An optional
// leading "v" is accepted; anything after the numeric part of the last
// component (a pre-release or build suffix) is ignored. At most three
// components are read.
func ParseVersion(s string) (Version, error) {
	t := strings.TrimPrefix(strings.TrimSpace(s), "v")
	parts := strings.SplitN(t, ".", 3)
	var nums [3]int
	for i, p := range parts {
		end := 0
		for end < len(p) && p[end] >= '0' && p[end] <= '9' {
			end++
		}
		if end == 0 {
			return Version{}, fmt.Errorf("parsing version %q: component %d is not a number", s, i+1)
		}
		// Only the last component read may carry a suffix ("2-rc1", "0+dfsg").
		if end != len(p) && i != len(parts)-1 {
			return Version{}, fmt.Errorf("parsing version %q: component %d is not a number", s, i+1)
		}
		n, err := strconv.Atoi(p[:end])
		if err != nil {
			return Version{}, fmt.Errorf("parsing version %q: %w", s, err)
		}
		nums[i] = n
	}
	return Version{nums[0], nums[1], nums[2]}, nil
}

// Version-line patterns of the tools doctor inspects.
var (
	qemuVersionRE        = regexp.MustCompile(`QEMU emulator version (\d+(?:\.\d+){0,2})`)
	firecrackerVersionRE = regexp.MustCompile(`Firecracker v?(\d+(?:\.\d+){0,2})`)
	e2fsprogsVersionRE   = regexp.MustCompile(`(?m)^(?:mke2fs|e2fsck|debugfs) (\d+(?:\.\d+){0,2})`)
)

func parseWith(re *regexp.Regexp, tool, output string) (Version, error) {
	m := re.FindStringSubmatch(output)
	if m == nil {
		return Version{}, fmt.Errorf("no %s version in %q", tool, firstLine(output))
	}
	return ParseVersion(m[1])
}

// ParseQEMUVersion reads the output of `qemu-system-x86_64 --version`
// ("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)").
func ParseQEMUVersion(output string) (Version, error) {
	return parseWith(qemuVersionRE, "QEMU", output)
}

// ParseFirecrackerVersion reads the output of `firecracker --version`
// ("Firecracker v1.14.2").
func ParseFirecrackerVersion(output string) (Version, error) {
	return parseWith(firecrackerVersionRE, "Firecracker", output)
}

// ParseE2fsprogsVersion reads the output of `mke2fs -V` (also `e2fsck -V`,
// `debugfs -V`): "mke2fs 1.47.0 (5-Feb-2023)".
func ParseE2fsprogsVersion(output string) (Version, error) {
	return parseWith(e2fsprogsVersionRE, "e2fsprogs", output)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}
