package cli

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/bytesize"
	"github.com/bangerdev/banger/internal/client"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/workspace"
)

func (a *App) vmCpCommand() *cobra.Command {
	var archive bool
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files and directories between the host and a running VM",
		Long: `cp copies a file or a directory tree; one side is NAME:PATH (a VM and an
absolute guest path, or one relative to /root), the other a host path. As
with cp -r: when DST is an existing directory (or ends in /), SRC is copied
into it; otherwise SRC is copied to DST. Modes, symlinks and modification
times are kept; files land owned by root in the guest and by you on the
host unless -a keeps the recorded owners. "-" as the host side reads or
writes a tar stream. A host path holding ':' can be written ./a:b.`,
		Example: `  banger vm cp ./config.toml dev:/etc/app/
  banger vm cp dev:/root/repo/build ./build
  banger vm cp -a ./rootfs-bits dev:/srv/bits
  tar c docs | banger vm cp - dev:/root/docs`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, dst := parseCpArg(args[0]), parseCpArg(args[1])
			switch {
			case src.vm != "" && dst.vm != "":
				return usageErrorf("copying between two VMs is not supported: copy through the host")
			case src.vm == "" && dst.vm == "":
				return usageErrorf("one of SRC and DST must be NAME:PATH (a VM path)")
			}
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			if dst.vm != "" {
				return a.cpToGuest(cmd.Context(), c, src.path, dst, archive)
			}
			return a.cpFromGuest(cmd.Context(), c, src, dst.path, archive)
		},
	}
	cmd.Flags().BoolVarP(&archive, "archive", "a", false, "keep the files' owners (uid/gid)")
	return cmd
}

// cpArg is one side of `vm cp`: a VM path when vm is set, else a host path.
type cpArg struct{ vm, path string }

var vmPrefixRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?):(.*)$`)

func parseCpArg(s string) cpArg {
	if m := vmPrefixRE.FindStringSubmatch(s); m != nil {
		p := m[3]
		if p == "" {
			p = "/root"
		} else if !strings.HasPrefix(p, "/") {
			p = "/root/" + p
		}
		if strings.HasSuffix(m[3], "/") && !strings.HasSuffix(p, "/") {
			p += "/"
		}
		return cpArg{vm: m[1], path: p}
	}
	return cpArg{path: s}
}

// guestKind says whether a guest path exists and is a directory, by reading
// the first entry of its tar stream.
func guestKind(ctx context.Context, c *client.Client, vm, p string) (exists, dir bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rc, err := c.GetFiles(ctx, vm, p)
	if errors.Is(err, errkind.NotFound) && strings.Contains(err.Error(), "does not exist") {
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	defer rc.Close()
	hdr, err := tar.NewReader(rc).Next()
	if err != nil {
		return false, false, fmt.Errorf("checking %s:%s: %w", vm, p, err)
	}
	return true, hdr.Typeflag == tar.TypeDir, nil
}

func (a *App) cpToGuest(ctx context.Context, c *client.Client, src string, dst cpArg, keepOwners bool) error {
	if src == "-" {
		res, err := c.PutFiles(ctx, dst.vm, strings.TrimSuffix(dst.path, "/"), a.Stdin, keepOwners)
		if err != nil {
			return err
		}
		a.cpDone(res.Entries, res.Bytes, dst.vm+":"+dst.path)
		return nil
	}
	fi, err := os.Stat(src)
	if err != nil {
		return errkind.New(errkind.NotFound, "%s: %v", src, errors.Unwrap(err))
	}
	target := path.Clean(dst.path)
	dir, name := path.Dir(target), path.Base(target)
	intoDir := strings.HasSuffix(dst.path, "/") || target == "/"
	if !intoDir {
		exists, isDir, err := guestKind(ctx, c, dst.vm, target)
		if err != nil {
			return err
		}
		switch {
		case exists && isDir:
			intoDir = true
		case exists && fi.IsDir():
			return errkind.New(errkind.Conflict, "cannot copy directory %s onto file %s:%s", src, dst.vm, target)
		}
	}
	if intoDir {
		dir, name = target, filepath.Base(filepath.Clean(src))
		if name == "/" || name == "." || name == ".." {
			abs, _ := filepath.Abs(src)
			name = filepath.Base(abs)
		}
	}
	if name == "/" {
		return usageErrorf("cannot copy the host's root directory")
	}
	pr, pw := io.Pipe()
	tarErr := make(chan error, 1)
	go func() {
		err := workspace.TarPath(ctx, pw, src, name, workspace.TarOptions{})
		pw.CloseWithError(err)
		tarErr <- err
	}()
	res, err := c.PutFiles(ctx, dst.vm, dir, pr, keepOwners)
	pr.CloseWithError(errRequestDone)
	if terr := <-tarErr; err != nil && terr != nil && !errors.Is(terr, errRequestDone) && ctx.Err() == nil {
		err = terr
	}
	if err != nil {
		return err
	}
	a.cpDone(res.Entries, res.Bytes, dst.vm+":"+path.Join(dir, name))
	return nil
}

func (a *App) cpFromGuest(ctx context.Context, c *client.Client, src cpArg, dst string, keepOwners bool) error {
	srcPath := path.Clean(src.path)
	rc, err := c.GetFiles(ctx, src.vm, srcPath)
	if err != nil {
		return err
	}
	defer rc.Close()
	if dst == "-" {
		if _, err := io.Copy(a.Stdout, rc); err != nil {
			return fmt.Errorf("copying %s:%s: %w", src.vm, srcPath, err)
		}
		return nil
	}
	// The archive's top entry is the source's base name ("." for /).
	top := path.Base(srcPath)
	if srcPath == "/" {
		top = "."
	}
	dir, newTop := dst, top
	if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
		if top == "." {
			newTop = "."
		}
	} else if errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.IsDir()) {
		if strings.HasSuffix(dst, "/") && errors.Is(err, fs.ErrNotExist) {
			dir = dst // "DIR/": create it and copy into it
		} else {
			dir, newTop = filepath.Dir(filepath.Clean(dst)), filepath.Base(filepath.Clean(dst))
		}
	} else {
		return fmt.Errorf("checking %s: %w", dst, err)
	}
	res, err := workspace.ExtractTar(rc, dir, workspace.ExtractOptions{
		PreserveOwners: keepOwners,
		Map: func(name string) string {
			if top == "." {
				if newTop == "." {
					return name
				}
				return path.Join(newTop, name)
			}
			if name == top {
				return newTop
			}
			if rest, ok := strings.CutPrefix(name, top+"/"); ok {
				return path.Join(newTop, rest)
			}
			return name
		},
	})
	if err != nil {
		return fmt.Errorf("copying %s:%s to %s: %w", src.vm, srcPath, dst, err)
	}
	a.cpDone(res.Entries, res.Bytes, filepath.Join(dir, newTop))
	return nil
}

// cpDone reports a finished copy on a terminal (scripts get silence).
func (a *App) cpDone(entries int, bytes int64, where string) {
	if a.stderrIsTerminal() {
		fmt.Fprintf(a.Stderr, "copied %d entries (%s) to %s\n", entries, bytesize.Format(bytes), where)
	}
}
