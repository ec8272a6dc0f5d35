package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/testenv"
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
	if pids := testenv.QEMUPIDs(e.home); len(pids) != 0 {
		t.Errorf("build VMs left running: %v", pids)
	}
	if left, _ := filepath.Glob(filepath.Join(e.home, "state", "images", "*.staging")); len(left) != 0 {
		t.Errorf("staging left: %v", left)
	}
}

// TestImageBuildDaemonKilled kills the daemon while a RUN step runs: the
// next daemon kills the orphaned build VM and removes its run directory,
// and the next build drops the dead build's scratch space.
func TestImageBuildDaemonKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("boots build VMs; skipped in -short")
	}
	e := newVMEnv(t).env
	bctx := t.TempDir()
	if err := os.WriteFile(filepath.Join(bctx, "Dockerfile"), []byte("FROM busybox\nRUN sleep 600\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command(e.bins.Banger, "image", "build", "--name", "slow", bctx)
	build.Env = e.environ()
	if err := build.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = build.Process.Kill(); _ = build.Wait() }()
	runDir := filepath.Join(e.home, "run", "build")
	var pids []int
	for deadline := time.Now().Add(3 * time.Minute); len(pids) == 0; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no build vm appeared\ndaemon log:\n%s", e.daemonLog())
		}
		pids = testenv.QEMUPIDs(runDir)
	}
	// Let the RUN step start, then kill the daemon outright.
	time.Sleep(3 * time.Second)
	if err := syscall.Kill(e.daemonPID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = build.Wait()
	if left := testenv.QEMUPIDs(runDir); len(left) == 0 {
		t.Fatal("the build vm died with the daemon; nothing to test")
	}
	scratch, _ := filepath.Glob(filepath.Join(e.home, "cache", "build", "tmp", "build-*"))
	if len(scratch) == 0 {
		t.Fatal("no build scratch dir while the build ran")
	}

	e.must("image", "list") // starts a new daemon
	for deadline := time.Now().Add(10 * time.Second); len(testenv.QEMUPIDs(runDir)) > 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("build vm %v still runs after the daemon restarted", testenv.QEMUPIDs(runDir))
		}
	}
	if ents, _ := os.ReadDir(runDir); len(ents) != 0 {
		t.Fatalf("build run dirs left: %v", ents)
	}
	if r := e.run("image", "show", "slow"); r.code == 0 {
		t.Fatal("the interrupted build published an image")
	}
	// The next build (served from nothing: FROM busybox with no RUN) takes
	// the cache lock and removes the dead build's scratch space.
	if err := os.WriteFile(filepath.Join(bctx, "Quick.Dockerfile"), []byte("FROM busybox\nENV A=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.must("image", "build", "-f", filepath.Join(bctx, "Quick.Dockerfile"), "--name", "quick", bctx)
	if left, _ := filepath.Glob(filepath.Join(e.home, "cache", "build", "tmp", "build-*")); len(left) != 0 {
		t.Fatalf("dead build scratch left: %v", left)
	}
}
