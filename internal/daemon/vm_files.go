package daemon

import (
	"context"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/errkind"
)

// guestPath checks that p is an absolute guest path and cleans it.
func guestPath(what, p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", errkind.New(errkind.InvalidArgument, "%s %q: want an absolute guest path", what, p)
	}
	return path.Clean(p), nil
}

// PutFiles extracts the tar stream r into the directory dir of a running
// VM (created if missing). Entries belong to root unless preserveOwners
// keeps the archive's uid/gid.
func (d *Daemon) PutFiles(ctx context.Context, ref, dir string, r io.Reader, preserveOwners bool) (agentproto.PutResult, error) {
	dir, err := guestPath("destination", dir)
	if err != nil {
		return agentproto.PutResult{}, err
	}
	vm, err := d.store.GetVM(ctx, ref)
	if err != nil {
		return agentproto.PutResult{}, err
	}
	c, err := d.agentFor(ctx, vm)
	if err != nil {
		return agentproto.PutResult{}, err
	}
	res, err := c.PutTar(ctx, dir, r, agentproto.PutOptions{PreserveOwners: preserveOwners})
	if err != nil {
		return res, wrapKind(err, "copying into %s:%s", vm.Name, dir)
	}
	return res, nil
}

// GetFiles writes a tar stream of the guest path p (a file, symlink or
// directory tree, named from its base name) to w. Nothing is written to w
// when the path does not exist.
func (d *Daemon) GetFiles(ctx context.Context, ref, p string, w io.Writer) error {
	p, err := guestPath("source", p)
	if err != nil {
		return err
	}
	vm, err := d.store.GetVM(ctx, ref)
	if err != nil {
		return err
	}
	c, err := d.agentFor(ctx, vm)
	if err != nil {
		return err
	}
	if err := c.GetTar(ctx, p, w); err != nil {
		return wrapKind(err, "copying from %s:%s", vm.Name, p)
	}
	return nil
}

// wrapKind adds context to err and keeps its kind.
func wrapKind(err error, format string, args ...any) error {
	if k := errkind.Of(err); k != nil {
		return errkind.Wrap(k, err, format, args...)
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}
