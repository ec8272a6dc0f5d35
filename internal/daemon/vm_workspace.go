package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/fsatomic"
	"github.com/bangerdev/banger/internal/model"
	"github.com/bangerdev/banger/internal/workspace"
)

// workspaceFile holds the full workspace record next to a VM's disks (the
// VM row keeps host path, guest path and HEAD).
const workspaceFile = "workspace.json"

// PrepareWorkspace extracts the tar stream r (built by the CLI from the
// host directory the record names) into the record's guest path, owned by
// root, and records the workspace on the VM: later execs run there and
// `vm workspace export` diffs against the record's base. Files already in
// the guest path stay unless the archive replaces them (a re-copy keeps
// build outputs).
func (d *Daemon) PrepareWorkspace(ctx context.Context, ref string, rec workspace.Record, r io.Reader) (workspace.Record, error) {
	if rec.GuestPath == "" {
		rec.GuestPath = workspace.DefaultGuestPath
	}
	gp, err := guestPath("workspace guest path", rec.GuestPath)
	if err != nil {
		return rec, err
	}
	if gp == "/" {
		return rec, errkind.New(errkind.InvalidArgument, "the workspace cannot be the guest's root directory")
	}
	rec.GuestPath = gp
	vm, err := d.store.GetVM(ctx, ref)
	if err != nil {
		return rec, err
	}
	c, err := d.agentFor(ctx, vm)
	if err != nil {
		return rec, err
	}
	res, err := c.PutTar(ctx, gp, r, agentproto.PutOptions{})
	if err != nil {
		return rec, wrapKind(err, "copying the workspace into %s:%s", vm.Name, gp)
	}
	rec.Entries, rec.Bytes, rec.PreparedAt = res.Entries, res.Bytes, time.Now().UTC()

	unlock := d.vms.lock(vm.ID)
	defer unlock()
	if vm, err = d.store.GetVM(ctx, vm.ID); err != nil {
		return rec, err
	}
	vm.Workspace = model.Workspace{HostPath: rec.HostPath, GuestPath: rec.GuestPath, Head: rec.Head}
	if err := d.store.UpdateVM(ctx, vm); err != nil {
		return rec, fmt.Errorf("recording the workspace of %s: %w", vm.Name, err)
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return rec, err
	}
	if err := fsatomic.WriteFile(filepath.Join(vm.Dir, workspaceFile), append(b, '\n'), 0o600); err != nil {
		return rec, fmt.Errorf("recording the workspace of %s: %w", vm.Name, err)
	}
	d.log.Info("workspace prepared", "vm", vm.Name, "host", rec.HostPath, "guest", rec.GuestPath, "entries", rec.Entries, "bytes", rec.Bytes)
	return rec, nil
}

// Workspace returns the workspace recorded on a VM.
func (d *Daemon) Workspace(ctx context.Context, ref string) (workspace.Record, error) {
	vm, err := d.store.GetVM(ctx, ref)
	if err != nil {
		return workspace.Record{}, err
	}
	return d.workspaceOf(vm)
}

func (d *Daemon) workspaceOf(vm *model.VM) (workspace.Record, error) {
	ws := vm.Workspace
	if ws.GuestPath == "" {
		return workspace.Record{}, errkind.WithHint(errkind.New(errkind.NotFound, "vm %q has no workspace", vm.Name),
			"copy one with `banger vm workspace prepare "+vm.Name+" PATH`")
	}
	rec := workspace.Record{HostPath: ws.HostPath, GuestPath: ws.GuestPath, Head: ws.Head}
	b, err := os.ReadFile(filepath.Join(vm.Dir, workspaceFile))
	if errors.Is(err, fs.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return rec, fmt.Errorf("reading the workspace record of %s: %w", vm.Name, err)
	}
	var full workspace.Record
	if err := json.Unmarshal(b, &full); err != nil {
		return rec, fmt.Errorf("reading the workspace record of %s: %w", vm.Name, err)
	}
	if full.GuestPath != ws.GuestPath || full.HostPath != ws.HostPath {
		return rec, nil // stale side file
	}
	return full, nil
}

// ExportWorkspace writes to w a binary-safe patch taking the host
// repository from base (default: the commit whose tree is what was
// copied) to the guest workspace's current files. The guest's files are
// streamed back and compared on the host, so the guest needs no git; the
// guest's index and refs are never touched, and neither is the host
// repository (see workspace.Export).
func (d *Daemon) ExportWorkspace(ctx context.Context, ref, base string, w io.Writer) error {
	vm, err := d.store.GetVM(ctx, ref)
	if err != nil {
		return err
	}
	rec, err := d.workspaceOf(vm)
	if err != nil {
		return err
	}
	if rec.RepoRoot == "" && rec.Head == "" {
		return errkind.WithHint(errkind.New(errkind.InvalidArgument,
			"the workspace of %s was not copied from a git repository: there is nothing to diff against", vm.Name),
			"copy the files back with `banger vm cp "+vm.Name+":"+rec.GuestPath+" DIR`")
	}
	if rec.RepoRoot == "" { // recorded without the side file: the host path is the top
		rec.RepoRoot = rec.HostPath
	}
	if base == "" {
		base = rec.Base
	}
	if base == "" {
		base = rec.Head
	}
	if _, err := os.Stat(rec.RepoRoot); err != nil {
		return errkind.New(errkind.NotFound, "host repository %s of the workspace of %s: %v", rec.RepoRoot, vm.Name, err)
	}
	c, err := d.agentFor(ctx, vm)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	getErr := make(chan error, 1)
	go func() {
		err := c.GetTar(ctx, rec.GuestPath, pw)
		pw.CloseWithError(err)
		getErr <- err
	}()
	err = workspace.Export(ctx, pr, workspace.ExportOptions{RepoRoot: rec.RepoRoot, Prefix: rec.Prefix, Base: base}, w)
	pr.CloseWithError(errors.New("export finished"))
	cancel()
	gerr := <-getErr
	if err != nil {
		if gerr != nil && !errors.Is(gerr, context.Canceled) && !errors.Is(gerr, errkind.Canceled) {
			return wrapKind(gerr, "reading the workspace of %s", vm.Name)
		}
		return err
	}
	return nil
}
