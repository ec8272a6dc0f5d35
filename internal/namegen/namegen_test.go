package namegen

import (
	"regexp"
	"testing"
)

var label = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func TestNamesAreDNSLabels(t *testing.T) {
	for i := 0; i < 500; i++ {
		if n := New(); !label.MatchString(n) {
			t.Fatalf("%q is not a DNS label", n)
		}
	}
}

func TestUniqueAvoidsTaken(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		n := Unique(func(s string) bool { return seen[s] })
		if seen[n] {
			t.Fatalf("duplicate %q", n)
		}
		seen[n] = true
	}
}
