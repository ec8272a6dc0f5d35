package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/model"
)

// CreateKernel records a kernel; a duplicate name is errkind.AlreadyExists.
func (s *Store) CreateKernel(ctx context.Context, k *model.Kernel) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO kernels(name, version, sha256, source, dir, imported_at) VALUES (?,?,?,?,?,?)`,
			k.Name, k.Version, k.SHA256, k.Source, k.Dir, formatTime(k.ImportedAt))
		if isUnique(err) {
			return errkind.New(errkind.AlreadyExists, "kernel %q already exists", k.Name)
		}
		if err != nil {
			return fmt.Errorf("saving kernel %s: %w", k.Name, err)
		}
		return nil
	})
}

// GetKernel finds a kernel by name.
func (s *Store) GetKernel(ctx context.Context, name string) (*model.Kernel, error) {
	k, err := scanKernel(s.db.QueryRowContext(ctx, `SELECT name, version, sha256, source, dir, imported_at FROM kernels WHERE name=?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("kernel", name)
	}
	return k, err
}

// ListKernels returns all kernels by name.
func (s *Store) ListKernels(ctx context.Context) ([]*model.Kernel, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, version, sha256, source, dir, imported_at FROM kernels ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("listing kernels: %w", err)
	}
	defer rows.Close()
	var out []*model.Kernel
	for rows.Next() {
		k, err := scanKernel(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// DeleteKernel removes a kernel row.
func (s *Store) DeleteKernel(ctx context.Context, name string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM kernels WHERE name=?`, name)
		return err
	})
}

func scanKernel(r scanner) (*model.Kernel, error) {
	var k model.Kernel
	var at string
	if err := r.Scan(&k.Name, &k.Version, &k.SHA256, &k.Source, &k.Dir, &at); err != nil {
		return nil, err
	}
	k.ImportedAt = parseTime(at)
	return &k, nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		t = time.Now()
	}
	return t.UTC().Format(time.RFC3339Nano)
}
