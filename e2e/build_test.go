package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
)

// TestImageBuild builds a small Dockerfile FROM the busybox test image in
// build VMs (no network), boots the result and checks each step's effect,
// rebuilds it from the cache, and checks the bad inputs.
func TestImageBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("boots build VMs; skipped in -short")
	}
	e := newVMEnv(t).env
	bctx := t.TempDir()
	files := map[string]string{
		"hello.txt": "from the context\n",
		"Dockerfile": `FROM busybox
ENV GREETING=hi
RUN echo "$GREETING" > /x
COPY hello.txt /opt/hello.txt
WORKDIR /srv
RUN cat /opt/hello.txt > copied
CMD ["sh"]
`,
		"Bad.Dockerfile":     "FROM busybox\nRUN true\nFROBNICATE now\n",
		"Fail.Dockerfile":    "FROM busybox\nRUN echo before-failure && exit 7\n",
		"Outside.Dockerfile": "FROM busybox\nCOPY ../escape /x\n",
	}
	for n, body := range files {
		if err := os.WriteFile(filepath.Join(bctx, n), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	r := e.run("image", "build", "--name", "built", "-o", "json", bctx)
	if r.code != 0 {
		t.Fatalf("build: %+v\ndaemon log:\n%s", r, e.daemonLog())
	}
	var im model.Image
	if err := json.Unmarshal([]byte(r.stdout), &im); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	if !im.Managed || im.KernelRef != "cloud" || im.Config.WorkingDir != "/srv" || !strings.HasPrefix(im.SourceRef, "dockerfile:") {
		t.Fatalf("image = %+v", im)
	}
	if !strings.Contains(r.stderr, "#1/4 RUN echo \"$GREETING\" > /x") {
		t.Errorf("build log not shown:\n%s", r.stderr)
	}
	log, err := os.ReadFile(filepath.Join(filepath.Dir(im.RootfsPath), "build.log"))
	if err != nil || !strings.Contains(string(log), "#4/4 RUN cat /opt/hello.txt > copied") {
		t.Errorf("build log beside the image: %v\n%s", err, log)
	}

	// Boot the result and check each step's effect.
	e.must("vm", "create", "--name", "b1", "--image", "built", "--memory", vmMemory, "--net", "none", "-o", "json")
	for cmd, want := range map[string]string{
		"cat /x":             "hi\n",
		"cat /opt/hello.txt": "from the context\n",
		"cat /srv/copied":    "from the context\n",
		"echo $GREETING":     "hi\n",
		"cat /etc/hostname":  "b1\n",
	} {
		if got := e.guest("b1", "sh", "-c", cmd); got != want {
			t.Errorf("%s = %q, want %q", cmd, got, want)
		}
	}
	e.must("vm", "delete", "--force", "b1")

	// A second build with no change comes from the cache.
	start := time.Now()
	r = e.run("image", "build", "--name", "built2", bctx)
	if r.code != 0 {
		t.Fatalf("rebuild: %+v", r)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cached rebuild took %v", d)
	}
	if !strings.Contains(r.stderr, "cached") {
		t.Errorf("rebuild not from cache:\n%s", r.stderr)
	}
	// image cache prune empties the step cache too (a dry run first).
	var pr api.CachePruneResult
	if err := json.Unmarshal([]byte(e.must("image", "cache", "prune", "--dry-run", "-o", "json")), &pr); err != nil {
		t.Fatal(err)
	}
	if pr.BuildStates < 1 || pr.BuildFreedBytes <= 0 || pr.BuildCacheDir == "" {
		t.Fatalf("dry-run prune: %+v", pr)
	}
	if err := json.Unmarshal([]byte(e.must("image", "cache", "prune", "-o", "json")), &pr); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(pr.BuildCacheDir); len(left) != 1 || left[0].Name() != ".lock" {
		t.Fatalf("build cache after prune: %v", left)
	}

	// Bad input: unknown instruction (line number), failing RUN (exit code,
	// output, no image, no build VM left), COPY outside the context.
	r = e.run("image", "build", "-f", filepath.Join(bctx, "Bad.Dockerfile"), "--name", "bad", bctx)
	if r.code == 0 || !strings.Contains(r.stderr, "line 3: unknown instruction FROBNICATE") {
		t.Fatalf("unknown instruction: %+v", r)
	}
	r = e.run("image", "build", "-f", filepath.Join(bctx, "Fail.Dockerfile"), "--name", "fail", bctx)
	if r.code == 0 || !strings.Contains(r.stderr, "line 2") || !strings.Contains(r.stderr, "exit code 7") || !strings.Contains(r.stderr, "before-failure") {
		t.Fatalf("failing RUN: %+v", r)
	}
	r = e.run("image", "build", "-f", filepath.Join(bctx, "Outside.Dockerfile"), "--name", "out", bctx)
	if r.code == 0 || !strings.Contains(r.stderr, "outside the build context") {
		t.Fatalf("COPY outside the context: %+v", r)
	}
	list := e.must("image", "list")
	for _, n := range []string{"bad", "fail", "out"} {
		if strings.Contains(list, n+" ") {
			t.Errorf("image %s published by a failed build:\n%s", n, list)
		}
	}
	if pids := qemuPIDs(e.home); len(pids) != 0 {
		t.Errorf("build VMs left running: %v", pids)
	}
	if left, _ := filepath.Glob(filepath.Join(e.home, "state", "images", "*.staging")); len(left) != 0 {
		t.Errorf("staging left: %v", left)
	}
}
