package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/internal/fsatomic"
)

// removeOrphanDirs deletes published image and VM directories that have no
// row: a daemon killed between the rename that publishes a directory and
// the insert that records it leaves one behind.
func (d *Daemon) removeOrphanDirs(ctx context.Context) error {
	ims, err := d.store.ListImages(ctx)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, im := range ims {
		known[im.ID] = true
	}
	if err := d.removeUnknown(d.layout.ImagesDir(), known); err != nil {
		return err
	}
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	known = map[string]bool{}
	for _, vm := range vms {
		known[filepath.Base(vm.Dir)] = true
	}
	return d.removeUnknown(d.layout.VMsDir(), known)
}

func (d *Daemon) removeUnknown(dir string, known map[string]bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	for _, e := range entries {
		n := e.Name()
		if !e.IsDir() || known[n] || strings.HasPrefix(n, ".") || strings.HasSuffix(n, fsatomic.StagingSuffix) {
			continue
		}
		p := filepath.Join(dir, n)
		d.log.Info("removing directory without a database row", "path", p)
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	return nil
}
