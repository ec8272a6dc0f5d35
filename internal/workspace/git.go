package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/internal/errkind"
)

// gitEnvDrop are variables that would point git at another repository
// than the one a command names (set, for instance, inside git hooks).
var gitEnvDrop = []string{
	"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
	"GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_PREFIX", "GIT_COMMON_DIR", "GIT_NAMESPACE",
}

// gitCmd runs git in dir with extra environment and returns its stdout.
func gitCmd(ctx context.Context, dir string, env []string, args ...string) ([]byte, error) {
	var out, errb bytes.Buffer
	if err := gitRun(ctx, dir, env, &out, &errb, args...); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// gitRun runs git with stdout going to w.
func gitRun(ctx context.Context, dir string, env []string, w io.Writer, errb *bytes.Buffer, args ...string) error {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = gitEnv(env)
	cmd.Stdout = w
	if errb == nil {
		errb = &bytes.Buffer{}
	}
	cmd.Stderr = errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if i := strings.IndexByte(msg, '\n'); i > 0 && !strings.Contains(msg, "dubious ownership") {
			msg = msg[:i]
		}
		if msg == "" {
			msg = err.Error()
		}
		return &gitError{args: args, msg: msg, err: err}
	}
	return nil
}

type gitError struct {
	args []string
	msg  string
	err  error
}

func (e *gitError) Error() string { return fmt.Sprintf("git %s: %s", e.args[0], e.msg) }
func (e *gitError) Unwrap() error { return e.err }

func gitEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, d := range gitEnvDrop {
			if k == d {
				drop = true
				break
			}
		}
		if !drop {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// repoInfo describes the git work tree holding a directory.
type repoInfo struct {
	top    string // work tree top
	prefix string // directory relative to top, "" at the top
	gitDir string // absolute git dir of this work tree
	head   string // HEAD commit, "" before the first commit
}

// findRepo returns the work tree holding dir, or nil when dir is in none.
func findRepo(ctx context.Context, dir string) (*repoInfo, error) {
	if _, err := exec.LookPath("git"); err != nil {
		if hasDotGitAbove(dir) {
			return nil, errkind.WithHint(errkind.New(errkind.Unavailable,
				"%s is in a git repository but git is not installed on this host", dir),
				"install git, or copy the directory as it is with --mode full")
		}
		return nil, nil
	}
	out, err := gitCmd(ctx, dir, nil, "rev-parse", "--is-inside-work-tree")
	if err != nil {
		var ge *gitError
		if errors.As(err, &ge) && strings.Contains(ge.msg, "dubious ownership") {
			return nil, errkind.WithHint(errkind.Wrap(errkind.InvalidArgument, err, "inspecting %s", dir),
				"the repository belongs to another user; see `git config --global safe.directory`")
		}
		if errors.As(err, &ge) && strings.Contains(ge.msg, "not a git repository") {
			return nil, nil
		}
		return nil, fmt.Errorf("inspecting %s: %w", dir, err)
	}
	if strings.TrimSpace(string(out)) != "true" {
		if bare, _ := gitCmd(ctx, dir, nil, "rev-parse", "--is-bare-repository"); strings.TrimSpace(string(bare)) == "true" {
			return nil, errkind.New(errkind.InvalidArgument, "%s is a bare git repository: it has no files to copy", dir)
		}
		return nil, nil // inside a .git directory: treat as a plain directory
	}
	out, err = gitCmd(ctx, dir, nil, "rev-parse", "--show-toplevel", "--absolute-git-dir", "--show-prefix")
	if err != nil {
		return nil, fmt.Errorf("inspecting %s: %w", dir, err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) < 2 {
		return nil, fmt.Errorf("inspecting %s: unexpected git rev-parse output %q", dir, out)
	}
	r := &repoInfo{top: lines[0], gitDir: lines[1]}
	if len(lines) > 2 {
		r.prefix = strings.TrimSuffix(lines[2], "/")
	}
	if h, err := gitCmd(ctx, dir, nil, "rev-parse", "-q", "--verify", "HEAD^{commit}"); err == nil {
		r.head = strings.TrimSpace(string(h))
	}
	return r, nil
}

func hasDotGitAbove(dir string) bool {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(filepath.Join(d, ".git")); err == nil {
			return true
		}
		if d == filepath.Dir(d) {
			return false
		}
	}
}

// listGit fills a plan from git's index and untracked list.
func (p *Plan) listGit(ctx context.Context, r *repoInfo) error {
	out, err := gitCmd(ctx, p.Root, nil, "ls-files", "-z", "--stage")
	if err != nil {
		return fmt.Errorf("listing tracked files of %s: %w", p.Root, err)
	}
	seen := map[string]bool{}
	var subs []string
	var tracked []string
	for _, rec := range splitZ(out) {
		meta, path, ok := strings.Cut(rec, "\t")
		if !ok {
			continue
		}
		if strings.HasPrefix(meta, "160000 ") {
			subs = append(subs, path)
			continue
		}
		if !seen[path] {
			seen[path] = true
			tracked = append(tracked, path)
		}
	}
	if len(subs) > 0 {
		shown := subs
		if len(shown) > 3 {
			shown = append(shown[:3:3], "…")
		}
		return errkind.WithHint(errkind.New(errkind.InvalidArgument,
			"%s has git submodules (%s): banger copies only the repository's own tracked files",
			p.Root, strings.Join(shown, ", ")),
			"use --mode full to copy the directory as it is, submodule contents included")
	}
	out, err = gitCmd(ctx, p.Root, nil, "ls-files", "-z", "--others", "--exclude-standard")
	if err != nil {
		return fmt.Errorf("listing untracked files of %s: %w", p.Root, err)
	}
	var untracked []string
	for _, path := range splitZ(out) {
		if strings.HasSuffix(path, "/") { // a nested repository
			p.Notices = append(p.Notices, fmt.Sprintf("nested git repository %s left out", strings.TrimSuffix(path, "/")))
			continue
		}
		untracked = append(untracked, path)
	}
	if p.IncludeUntracked {
		for _, path := range untracked {
			p.addListed(path, true)
		}
	} else {
		p.SkippedUntracked = len(untracked)
	}
	for _, path := range tracked {
		p.addListed(path, false)
	}
	if p.MissingTracked > 0 {
		p.Notices = append(p.Notices, fmt.Sprintf("%d tracked %s deleted in the work tree left out", p.MissingTracked, plural(p.MissingTracked, "file", "files")))
	}
	return p.addGitDir(r)
}

// addListed adds a path git listed, if it exists as a file or symlink.
func (p *Plan) addListed(path string, untracked bool) {
	rel, ok := cleanRel(path)
	if !ok {
		return
	}
	fi, err := os.Lstat(filepath.Join(p.Root, filepath.FromSlash(rel)))
	if err != nil || fi.IsDir() || !copyable(fi.Mode()) {
		if !untracked {
			p.MissingTracked++
		}
		return
	}
	p.Files = append(p.Files, File{Path: rel, Size: fi.Size(), Mode: fi.Mode(), Untracked: untracked})
}

// addGitDir decides whether the repository metadata travels along: only
// when the workspace is the top of the work tree and .git is a directory.
func (p *Plan) addGitDir(r *repoInfo) error {
	if r.prefix != "" {
		p.Notices = append(p.Notices, fmt.Sprintf("%s is a subdirectory of the repository %s: copying its files without the git metadata", p.Root, r.top))
		return nil
	}
	dotgit := filepath.Join(p.Root, ".git")
	fi, err := os.Lstat(dotgit)
	if err != nil {
		return nil
	}
	if !fi.IsDir() {
		p.Notices = append(p.Notices, fmt.Sprintf("%s is a gitfile (a linked worktree or submodule checkout): git metadata not copied", dotgit))
		return nil
	}
	p.GitDir = dotgit
	return filepath.WalkDir(dotgit, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("listing %s: %w", path, err)
		}
		fi, err := d.Info()
		if err != nil {
			return nil // vanished (git gc, lock files)
		}
		if fi.Mode().IsRegular() {
			p.GitFiles++
			p.GitBytes += fi.Size()
		}
		return nil
	})
}

