package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/testenv"
)

// TestRun drives `banger vm run`, workspaces, `vm cp` and the agent shell
// against real QEMU guests. One daemon, kernel and busybox image serve
// every subtest; each `vm run` boots its own small VM.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs (slow under TCG)")
	}
	e := rtEnv(t)
	repo := rtFixtureRepo(t)

	t.Run("exit-status", func(t *testing.T) {
		r := rtRun(t, e, nil, "vm", "run", "--rm", "--memory", vmMemMiB, "--net", "none", "--", "sh", "-c", "echo out; echo err >&2; tty -s || echo no-tty; exit 3")
		if r.code != 3 || r.stdout != "out\nno-tty\n" || !strings.Contains(r.stderr, "err\n") {
			t.Fatalf("exit 3: %+v", r)
		}
		if !regexpMatch(`(?m)^vm [a-z0-9-]+ · 1 vcpu · 512 MiB · image busybox$`, r.stderr) {
			t.Fatalf("spec line missing: %q", r.stderr)
		}
		rtNoVMs(t, e)
	})

	t.Run("workspace-rm", func(t *testing.T) {
		r := rtRun(t, e, nil, "vm", "run", "--rm", "--memory", vmMemMiB, "--net", "none", repo, "--", "cat", "tracked.txt")
		if r.code != 0 || r.stdout != "tracked content\n" {
			t.Fatalf("cat tracked.txt: %+v", r)
		}
		rtNoVMs(t, e)
	})

	t.Run("include-untracked", func(t *testing.T) {
		r := rtRun(t, e, nil, "vm", "run", "--rm", "--memory", vmMemMiB, "--net", "none", "--include-untracked", repo, "--", "ls", "-a")
		names := strings.Fields(r.stdout)
		if r.code != 0 || !slices.Contains(names, "untracked.txt") || !slices.Contains(names, ".git") || slices.Contains(names, "ignored.log") {
			t.Fatalf("ls -a with --include-untracked: %+v", r)
		}
	})

	t.Run("dry-run", func(t *testing.T) {
		r := rtRun(t, e, nil, "vm", "run", "--dry-run", repo)
		if r.code != 0 || r.stdout != ".gitignore\nbin.dat\nsecret.key\nsub/run.sh\ntracked.txt\n" {
			t.Fatalf("dry run: %+v", r)
		}
		if !strings.Contains(r.stderr, "1 untracked file left out") {
			t.Fatalf("dry run summary: %q", r.stderr)
		}
		r = rtRun(t, e, nil, "vm", "run", "--dry-run", "--include-untracked", repo, "--", "make")
		if !strings.Contains(r.stdout, "untracked.txt\n") || strings.Contains(r.stdout, "ignored.log") {
			t.Fatalf("dry run with untracked: %+v", r)
		}
		rtNoVMs(t, e)
	})

	t.Run("not-found-127", func(t *testing.T) {
		r := rtRun(t, e, nil, "vm", "run", "--rm", "--memory", vmMemMiB, "--net", "none", "--", "nosuchcmd", "arg")
		if r.code != 127 || !strings.Contains(r.stderr, `"nosuchcmd" not found`) {
			t.Fatalf("nosuchcmd: %+v", r)
		}
		rtNoVMs(t, e)
	})

	t.Run("bad-input", func(t *testing.T) {
		for _, args := range [][]string{
			{"vm", "run", "-d", "--rm"},
			{"vm", "run", "-d", "--", "true"},
			{"vm", "run", repo, "extra"},
		} {
			if r := rtRun(t, e, nil, args...); r.code != 2 {
				t.Errorf("%v: want usage error, got %+v", args, r)
			}
		}
		// Submodules are refused before anything is created.
		sub := rtGitRepo(t, map[string]string{"a.txt": "a"})
		rtGit(t, sub, "update-index", "--add", "--cacheinfo", "160000,"+rtGit(t, sub, "rev-parse", "HEAD")+",vendor/x")
		if r := rtRun(t, e, nil, "vm", "run", "--rm", sub, "--", "true"); r.code == 0 || !strings.Contains(r.stderr, "submodules") || !strings.Contains(r.stderr, "--mode full") {
			t.Errorf("submodule: %+v", r)
		}
		// A plain directory is copied whole, with a notice.
		plain := t.TempDir()
		os.WriteFile(filepath.Join(plain, "p.txt"), []byte("plain\n"), 0o644)
		r := rtRun(t, e, nil, "vm", "run", "--dry-run", plain)
		if r.code != 0 || r.stdout != "p.txt\n" || !strings.Contains(r.stderr, "not a git repository") {
			t.Errorf("plain dir: %+v", r)
		}
		rtNoVMs(t, e)
	})

	t.Run("pty-shell", func(t *testing.T) { rtPTYShell(t, e, repo) })

	t.Run("interrupt-rm", func(t *testing.T) {
		cmd := exec.Command(e.bins.Banger, "vm", "run", "--rm", "--name", "intr", "--memory", vmMemMiB, "--net", "none", repo, "--", "sleep", "60")
		cmd.Env = e.environ()
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond) // mid-create
		_ = cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		if code := exitOf(err); code != 130 {
			t.Fatalf("interrupted run: exit %d, %s", code, errb.String())
		}
		rtNoVMs(t, e)
	})

	t.Run("agent-lost-255", func(t *testing.T) {
		cmd := exec.Command(e.bins.Banger, "vm", "run", "--rm", "--name", "lost", "--memory", vmMemMiB, "--net", "none", "--", "sleep", "60")
		cmd.Env = e.environ()
		var errb rtSyncBuffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for !strings.Contains(errb.String(), "vm lost ·") { // the spec line: the VM is up
			if time.Now().After(deadline) {
				t.Fatalf("vm run did not start: %s", errb.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(time.Second)
		rtMust(t, e, "vm", "kill", "lost")
		code := exitOf(cmd.Wait())
		if code != 255 || !strings.Contains(errb.String(), "lost the connection") || !regexpMatch(`vm lost is (stopped|error)`, errb.String()) {
			t.Fatalf("agent lost: exit %d %s", code, errb.String())
		}
		rtNoVMs(t, e)
	})

	// A detached VM with the workspace serves the remaining subtests.
	r := rtRun(t, e, nil, "vm", "run", "-d", "--name", "ws", "--memory", vmMemMiB, "--net", "none", repo)
	if r.code != 0 || r.stdout != "ws\n" {
		t.Fatalf("vm run -d: %+v", r)
	}

	t.Run("rm-spares-existing", func(t *testing.T) {
		// --rm with the name of an existing VM fails and leaves that VM alone.
		if r := rtRun(t, e, nil, "vm", "run", "--rm", "--name", "ws", "--", "true"); r.code == 0 || !strings.Contains(r.stderr, "already exists") {
			t.Fatalf("vm run --rm --name ws: %+v", r)
		}
		if !slices.Contains(rtListVMs(t, e), "ws") {
			t.Fatal("--rm deleted a VM it did not create")
		}
	})

	t.Run("exec-in-workspace", func(t *testing.T) {
		r := rtRun(t, e, nil, "vm", "exec", "ws", "--", "sh", "-c", "pwd; ls -a; stat -c '%a %U' secret.key sub/run.sh")
		out := r.stdout
		if r.code != 0 || !strings.HasPrefix(out, "/root/repo\n") || strings.Contains(out, "untracked.txt") ||
			strings.Contains(out, "ignored.log") || !strings.Contains(out, "600 root\n755 root\n") {
			t.Fatalf("exec in workspace: %+v", r)
		}
		if r := rtRun(t, e, nil, "vm", "exec", "ws", "--", "nosuchcmd"); r.code != 127 {
			t.Fatalf("exec nosuchcmd: %+v", r)
		}
		// vm ssh without a network goes through the agent.
		if r := rtRun(t, e, []byte("from stdin\n"), "vm", "ssh", "ws", "--", "sh", "-c", "cat tracked.txt; cat; exit 4"); r.code != 4 || r.stdout != "tracked content\nfrom stdin\n" {
			t.Fatalf("vm ssh over the agent: %+v", r)
		}
		if r := rtRun(t, e, nil, "vm", "ssh", "--ssh", "ws"); r.code == 0 || !strings.Contains(r.stderr, "no network address") {
			t.Fatalf("vm ssh --ssh without a network: %+v", r)
		}
	})

	t.Run("cp-roundtrip", func(t *testing.T) {
		src := filepath.Join(t.TempDir(), "tree")
		os.MkdirAll(filepath.Join(src, "d"), 0o755)
		os.WriteFile(filepath.Join(src, "d", "private"), []byte("secret\n"), 0o600)
		os.WriteFile(filepath.Join(src, "tool"), []byte("#!/bin/sh\n"), 0o755)
		os.Symlink("d/private", filepath.Join(src, "link"))
		os.Chmod(filepath.Join(src, "d", "private"), 0o600)
		rtMust(t, e, "vm", "cp", src, "ws:/tmp/")
		if got := rtMust(t, e, "vm", "exec", "ws", "--", "sh", "-c", "stat -c '%a %U %N' /tmp/tree/d/private /tmp/tree/link"); !strings.Contains(got, "600 root") || !strings.Contains(got, "-> 'd/private'") {
			t.Fatalf("in guest: %q", got)
		}
		back := filepath.Join(t.TempDir(), "back")
		rtMust(t, e, "vm", "cp", "ws:/tmp/tree", back)
		fi, err := os.Stat(filepath.Join(back, "d", "private"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("private back: %v %v", fi, err)
		}
		if fi, _ := os.Stat(filepath.Join(back, "tool")); fi == nil || fi.Mode().Perm() != 0o755 {
			t.Fatalf("tool back: %v", fi)
		}
		if l, err := os.Readlink(filepath.Join(back, "link")); err != nil || l != "d/private" {
			t.Fatalf("link back: %q %v", l, err)
		}
		if b, _ := os.ReadFile(filepath.Join(back, "link")); string(b) != "secret\n" {
			t.Fatalf("content back: %q", b)
		}
		// A single file to a new name, and a missing source.
		rtMust(t, e, "vm", "cp", filepath.Join(src, "tool"), "ws:/tmp/renamed-tool")
		if got := rtMust(t, e, "vm", "exec", "ws", "--", "cat", "/tmp/renamed-tool"); got != "#!/bin/sh\n" {
			t.Fatalf("renamed: %q", got)
		}
		if r := rtRun(t, e, nil, "vm", "cp", "ws:/nope", back); r.code != 4 || !strings.Contains(r.stderr, "does not exist") {
			t.Fatalf("missing source: %+v", r)
		}
	})

	t.Run("workspace-export", func(t *testing.T) {
		rtMust(t, e, "vm", "exec", "ws", "--", "sh", "-c",
			`echo "guest line" >> tracked.txt && printf '\000\001\002' > new.bin && rm secret.key && echo junk > build.log`)
		patch := filepath.Join(t.TempDir(), "changes.patch")
		r := rtRun(t, e, nil, "vm", "workspace", "export", "ws")
		if r.code != 0 || !strings.Contains(r.stdout, "GIT binary patch") || strings.Contains(r.stdout, "build.log") {
			t.Fatalf("export: %+v", r)
		}
		os.WriteFile(patch, []byte(r.stdout), 0o644)
		rtGit(t, repo, "apply", "--check", patch)
		if st := rtGit(t, repo, "status", "--porcelain"); !strings.Contains(st, "untracked.txt") || strings.Contains(st, "tracked.txt\n") {
			t.Fatalf("export touched the host repo: %q", st)
		}
	})

	t.Run("exec-sync", func(t *testing.T) {
		os.WriteFile(filepath.Join(repo, "later.txt"), []byte("later\n"), 0o644)
		rtGit(t, repo, "add", "later.txt")
		rtGit(t, repo, "commit", "-q", "-m", "later")
		r := rtRun(t, e, nil, "vm", "exec", "ws", "--", "true")
		if r.code != 0 || !strings.Contains(r.stderr, "--sync") {
			t.Fatalf("stale workspace warning: %+v", r)
		}
		r = rtRun(t, e, nil, "vm", "exec", "--sync", "ws", "--", "cat", "later.txt")
		if r.code != 0 || r.stdout != "later\n" {
			t.Fatalf("exec --sync: %+v", r)
		}
		if r := rtRun(t, e, nil, "vm", "exec", "ws", "--", "true"); strings.Contains(r.stderr, "--sync") {
			t.Fatalf("warning after sync: %+v", r)
		}
	})

	rtMust(t, e, "vm", "delete", "-f", "ws")
	rtNoVMs(t, e)
}

// vmMemMiB keeps test VMs small.
const vmMemMiB = "512"

// rtEnv is an env whose daemon can boot VMs: banger-agent built next to
// bangerd, the Debian cloud kernel as "cloud", and busybox pulled from a
// loopback registry as "busybox" (the default image).
func rtEnv(t *testing.T) *env {
	t.Helper()
	testenv.RequireKVMOrTCG(t)
	testenv.RequireBinary(t, "git")
	testenv.BuildBinaries(t, testenv.PkgAgent)
	e := newEnv(t)
	e.importKernel(t)
	reg := testenv.StartRegistry(t)
	ref := testenv.PushBusybox(t, reg)
	e.must("image", "pull", ref, "--kernel-ref", "cloud")
	cfg := filepath.Join(e.home, "config", "config.toml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("default_image = \"busybox\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.stopDaemon() // it reads the config at start
	t.Cleanup(func() {
		// Whatever a failed subtest left, no VM outlives the test.
		for _, vm := range rtListVMs(t, e) {
			cmd := exec.Command(e.bins.Banger, "vm", "delete", "-f", vm)
			cmd.Env = e.environ()
			_ = cmd.Run()
		}
	})
	return e
}

func rtRun(t *testing.T, e *env, stdin []byte, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bins.Banger, args...)
	cmd.Env = e.environ()
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := exitOf(err)
	if code < 0 {
		t.Fatalf("running banger %v: %v", args, err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func rtMust(t *testing.T, e *env, args ...string) string {
	t.Helper()
	r := rtRun(t, e, nil, args...)
	if r.code != 0 {
		t.Fatalf("banger %s: exit %d\nstdout: %s\nstderr: %s\ndaemon log:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr, e.daemonLog())
	}
	return r.stdout
}

func rtListVMs(t *testing.T, e *env) []string {
	cmd := exec.Command(e.bins.Banger, "vm", "list", "-o", "json")
	cmd.Env = e.environ()
	out, err := cmd.Output()
	if err != nil {
		return nil
	}
	var vms []struct {
		Name string `json:"name"`
	}
	_ = json.Unmarshal(out, &vms)
	var names []string
	for _, vm := range vms {
		names = append(names, vm.Name)
	}
	return names
}

// rtNoVMs checks that no VM exists, in the API and on disk (a VM being
// deleted is waited for a few seconds).
func rtNoVMs(t *testing.T, e *env) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var left []string
		r := rtRun(t, e, nil, "vm", "list", "-o", "json")
		var vms []struct{ Name, State string }
		if err := json.Unmarshal([]byte(r.stdout), &vms); err != nil {
			t.Fatalf("vm list: %v %+v", err, r)
		}
		for _, vm := range vms {
			left = append(left, vm.Name+":"+vm.State)
		}
		dirs, _ := filepath.Glob(filepath.Join(e.home, "state", "vms", "*"))
		left = append(left, dirs...)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("VMs left behind: %v", left)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func rtGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// rtGitRepo makes a committed repository holding files.
func rtGitRepo(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rtGit(t, dir, "init", "-q", "-b", "main")
	rtGit(t, dir, "add", "-A")
	rtGit(t, dir, "commit", "-q", "-m", "init")
	return dir
}

// rtFixtureRepo is the workspace used by the tests: tracked files (one
// 0600, one executable in a subdirectory, one binary), an ignored file and
// an untracked file.
func rtFixtureRepo(t *testing.T) string {
	t.Helper()
	dir := rtGitRepo(t, map[string]string{
		"tracked.txt": "tracked content\n",
		".gitignore":  "*.log\n",
		"secret.key":  "k\n",
		"sub/run.sh":  "#!/bin/sh\necho run\n",
		"bin.dat":     "\x00\x01\x02\xff",
	})
	os.Chmod(filepath.Join(dir, "secret.key"), 0o600)
	os.Chmod(filepath.Join(dir, "sub", "run.sh"), 0o755)
	os.WriteFile(filepath.Join(dir, "ignored.log"), []byte("ignored\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "untracked.txt"), []byte("untracked\n"), 0o644)
	return dir
}

// rtPTYShell drives `vm run --rm PATH` (an interactive shell) inside tmux:
// the prompt opens in /root/repo, `echo` works, a window resize reaches
// the guest, and `exit` ends banger with status 0 and no VM left.
func rtPTYShell(t *testing.T, e *env, repo string) {
	testenv.RequireBinary(t, "tmux")
	sock := "banger-e2e-" + filepath.Base(e.home)
	tmux := func(args ...string) string {
		out, err := exec.Command("tmux", append([]string{"-L", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v %s", args, err, out)
		}
		return string(out)
	}
	envs := fmt.Sprintf("BANGER_HOME=%s BANGER_DAEMON_BIN=%s", e.home, e.bins.Bangerd)
	shell := fmt.Sprintf("env %s %s vm run --rm --net none --memory %s %s; echo BANGER-EXIT=$?; sleep 600", envs, e.bins.Banger, vmMemMiB, repo)
	tmux("new-session", "-d", "-s", "t", "-x", "120", "-y", "30", shell)
	t.Cleanup(func() { _ = exec.Command("tmux", "-L", sock, "kill-server").Run() })
	screen := func() string { return tmux("capture-pane", "-p", "-t", "t") }
	waitFor := func(what string, d time.Duration) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !regexpMatch(what, screen()) {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %q; screen:\n%s\ndaemon log:\n%s", what, screen(), e.daemonLog())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitFor(`(?m)#\s*$`, 2*time.Minute) // the guest shell's prompt
	tmux("send-keys", "-t", "t", "echo hi-$((40+2)) in $PWD", "Enter")
	waitFor(`(?m)^hi-42 in /root/repo$`, 30*time.Second)
	tmux("resize-window", "-t", "t", "-x", "101", "-y", "33")
	time.Sleep(300 * time.Millisecond)
	tmux("send-keys", "-t", "t", "stty size", "Enter")
	waitFor(`(?m)^33 101$`, 30*time.Second)
	// Ctrl-C interrupts a guest command, not banger.
	tmux("send-keys", "-t", "t", "sleep 100", "Enter")
	time.Sleep(time.Second)
	tmux("send-keys", "-t", "t", "C-c")
	tmux("send-keys", "-t", "t", "echo after-$((1+1))", "Enter")
	waitFor(`(?m)^after-2$`, 30*time.Second)
	tmux("send-keys", "-t", "t", "exit", "Enter")
	waitFor(`BANGER-EXIT=`, time.Minute)
	if s := screen(); !strings.Contains(s, "BANGER-EXIT=0") {
		t.Fatalf("shell exit status; screen:\n%s", s)
	}
	rtNoVMs(t, e)
}

// rtSyncBuffer is a buffer a child process writes while the test reads it.
type rtSyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *rtSyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *rtSyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
