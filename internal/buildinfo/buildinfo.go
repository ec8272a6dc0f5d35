// Package buildinfo holds the version stamped into banger's binaries.
package buildinfo

import (
	"fmt"
	"runtime/debug"
)

// Version and Commit are set with -ldflags "-X ...=" at build time.
var (
	Version = "0.1.0-dev"
	Commit  = ""
)

// String returns a one-line version description.
func String() string {
	c := Commit
	if c == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" && len(s.Value) >= 12 {
					c = s.Value[:12]
				}
			}
		}
	}
	if c == "" {
		return Version
	}
	return fmt.Sprintf("%s (commit %s)", Version, c)
}
