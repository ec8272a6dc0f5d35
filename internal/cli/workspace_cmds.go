package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/client"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/fsatomic"
	"github.com/bangerdev/banger/internal/workspace"
)

func (a *App) vmWorkspaceCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "workspace",
		Short: "Copy a host repository into a VM and get its changes back as a patch",
		Long: `A workspace is a host directory copied into a VM (by default /root/repo):
the files git tracks plus the repository's .git, owned by root. It is
recorded on the VM: vm exec runs there and warns when the host's HEAD moved
since the copy (vm exec --sync re-copies first). export turns what changed
in the guest, commits included, into a patch for git apply on the host.`,
		Example: `  banger vm workspace prepare dev ./repo
  banger vm exec dev -- make test
  banger vm workspace export dev > changes.patch && git apply changes.patch`,
	}
	cmd.AddCommand(a.vmWorkspacePrepareCommand(), a.vmWorkspaceExportCommand(), a.vmWorkspaceShowCommand())
	return cmd
}

func (a *App) vmWorkspacePrepareCommand() *cobra.Command {
	var guestPath, mode string
	var includeUntracked, dryRun bool
	cmd := &cobra.Command{
		Use:   "prepare NAME PATH",
		Short: "Copy a host directory into a running VM and record it as the VM's workspace",
		Long: `prepare copies PATH into the VM: the files git tracks (never ignored files),
untracked files that are not ignored with --include-untracked, and .git when
PATH is the top of its repository. A directory that is not a git repository
is copied whole; --mode full copies PATH exactly as it is (needed for
repositories with submodules). Files already in the guest directory stay
unless the copy replaces them, so build outputs survive a re-copy.`,
		Example: `  banger vm workspace prepare dev .
  banger vm workspace prepare dev ~/src/app --guest-path /srv/app --include-untracked
  banger vm workspace prepare dev . --dry-run`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := workspace.ParseMode(mode)
			if err != nil {
				return &exitError{code: ExitUsage, err: err}
			}
			plan, err := workspace.Inspect(cmd.Context(), args[1], workspace.Options{Mode: m, IncludeUntracked: includeUntracked})
			if err != nil {
				return err
			}
			if dryRun {
				for _, n := range plan.Notices {
					fmt.Fprintln(a.Stderr, "note: "+n)
				}
				for _, p := range plan.Paths() {
					fmt.Fprintln(a.Stdout, p)
				}
				fmt.Fprintf(a.Stderr, "would copy %s to %s:%s (%s)\n", plan.Root, args[0], guestPath, plan.Summary())
				return nil
			}
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			rec, err := a.copyWorkspace(cmd.Context(), c, args[0], plan, guestPath)
			if err != nil {
				return err
			}
			if a.Output == "json" {
				return a.printJSON(rec)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&guestPath, "guest-path", workspace.DefaultGuestPath, "directory in the guest")
	f.StringVar(&mode, "mode", "git", "git (tracked files + .git) or full (the directory as it is)")
	f.BoolVar(&includeUntracked, "include-untracked", false, "also copy untracked files that are not ignored")
	f.BoolVar(&dryRun, "dry-run", false, "print the files that would be copied; copy nothing")
	return cmd
}

func (a *App) vmWorkspaceExportCommand() *cobra.Command {
	var base, out string
	cmd := &cobra.Command{
		Use:   "export NAME",
		Short: "Print a binary-safe patch of what changed in a VM's workspace",
		Long: `export prints (or writes to -O FILE) a git patch taking the host repository
from the copied state to the guest workspace's current files: edits, new
and deleted files, binary files, and the work of commits made in the guest.
Files the guest's .gitignore ignores are left out. The guest's files are
streamed back and compared on the host, so the guest needs no git and its
index and refs are never touched; the host repository is not modified either.

--base REF diffs from a host revision instead of the copied state (the
default: HEAD at copy time plus the uncommitted changes that were copied).`,
		Example: `  banger vm workspace export dev > changes.patch
  git apply --check changes.patch && git apply changes.patch
  banger vm workspace export dev --base main -O /tmp/dev.patch`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			var n int64
			if out != "" && out != "-" {
				err = fsatomic.WriteFrom(out, 0o644, func(w io.Writer) error {
					var err error
					n, err = c.ExportWorkspace(cmd.Context(), args[0], base, w)
					return err
				})
			} else {
				n, err = c.ExportWorkspace(cmd.Context(), args[0], base, a.Stdout)
			}
			if err != nil {
				return err
			}
			if n == 0 {
				fmt.Fprintf(a.Stderr, "no changes in the workspace of %s\n", args[0])
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&base, "base", "", "host revision to diff from (default: the copied state)")
	cmd.Flags().StringVarP(&out, "output-file", "O", "", "write the patch to this file instead of stdout")
	return cmd
}

func (a *App) vmWorkspaceShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "show NAME",
		Short:             "Show the workspace recorded on a VM",
		Example:           "  banger vm workspace show dev\n  banger vm workspace show dev -o json",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			rec, err := c.Workspace(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.Output == "json" {
				return a.printJSON(rec)
			}
			rows := [][]string{
				{"host path", rec.HostPath}, {"guest path", rec.GuestPath}, {"kind", dash(string(rec.Kind))},
				{"head", dash(rec.Head)}, {"base", dash(rec.Base)},
				{"untracked", fmt.Sprint(rec.IncludeUntracked)}, {"entries", fmt.Sprint(rec.Entries)},
			}
			if !rec.PreparedAt.IsZero() {
				rows = append(rows, []string{"prepared", rec.PreparedAt.Local().Format("2006-01-02 15:04:05")})
			}
			if now := workspace.Head(cmd.Context(), rec.HostPath); rec.Head != "" && now != "" && now != rec.Head {
				rows = append(rows, []string{"host head", now + " (moved since the copy)"})
			}
			a.table([]string{"FIELD", "VALUE"}, rows)
			return nil
		},
	}
}

