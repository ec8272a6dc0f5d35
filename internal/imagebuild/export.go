package imagebuild

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/ext4"
)

// guestBaseMount is where a banger guest keeps its read-only base disk
// mounted (agent.BaseMount).
const guestBaseMount = "/run/banger/base"

// virtualDirs are mount points in a running guest whose content is not
// part of the image: only the directory itself is exported.
var virtualDirs = map[string]int64{"proc": 0o555, "sys": 0o555, "dev": 0o755, "run": 0o755, "tmp": 0o1777}

// bootFiles are written by the guest init at every boot; the image keeps
// the base image's versions (as Docker does with its bind mounts).
var bootFiles = []string{"etc/hostname", "etc/hosts", "etc/resolv.conf"}

// exportRoot writes the guest's merged root filesystem as a compact ext4
// at output: every top-level name is read through the agent, so the
// overlay's whiteouts and opaque directories are already applied.
func exportRoot(ctx context.Context, g Guest, names []string, output string) error {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := writeRoot(ctx, g, names, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	_, werr := ext4.FromTar(ctx, pr, output, ext4.Options{Label: "banger-rootfs"})
	pr.CloseWithError(errors.New("ext4 writer stopped"))
	rerr := <-done
	if rerr != nil {
		return fmt.Errorf("exporting the root filesystem: %w", rerr)
	}
	if werr != nil {
		return fmt.Errorf("writing the root filesystem: %w", werr)
	}
	return nil
}

// writeRoot writes the tar stream of the guest root.
func writeRoot(ctx context.Context, g Guest, names []string, w io.Writer) error {
	tw := tar.NewWriter(w)
	names = slices.Clone(names)
	slices.Sort(names)
	names = slices.Compact(names)
	for _, name := range names {
		if name == "" || name == "." || name == ".." || strings.Contains(name, "/") || name == "lost+found" {
			continue
		}
		if mode, ok := virtualDirs[name]; ok {
			if err := tw.WriteHeader(&tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: mode}); err != nil {
				return err
			}
			continue
		}
		skip := map[string]bool{}
		if name == "etc" {
			for _, f := range bootFiles {
				skip[f] = true
			}
		}
		n, err := copyGuestTree(ctx, g, "/"+name, "", tw, skip)
		if errors.Is(err, errkind.NotFound) && n == 0 {
			continue // deleted by a step
		}
		if err != nil {
			return fmt.Errorf("reading /%s: %w", name, err)
		}
		if name == "etc" {
			for _, f := range bootFiles {
				_, err := copyGuestTree(ctx, g, guestBaseMount+"/"+f, path.Dir(f), tw, nil)
				if err != nil && !errors.Is(err, errkind.NotFound) {
					return fmt.Errorf("reading the base image's /%s: %w", f, err)
				}
			}
		}
	}
	return tw.Close()
}

// copyGuestTree copies the tar stream of a guest path into tw, entry
// names prefixed with prefix, leaving out the names in skip. It returns
// the entries copied.
func copyGuestTree(ctx context.Context, g Guest, guestPath, prefix string, tw *tar.Writer, skip map[string]bool) (int, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(g.GetTar(ctx, guestPath, pw)) }()
	defer pr.Close()
	tr := tar.NewReader(pr)
	n := 0
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if prefix != "" {
			hdr.Name = path.Join(prefix, hdr.Name)
			if hdr.Typeflag == tar.TypeLink {
				hdr.Linkname = path.Join(prefix, hdr.Linkname)
			}
		}
		if skip[strings.TrimSuffix(hdr.Name, "/")] {
			continue
		}
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return n, err
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := io.Copy(tw, tr); err != nil {
				return n, err
			}
		}
		n++
	}
}
