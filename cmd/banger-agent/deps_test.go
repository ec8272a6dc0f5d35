package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the guest binary free of the daemon's packages:
// of the module's own packages it may only use the agent, its protocol and
// errkind.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/bangerdev/banger/"
	allowed := map[string]bool{
		mod + "cmd/banger-agent":    true,
		mod + "internal/agent":      true,
		mod + "internal/agentproto": true,
		mod + "internal/errkind":    true,
	}
	thirdParty := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, mod) {
			if !allowed[p] {
				t.Errorf("banger-agent depends on %s", p)
			}
			continue
		}
		if first, _, _ := strings.Cut(p, "/"); strings.Contains(first, ".") {
			thirdParty[p] = true
		}
	}
	for p := range thirdParty {
		ok := false
		for _, prefix := range []string{"github.com/hashicorp/yamux", "github.com/creack/pty", "golang.org/x/sys/"} {
			ok = ok || strings.HasPrefix(p, prefix)
		}
		if !ok {
			t.Errorf("banger-agent depends on unexpected third-party package %s", p)
		}
	}
}

// TestStaticBuild checks the release build is a static executable.
func TestStaticBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildAgent(t)
	out, err := exec.Command("file", bin).Output()
	if err != nil {
		t.Skipf("file(1) not available: %v", err)
	}
	if !strings.Contains(string(out), "statically linked") {
		t.Fatalf("not static: %s", out)
	}
}

func buildAgent(t *testing.T) string {
	t.Helper()
	bin := t.TempDir() + "/banger-agent"
	cmd := exec.Command("go", "build", "-ldflags", "-s -w -X main.version=test", "-o", bin, ".")
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building banger-agent: %v\n%s", err, out)
	}
	return bin
}