// copyWorkspace sends a plan into a VM's guestPath and records it there.
func (a *App) copyWorkspace(ctx context.Context, c *client.Client, name string, plan *workspace.Plan, guestPath string) (workspace.Record, error) {
	for _, n := range plan.Notices {
		fmt.Fprintln(a.Stderr, "note: "+n)
	}
	base, err := plan.Snapshot(ctx)
	if err != nil {
		fmt.Fprintf(a.Stderr, "banger: warning: %s (workspace export will diff against HEAD)\n", oneLine(err))
		base = plan.Head
	}
	rec := plan.Record(guestPath, base)
	p := a.newProgress()
	total := plan.TotalBytes()
	pr, pw := io.Pipe()
	tarErr := make(chan error, 1)
	go func() {
		err := workspace.WriteTar(ctx, pw, plan, workspace.TarOptions{Progress: func(n int64) {
			p.event(api.Event{Stage: "workspace", Message: "copying " + name + ":" + guestPath, Current: n, Total: total, Unit: "bytes"})
		}})
		pw.CloseWithError(err)
		tarErr <- err
	}()
	out, err := c.PrepareWorkspace(ctx, name, rec, pr)
	pr.CloseWithError(errRequestDone)
	terr := <-tarErr
	p.done()
	if err != nil {
		if terr != nil && ctx.Err() == nil && !errors.Is(terr, errRequestDone) {
			err = terr
		}
		return out, fmt.Errorf("copying %s into %s: %w", plan.Root, name, err)
	}
	fmt.Fprintf(a.Stderr, "workspace %s → %s:%s (%s)\n", plan.Root, name, out.GuestPath, plan.Summary())
	return out, nil
}

// errRequestDone stops a tar writer whose request already ended.
var errRequestDone = errors.New("request finished")

// checkWorkspace runs before `vm exec`: with sync it re-copies the VM's
// workspace from its host path; without, it warns when the host
// repository's HEAD moved since the copy.
func (a *App) checkWorkspace(ctx context.Context, c *client.Client, name string, sync bool) error {
	rec, err := c.Workspace(ctx, name)
	if err != nil {
		if sync {
			if errors.Is(err, errkind.NotFound) {
				return errkind.WithHint(err, "--sync needs a workspace: `banger vm workspace prepare "+name+" PATH`")
			}
			return err
		}
		return nil // exec reports a missing VM itself
	}
	if sync {
		if _, err := os.Stat(rec.HostPath); err != nil {
			return errkind.New(errkind.NotFound, "--sync: the workspace's host path %s: %v", rec.HostPath, err)
		}
		mode := rec.Mode
		if mode == "" {
			mode = workspace.ModeGit
		}
		plan, err := workspace.Inspect(ctx, rec.HostPath, workspace.Options{Mode: mode, IncludeUntracked: rec.IncludeUntracked})
		if err != nil {
			return err
		}
		_, err = a.copyWorkspace(ctx, c, name, plan, rec.GuestPath)
		return err
	}
	if rec.Head == "" {
		return nil
	}
	if now := workspace.Head(ctx, rec.HostPath); now != "" && now != rec.Head {
		fmt.Fprintf(a.Stderr, "banger: warning: the workspace of %s was copied at %.12s; %s is now at %.12s (--sync re-copies it)\n",
			name, rec.Head, rec.HostPath, now)
	}
	return nil
}
