package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/model"
)

const vmCols = `v.id, v.name, v.image_id, coalesce(i.name, ''), v.kernel_ref, v.state, v.last_error, v.cpus, v.memory_mib,
	v.disk_bytes, v.vmm, v.accel, v.dir, v.run_dir, v.identity_json, v.network_json, v.workspace_json, v.created_at, v.updated_at`

const vmFrom = ` FROM vms v LEFT JOIN images i ON i.id = v.image_id`

// CreateVM inserts a VM; a duplicate name is errkind.AlreadyExists.
func (s *Store) CreateVM(ctx context.Context, vm *model.VM) error {
	nw, ws, err := vmJSON(vm)
	if err != nil {
		return err
	}
	vm.CreatedAt = time.Now().UTC()
	vm.UpdatedAt = vm.CreatedAt
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO vms(id, name, image_id, kernel_ref, state, last_error, cpus, memory_mib,
			disk_bytes, vmm, accel, dir, run_dir, identity_json, network_json, workspace_json, created_at, updated_at)
			VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			vm.ID, vm.Name, vm.ImageID, vm.KernelRef, vm.State, vm.LastError, vm.CPUs, vm.MemoryMiB, vm.DiskBytes,
			vm.VMM, vm.Accel, vm.Dir, vm.RunDir, vm.Identity, nw, ws, formatTime(vm.CreatedAt), formatTime(vm.UpdatedAt))
		if isUnique(err) {
			return errkind.New(errkind.AlreadyExists, "vm %q already exists", vm.Name)
		}
		if err != nil {
			return fmt.Errorf("saving vm %s: %w", vm.Name, err)
		}
		return nil
	})
}

// UpdateVM rewrites the mutable columns of a VM.
func (s *Store) UpdateVM(ctx context.Context, vm *model.VM) error {
	nw, ws, err := vmJSON(vm)
	if err != nil {
		return err
	}
	vm.UpdatedAt = time.Now().UTC()
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE vms SET state=?, last_error=?, cpus=?, memory_mib=?, disk_bytes=?, vmm=?,
			accel=?, kernel_ref=?, identity_json=?, network_json=?, workspace_json=?, updated_at=? WHERE id=?`,
			vm.State, vm.LastError, vm.CPUs, vm.MemoryMiB, vm.DiskBytes, vm.VMM, vm.Accel, vm.KernelRef, vm.Identity,
			nw, ws, formatTime(vm.UpdatedAt), vm.ID)
		if err != nil {
			return fmt.Errorf("updating vm %s: %w", vm.Name, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFound("vm", vm.Name)
		}
		return nil
	})
}

// GetVM finds a VM by name or id.
func (s *Store) GetVM(ctx context.Context, ref string) (*model.VM, error) {
	vm, err := scanVM(s.db.QueryRowContext(ctx, `SELECT `+vmCols+vmFrom+` WHERE v.name=? OR v.id=?`, ref, ref))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("vm", ref)
	}
	return vm, err
}

// ListVMs returns all VMs by creation time.
func (s *Store) ListVMs(ctx context.Context) ([]*model.VM, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+vmCols+vmFrom+` ORDER BY v.created_at, v.name`)
	if err != nil {
		return nil, fmt.Errorf("listing vms: %w", err)
	}
	defer rows.Close()
	var out []*model.VM
	for rows.Next() {
		vm, err := scanVM(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, vm)
	}
	return out, rows.Err()
}

// CountVMsUsingImage counts VMs built from an image.
func (s *Store) CountVMsUsingImage(ctx context.Context, imageID string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM vms WHERE image_id=?`, imageID).Scan(&n)
	return n, err
}

// DeleteVM removes a VM row.
func (s *Store) DeleteVM(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM vms WHERE id=?`, id)
		return err
	})
}

func vmJSON(vm *model.VM) (string, string, error) {
	nw, err := json.Marshal(vm.Network)
	if err != nil {
		return "", "", err
	}
	ws, err := json.Marshal(vm.Workspace)
	if err != nil {
		return "", "", err
	}
	return string(nw), string(ws), nil
}

func scanVM(r scanner) (*model.VM, error) {
	var vm model.VM
	var nw, ws, created, updated string
	if err := r.Scan(&vm.ID, &vm.Name, &vm.ImageID, &vm.ImageName, &vm.KernelRef, &vm.State, &vm.LastError, &vm.CPUs,
		&vm.MemoryMiB, &vm.DiskBytes, &vm.VMM, &vm.Accel, &vm.Dir, &vm.RunDir, &vm.Identity, &nw, &ws, &created, &updated); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(nw), &vm.Network); err != nil {
		return nil, fmt.Errorf("vm %s: bad network: %w", vm.Name, err)
	}
	if err := json.Unmarshal([]byte(ws), &vm.Workspace); err != nil {
		return nil, fmt.Errorf("vm %s: bad workspace: %w", vm.Name, err)
	}
	vm.CreatedAt = parseTime(created)
	vm.UpdatedAt = parseTime(updated)
	return &vm, nil
}
