// Package fsatomic writes files and publishes directories atomically: data
// goes to a temporary name in the same directory and is renamed into place.
package fsatomic

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// StagingSuffix marks directories that are being built and not yet published.
const StagingSuffix = ".staging"

// WriteFile writes data to path atomically with the given mode.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	return WriteFrom(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFrom creates path atomically, filling it with fill.
func WriteFrom(path string, mode os.FileMode, fill func(w io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating temp file for %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = fill(f); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("publishing %s: %w", path, err)
	}
	return SyncDir(dir)
}

// CopyFile copies src to dst atomically, keeping src's permission bits.
func CopyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	return WriteFrom(dst, fi.Mode().Perm(), func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// SyncDir fsyncs a directory so a rename inside it is durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// RemoveStaging removes every "*.staging" entry (and temp files left by
// WriteFrom) directly under dir. It returns the paths it removed.
func RemoveStaging(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		n := e.Name()
		if strings.HasSuffix(n, StagingSuffix) || (strings.HasPrefix(n, ".") && strings.Contains(n, ".tmp-")) {
			p := filepath.Join(dir, n)
			if err := os.RemoveAll(p); err != nil {
				return removed, fmt.Errorf("removing leftover %s: %w", p, err)
			}
			removed = append(removed, p)
		}
	}
	return removed, nil
}
