package imagebuild

import (
	"os"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/agent"
	"github.com/bangerdev/banger/internal/dockerfile"
)

// TestGoldenDockerfile keeps images/golden within what banger builds:
// it parses, plans, its COPY sources exist, and its agent unit is the one
// the agent installs.
func TestGoldenDockerfile(t *testing.T) {
	const dir = "../../images/golden"
	f, err := os.Open(dir + "/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	df, err := dockerfile.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := df.BaseRef(nil)
	if err != nil || ref != "docker.io/library/debian:bookworm" {
		t.Fatalf("base = %q, %v", ref, err)
	}
	if ref, err := df.BaseRef(map[string]string{"BASE": "golden-base"}); err != nil || ref != "golden-base" {
		t.Fatalf("base with BASE=golden-base = %q, %v", ref, err)
	}
	p, err := df.Plan(dockerfile.Config{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
		nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.UnusedArgs) != 0 {
		t.Errorf("unused build args: %v", p.UnusedArgs)
	}
	b := &Builder{}
	steps, err := b.planSteps(Request{Plan: p, Context: dir, Base: Base{Digest: "debian"}})
	if err != nil {
		t.Fatal(err)
	}
	var runs int
	for _, s := range steps {
		if s.Kind == dockerfile.StepRun {
			runs++
			env := strings.Join(s.Run.Env, " ")
			if !strings.Contains(env, "MISE_URL=https://registry.npmjs.org/@jdxcode/mise-linux-x64/-/mise-linux-x64-2026.9.15.tgz") ||
				!strings.Contains(env, "MISE_SHA256=b51f2463") {
				t.Errorf("MISE_URL not expanded: %v", s.Run.Env)
			}
		}
	}
	if runs != 3 {
		t.Errorf("%d RUN steps, want 3", runs)
	}
	if p.Config.WorkingDir != "/root" || !strings.Contains(strings.Join(p.Config.Env, " "), "LANG=C.UTF-8") {
		t.Errorf("config = %+v", p.Config)
	}
	unit, err := os.ReadFile(dir + "/banger-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	if string(unit) != agent.UnitFile {
		t.Errorf("images/golden/banger-agent.service differs from agent.UnitFile:\n%s", unit)
	}
	sshd, err := os.ReadFile(dir + "/sshd-banger.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no"} {
		if !strings.Contains(string(sshd), want) {
			t.Errorf("sshd drop-in lacks %q", want)
		}
	}
}
