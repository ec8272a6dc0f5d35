package workspace

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/internal/errkind"
)

// ExportOptions say which host repository a guest copy is compared with.
type ExportOptions struct {
	// RepoRoot is the host work tree the workspace came from and Prefix
	// the workspace's directory inside it ("" for the top).
	RepoRoot string
	Prefix   string
	// Base is the commit (or any revision) the patch starts from.
	Base string
}

// Export writes to out a binary-safe patch (git diff --binary) taking the
// host repository's Base to the guest's work tree. guestTar is a tar
// stream of the guest workspace directory whose entries are named from
// its base name ("repo/…", as the agent's get operation sends them); the
// guest's .git is ignored, and the guest's .gitignore files decide what is
// left out. Commits made in the guest are included through the files they
// changed.
//
// Nothing in the host repository changes: git runs with a temporary index
// and a temporary object directory that borrows the repository's objects
// as an alternate, so it also works when the repository belongs to
// another user.
func Export(ctx context.Context, guestTar io.Reader, opts ExportOptions, out io.Writer) error {
	if opts.RepoRoot == "" {
		return errkind.New(errkind.InvalidArgument, "the workspace was not copied from a git repository: nothing to diff against")
	}
	if opts.Base == "" {
		opts.Base = "HEAD"
	}
	if _, err := exec.LookPath("git"); err != nil {
		return errkind.New(errkind.Unavailable, "exporting a workspace needs git on the host (apt-get install git)")
	}
	tmp, err := os.MkdirTemp("", "banger-export-")
	if err != nil {
		return fmt.Errorf("exporting workspace: %w", err)
	}
	defer os.RemoveAll(tmp)

	wt := filepath.Join(tmp, "wt")
	prefix := strings.Trim(filepath.ToSlash(opts.Prefix), "/")
	_, err = ExtractTar(guestTar, wt, ExtractOptions{Map: func(name string) string {
		_, rest, ok := strings.Cut(name, "/")
		if !ok || rest == ".git" || strings.HasPrefix(rest, ".git/") {
			return "" // the top directory itself, or guest git metadata
		}
		if prefix != "" {
			return path.Join(prefix, rest)
		}
		return rest
	}})
	if err != nil {
		return fmt.Errorf("receiving the guest workspace: %w", err)
	}

	dirs, err := gitCmd(ctx, opts.RepoRoot, nil, "-c", "safe.directory=*", "rev-parse", "--absolute-git-dir", "--git-common-dir")
	if err != nil {
		return errkind.Wrap(errkind.NotFound, err, "opening host repository %s", opts.RepoRoot)
	}
	lines := strings.Split(strings.TrimSpace(string(dirs)), "\n")
	if len(lines) != 2 {
		return fmt.Errorf("opening host repository %s: unexpected git rev-parse output %q", opts.RepoRoot, dirs)
	}
	gitDir, common := lines[0], lines[1]
	if !filepath.IsAbs(common) {
		common = filepath.Join(opts.RepoRoot, common)
	}
	objects := filepath.Join(tmp, "objects")
	if err := os.MkdirAll(filepath.Join(objects, "pack"), 0o700); err != nil {
		return fmt.Errorf("exporting workspace: %w", err)
	}
	env := []string{
		"GIT_DIR=" + gitDir,
		"GIT_WORK_TREE=" + wt,
		"GIT_INDEX_FILE=" + filepath.Join(tmp, "index"),
		"GIT_OBJECT_DIRECTORY=" + objects,
		"GIT_ALTERNATE_OBJECT_DIRECTORIES=" + filepath.Join(common, "objects"),
	}
	g := func(args ...string) ([]byte, error) {
		return gitCmd(ctx, wt, env, append([]string{"-c", "safe.directory=*"}, args...)...)
	}
	b, err := g("rev-parse", "-q", "--verify", opts.Base+"^{commit}")
	if err != nil {
		return errkind.WithHint(errkind.New(errkind.NotFound, "base %s is not a commit of %s", opts.Base, opts.RepoRoot),
			"pass --base REF (a branch, tag or commit of the host repository)")
	}
	base := strings.TrimSpace(string(b))
	if _, err := g("read-tree", base); err != nil {
		return fmt.Errorf("exporting workspace: %w", err)
	}
	spec := "."
	if prefix != "" {
		spec = prefix
	}
	if err := os.MkdirAll(filepath.Join(wt, filepath.FromSlash(spec)), 0o755); err != nil {
		return fmt.Errorf("exporting workspace: %w", err)
	}
	if _, err := g("add", "-A", "--", spec); err != nil {
		return fmt.Errorf("exporting workspace: %w", err)
	}
	args := []string{"-c", "safe.directory=*", "diff", "--cached", "--binary", "--full-index",
		"--no-color", "--no-ext-diff", "--no-textconv", base, "--", spec}
	if err := gitRun(ctx, wt, env, out, nil, args...); err != nil {
		return fmt.Errorf("exporting workspace: %w", err)
	}
	return nil
}
