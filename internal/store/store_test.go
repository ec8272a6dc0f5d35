package store

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/model"
)

func openAt(t *testing.T, path string, upto int) *Store {
	t.Helper()
	db, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{db: db}
	if err := s.migrate(context.Background(), upto); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestMigration1 upgrades an empty database to version 1 and checks the
// baseline tables accept rows, including the docker column.
func TestMigration1Baseline(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "db")
	s := openAt(t, p, 1)
	defer s.Close()
	if v, _ := s.version(ctx); v != 1 {
		t.Fatalf("version = %d", v)
	}
	if _, err := s.db.Exec(`INSERT INTO images(id, name, rootfs_path, docker, created_at) VALUES ('i1','one','/r',1,'t')`); err != nil {
		t.Fatal(err)
	}
	// foreign keys are enforced on every connection
	_, err := s.db.Exec(`INSERT INTO vms(id, name, image_id, state, cpus, memory_mib, disk_bytes, vmm, dir, run_dir, created_at, updated_at)
		VALUES ('v1','vm','missing','created',1,1,1,'qemu','d','r','t','t')`)
	if err == nil {
		t.Fatal("foreign key not enforced")
	}
}

// TestMigration2DropsDockerKeepsRows upgrades a version-1 database holding
// images and VMs to version 2 and checks nothing else is lost.
func TestMigration2DropsDockerKeepsRows(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "db")
	s := openAt(t, p, 1)
	mustExec(t, s, `INSERT INTO images(id, name, managed, docker, rootfs_path, kernel_ref, source_ref, config_json, size_bytes, created_at)
		VALUES ('i1','debian-bookworm',1,1,'/img/rootfs.ext4','k1','debian:bookworm','{"env":["A=1"]}',42,'2026-01-01T00:00:00Z')`)
	mustExec(t, s, `INSERT INTO vms(id, name, image_id, state, cpus, memory_mib, disk_bytes, vmm, dir, run_dir, created_at, updated_at)
		VALUES ('v1','box','i1','stopped',2,1024,8589934592,'qemu','/vms/v1','/run/v1','2026-01-01T00:00:00Z','2026-01-01T00:00:00Z')`)
	s.Close()

	s2, err := Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if v, _ := s2.version(ctx); v != 2 {
		t.Fatalf("version = %d", v)
	}
	var n int
	if err := s2.db.QueryRow(`SELECT count(*) FROM pragma_table_info('images') WHERE name='docker'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("docker column still there (n=%d err=%v)", n, err)
	}
	im, err := s2.GetImage(ctx, "debian-bookworm")
	if err != nil {
		t.Fatal(err)
	}
	if !im.Managed || im.SizeBytes != 42 || im.SourceRef != "debian:bookworm" || len(im.Config.Env) != 1 {
		t.Fatalf("image lost data: %+v", im)
	}
	vm, err := s2.GetVM(ctx, "box")
	if err != nil {
		t.Fatal(err)
	}
	if vm.ImageName != "debian-bookworm" || vm.CPUs != 2 || vm.DiskBytes != 8589934592 {
		t.Fatalf("vm lost data: %+v", vm)
	}
}

func TestNewerDatabaseRefusedUntouched(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "db")
	s, err := Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, s, `INSERT INTO schema_migrations(id, name, applied_at) VALUES (99, 'future', 'x')`)
	s.Close()
	if _, err := Open(ctx, p); !errors.Is(err, ErrNewerDatabase) {
		t.Fatalf("err = %v", err)
	}
	st, err := Status(ctx, p)
	if err != nil || st.Current != 99 || st.Latest != LatestVersion() {
		t.Fatalf("status %+v %v", st, err)
	}
}

func TestReadOnlyRunsNoMigrations(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "db")
	s := openAt(t, p, 1)
	s.Close()
	ro, err := OpenReadOnly(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if v, _ := ro.version(ctx); v != 1 {
		t.Fatalf("read-only open migrated: version %d", v)
	}
	if err := ro.CreateKernel(ctx, &model.Kernel{Name: "k", Dir: "/k"}); err == nil {
		t.Fatal("write succeeded on read-only store")
	}
	if _, err := OpenReadOnly(ctx, filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("opened a missing database")
	}
}

func TestCRUD(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	im := &model.Image{ID: "i1", Name: "busybox", Managed: true, RootfsPath: "/r", Config: model.ImageConfig{Env: []string{"PATH=/bin"}}, CreatedAt: time.Now()}
	if err := s.CreateImage(ctx, im); err != nil {
		t.Fatal(err)
	}
	dup := *im
	dup.ID = "i2"
	if err := s.CreateImage(ctx, &dup); !errors.Is(err, errkind.AlreadyExists) {
		t.Fatalf("dup image: %v", err)
	}
	if _, err := s.GetImage(ctx, "nope"); !errors.Is(err, errkind.NotFound) {
		t.Fatalf("missing image: %v", err)
	}
	vm := &model.VM{ID: "v1", Name: "box", ImageID: "i1", State: model.StateCreated, CPUs: 1, MemoryMiB: 512, VMM: "qemu",
		Network: model.VMNetwork{Mode: "nat", IP: "172.30.0.2"}}
	if err := s.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	vm.State = model.StateRunning
	vm.Identity = `{"pid":1}`
	if err := s.UpdateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetVM(ctx, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != model.StateRunning || got.Identity != `{"pid":1}` || got.Network.IP != "172.30.0.2" || got.ImageName != "busybox" {
		t.Fatalf("got %+v", got)
	}
	if n, _ := s.CountVMsUsingImage(ctx, "i1"); n != 1 {
		t.Fatalf("count = %d", n)
	}
	if err := s.DeleteVM(ctx, "v1"); err != nil {
		t.Fatal(err)
	}
	if vms, _ := s.ListVMs(ctx); len(vms) != 0 {
		t.Fatalf("vms left: %d", len(vms))
	}
}

func mustExec(t *testing.T, s *Store, q string) {
	t.Helper()
	if _, err := s.db.Exec(q); err != nil {
		t.Fatal(err)
	}
}
