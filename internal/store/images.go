package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/model"
)

const imageCols = `id, name, managed, rootfs_path, kernel_ref, kernel_path, initrd_path, modules_dir,
	source_ref, manifest_digest, config_json, size_bytes, init_mode, created_at`

// CreateImage inserts an image; a duplicate name is errkind.AlreadyExists.
func (s *Store) CreateImage(ctx context.Context, im *model.Image) error {
	cfg, err := json.Marshal(im.Config)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO images(`+imageCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			im.ID, im.Name, im.Managed, im.RootfsPath, im.KernelRef, im.KernelPath, im.InitrdPath, im.ModulesDir,
			im.SourceRef, im.ManifestDigest, string(cfg), im.SizeBytes, im.InitMode, formatTime(im.CreatedAt))
		if isUnique(err) {
			return errkind.New(errkind.AlreadyExists, "image %q already exists", im.Name)
		}
		if err != nil {
			return fmt.Errorf("saving image %s: %w", im.Name, err)
		}
		return nil
	})
}

// UpdateImage rewrites every column of an existing image.
func (s *Store) UpdateImage(ctx context.Context, im *model.Image) error {
	cfg, err := json.Marshal(im.Config)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE images SET name=?, managed=?, rootfs_path=?, kernel_ref=?, kernel_path=?,
			initrd_path=?, modules_dir=?, source_ref=?, manifest_digest=?, config_json=?, size_bytes=?, init_mode=? WHERE id=?`,
			im.Name, im.Managed, im.RootfsPath, im.KernelRef, im.KernelPath, im.InitrdPath, im.ModulesDir,
			im.SourceRef, im.ManifestDigest, string(cfg), im.SizeBytes, im.InitMode, im.ID)
		if err != nil {
			return fmt.Errorf("updating image %s: %w", im.Name, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("image", im.Name)
		}
		return nil
	})
}

// GetImage finds an image by name or id.
func (s *Store) GetImage(ctx context.Context, ref string) (*model.Image, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+imageCols+` FROM images WHERE name=? OR id=?`, ref, ref)
	im, err := scanImage(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("image", ref)
	}
	return im, err
}

// ListImages returns all images by name.
func (s *Store) ListImages(ctx context.Context) ([]*model.Image, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+imageCols+` FROM images ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	defer rows.Close()
	var out []*model.Image
	for rows.Next() {
		im, err := scanImage(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, im)
	}
	return out, rows.Err()
}

// DeleteImage removes an image row.
func (s *Store) DeleteImage(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM images WHERE id=?`, id)
		if err != nil {
			return fmt.Errorf("deleting image %s: %w", id, err)
		}
		return nil
	})
}

type scanner interface{ Scan(...any) error }

func scanImage(r scanner) (*model.Image, error) {
	var im model.Image
	var cfg, created string
	if err := r.Scan(&im.ID, &im.Name, &im.Managed, &im.RootfsPath, &im.KernelRef, &im.KernelPath, &im.InitrdPath,
		&im.ModulesDir, &im.SourceRef, &im.ManifestDigest, &cfg, &im.SizeBytes, &im.InitMode, &created); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(cfg), &im.Config); err != nil {
		return nil, fmt.Errorf("image %s: bad config: %w", im.Name, err)
	}
	im.CreatedAt = parseTime(created)
	return &im, nil
}

func isUnique(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}
