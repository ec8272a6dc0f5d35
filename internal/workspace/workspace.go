// Package workspace decides which host files a VM workspace holds and moves
// them as tar streams: the git-tracked files of a repository (plus, on
// request, its untracked non-ignored files) and its .git metadata, or a
// plain directory as it is. It also turns a guest's copy back into a
// binary-safe patch against the host repository (Export) and extracts tar
// streams on the host without following symlinks out of the destination.
//
// Everything here runs on the host; git is the host's git.
package workspace

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bangerdev/banger/internal/errkind"
)

// DefaultGuestPath is where `vm run PATH` copies a workspace.
const DefaultGuestPath = "/root/repo"

// Mode says how a workspace's file list is chosen.
type Mode string

// Modes.
const (
	// ModeGit copies the files git tracks (plus untracked non-ignored
	// files with IncludeUntracked) and the .git directory. Repositories
	// with submodules are refused. A directory that is not in a git work
	// tree is copied whole.
	ModeGit Mode = "git"
	// ModeFull copies the directory as it is: ignored files, submodule
	// contents and .git included.
	ModeFull Mode = "full"
)

// ParseMode accepts "", "git" (also "tracked") and "full".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "git", "tracked":
		return ModeGit, nil
	case "full", "full_copy", "full-copy":
		return ModeFull, nil
	}
	return "", errkind.New(errkind.InvalidArgument, "workspace mode %q: want git or full", s)
}

// Options choose what Inspect selects.
type Options struct {
	Mode             Mode
	IncludeUntracked bool
}

// Kind says where a plan's file list came from.
type Kind string

// Plan kinds.
const (
	KindGit   Kind = "git"   // git-tracked files of a work tree
	KindPlain Kind = "plain" // not a git work tree: the whole directory
	KindFull  Kind = "full"  // ModeFull: the whole directory
)

// File is one entry to copy, named relative to the plan's root.
type File struct {
	Path      string      `json:"path"` // slash-separated, relative to Root
	Size      int64       `json:"size"`
	Mode      fs.FileMode `json:"mode"`
	Untracked bool        `json:"untracked,omitempty"`
}

// Plan is the result of inspecting a host directory: exactly what a copy
// sends.
type Plan struct {
	Root             string `json:"root"` // absolute host directory
	Kind             Kind   `json:"kind"`
	Mode             Mode   `json:"mode"`
	IncludeUntracked bool   `json:"include_untracked,omitempty"`
	// RepoRoot is the top of the git work tree holding Root, Prefix is Root
	// relative to it ("" when Root is the top).
	RepoRoot string `json:"repo_root,omitempty"`
	Prefix   string `json:"prefix,omitempty"`
	// Head is the commit checked out ("" without git or commits).
	Head string `json:"head,omitempty"`
	// GitDir is the .git directory copied along as ".git" ("" when none).
	GitDir string `json:"git_dir,omitempty"`
	// Files lists the work-tree entries (directories only in whole-directory
	// plans), sorted by path.
	Files []File `json:"files"`
	// Bytes is the size of the regular files in Files; GitBytes of GitDir.
	Bytes    int64 `json:"bytes"`
	GitFiles int   `json:"git_files,omitempty"`
	GitBytes int64 `json:"git_bytes,omitempty"`
	// SkippedUntracked counts untracked non-ignored files left out;
	// MissingTracked counts tracked files absent from the work tree.
	SkippedUntracked int `json:"skipped_untracked,omitempty"`
	MissingTracked   int `json:"missing_tracked,omitempty"`
	// Notices are things the user should hear about (one line each).
	Notices []string `json:"notices,omitempty"`
}

// Inspect decides what a copy of dir holds. It refuses a path that is not
// a directory, a bare repository, and (in ModeGit) submodules.
func Inspect(ctx context.Context, dir string, opts Options) (*Plan, error) {
	if opts.Mode == "" {
		opts.Mode = ModeGit
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errkind.New(errkind.NotFound, "workspace %s does not exist", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("inspecting workspace %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, errkind.New(errkind.InvalidArgument, "workspace %s is not a directory", dir)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	p := &Plan{Root: abs, Mode: opts.Mode, IncludeUntracked: opts.IncludeUntracked}

	repo, gerr := findRepo(ctx, abs)
	if gerr != nil {
		return nil, gerr
	}
	if repo != nil {
		p.RepoRoot, p.Prefix, p.Head = repo.top, repo.prefix, repo.head
	}
	switch {
	case opts.Mode == ModeFull:
		p.Kind = KindFull
		if err := p.walk(); err != nil {
			return nil, err
		}
	case repo == nil:
		p.Kind = KindPlain
		if err := p.walk(); err != nil {
			return nil, err
		}
		p.Notices = append(p.Notices, fmt.Sprintf("%s is not a git repository: copying the whole directory", dir))
	default:
		p.Kind = KindGit
		if err := p.listGit(ctx, repo); err != nil {
			return nil, err
		}
	}
	sort.Slice(p.Files, func(i, j int) bool { return p.Files[i].Path < p.Files[j].Path })
	for _, f := range p.Files {
		if f.Mode.IsRegular() {
			p.Bytes += f.Size
		}
	}
	return p, nil
}

// walk lists every entry under Root (directories included), skipping
// sockets and devices.
func (p *Plan) walk() error {
	return filepath.WalkDir(p.Root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("listing %s: %w", path, err)
		}
		if path == p.Root {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return fmt.Errorf("listing %s: %w", path, err)
		}
		if !copyable(fi.Mode()) {
			return nil
		}
		rel, _ := filepath.Rel(p.Root, path)
		p.Files = append(p.Files, File{Path: filepath.ToSlash(rel), Size: fi.Size(), Mode: fi.Mode()})
		return nil
	})
}

// copyable reports whether an entry of this type is carried in a workspace.
func copyable(m fs.FileMode) bool {
	return m.IsRegular() || m.IsDir() || m&fs.ModeSymlink != 0
}

// Paths returns the listed work-tree paths (what --dry-run prints).
func (p *Plan) Paths() []string {
	out := make([]string, 0, len(p.Files))
	for _, f := range p.Files {
		if f.Mode.IsDir() {
			out = append(out, f.Path+"/")
			continue
		}
		out = append(out, f.Path)
	}
	return out
}

// Summary is one line describing the plan, e.g. "412 files, 3.1 MiB + .git 8.0 MiB".
func (p *Plan) Summary() string {
	n := 0
	for _, f := range p.Files {
		if !f.Mode.IsDir() {
			n++
		}
	}
	s := fmt.Sprintf("%d files, %s", n, formatBytes(p.Bytes))
	if p.GitDir != "" {
		s += fmt.Sprintf(" + .git %s", formatBytes(p.GitBytes))
	}
	if p.SkippedUntracked > 0 {
		s += fmt.Sprintf("; %d untracked %s left out (--include-untracked adds them)", p.SkippedUntracked, plural(p.SkippedUntracked, "file", "files"))
	}
	return s
}

// TotalBytes is the payload a copy sends (file contents, .git included).
func (p *Plan) TotalBytes() int64 { return p.Bytes + p.GitBytes }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	units := "KMGTPE"
	v := float64(n) / unit
	i := 0
	for v >= unit && i < len(units)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, units[i])
}

// cleanRel validates a slash-separated relative path from git or a tar.
func cleanRel(p string) (string, bool) {
	if p == "" || strings.HasPrefix(p, "/") {
		return "", false
	}
	c := filepath.ToSlash(filepath.Clean(p))
	if c == "." || c == ".." || strings.HasPrefix(c, "../") {
		return "", false
	}
	return c, true
}