func splitZ(b []byte) []string {
	var out []string
	for _, s := range strings.Split(string(b), "\x00") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// snapshotIdentity is the author of snapshot commits; it is never pushed
// anywhere, but git refuses to commit without one.
var snapshotIdentity = []string{
	"GIT_AUTHOR_NAME=banger", "GIT_AUTHOR_EMAIL=banger@localhost",
	"GIT_COMMITTER_NAME=banger", "GIT_COMMITTER_EMAIL=banger@localhost",
}

// Snapshot returns a commit whose tree is the repository as this plan
// copies it: HEAD itself when the copied files match it, else a new
// commit on top of HEAD made with a temporary index. Neither the index nor
// any ref of the host repository changes (the new objects are loose and
// unreferenced). It returns "" for plans that are not git work trees.
func (p *Plan) Snapshot(ctx context.Context) (string, error) {
	if p.Kind != KindGit {
		return "", nil
	}
	r, err := findRepo(ctx, p.Root)
	if err != nil || r == nil {
		return "", fmt.Errorf("snapshotting %s: %w", p.Root, err)
	}
	tmp, err := os.MkdirTemp("", "banger-snapshot-")
	if err != nil {
		return "", fmt.Errorf("snapshotting %s: %w", p.Root, err)
	}
	defer os.RemoveAll(tmp)
	idx := filepath.Join(tmp, "index")
	if b, err := os.ReadFile(filepath.Join(r.gitDir, "index")); err == nil {
		if err := os.WriteFile(idx, b, 0o600); err != nil {
			return "", fmt.Errorf("snapshotting %s: %w", p.Root, err)
		}
	}
	env := append([]string{"GIT_INDEX_FILE=" + idx}, snapshotIdentity...)
	add := "-u"
	if p.IncludeUntracked {
		add = "-A"
	}
	if _, err := gitCmd(ctx, p.Root, env, "add", add, "--", "."); err != nil {
		return "", fmt.Errorf("snapshotting %s: %w", p.Root, err)
	}
	out, err := gitCmd(ctx, p.Root, env, "write-tree")
	if err != nil {
		return "", fmt.Errorf("snapshotting %s: %w", p.Root, err)
	}
	tree := strings.TrimSpace(string(out))
	args := []string{"commit-tree", tree, "-m", "banger workspace snapshot"}
	if r.head != "" {
		ht, err := gitCmd(ctx, p.Root, nil, "rev-parse", r.head+"^{tree}")
		if err == nil && strings.TrimSpace(string(ht)) == tree {
			return r.head, nil
		}
		args = append(args, "-p", r.head)
	}
	out, err = gitCmd(ctx, p.Root, env, args...)
	if err != nil {
		return "", fmt.Errorf("snapshotting %s: %w", p.Root, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Head returns the commit checked out in the work tree holding dir, or ""
// when there is none (not a repository, no commits, git missing).
func Head(ctx context.Context, dir string) string {
	r, err := findRepo(ctx, dir)
	if err != nil || r == nil {
		return ""
	}
	return r.head
}
