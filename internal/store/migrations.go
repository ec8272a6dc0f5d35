package store

// migration is one schema change. The list is append-only: ids are never
// reordered or reused, and each migration runs in its own transaction
// together with its schema_migrations record.
type migration struct {
	id   int
	name string
	sql  string
}

var migrations = []migration{
	{1, "baseline", `
CREATE TABLE images (
	id              TEXT PRIMARY KEY,
	name            TEXT NOT NULL UNIQUE,
	managed         INTEGER NOT NULL DEFAULT 0,
	docker          INTEGER NOT NULL DEFAULT 0,
	rootfs_path     TEXT NOT NULL,
	kernel_ref      TEXT NOT NULL DEFAULT '',
	kernel_path     TEXT NOT NULL DEFAULT '',
	initrd_path     TEXT NOT NULL DEFAULT '',
	modules_dir     TEXT NOT NULL DEFAULT '',
	source_ref      TEXT NOT NULL DEFAULT '',
	manifest_digest TEXT NOT NULL DEFAULT '',
	config_json     TEXT NOT NULL DEFAULT '{}',
	size_bytes      INTEGER NOT NULL DEFAULT 0,
	init_mode       TEXT NOT NULL DEFAULT '',
	created_at      TEXT NOT NULL
);
CREATE TABLE kernels (
	name        TEXT PRIMARY KEY,
	version     TEXT NOT NULL DEFAULT '',
	sha256      TEXT NOT NULL DEFAULT '',
	source      TEXT NOT NULL DEFAULT '',
	dir         TEXT NOT NULL,
	imported_at TEXT NOT NULL
);
CREATE TABLE vms (
	id             TEXT PRIMARY KEY,
	name           TEXT NOT NULL UNIQUE,
	image_id       TEXT NOT NULL REFERENCES images(id),
	kernel_ref     TEXT NOT NULL DEFAULT '',
	state          TEXT NOT NULL,
	last_error     TEXT NOT NULL DEFAULT '',
	cpus           INTEGER NOT NULL,
	memory_mib     INTEGER NOT NULL,
	disk_bytes     INTEGER NOT NULL,
	vmm            TEXT NOT NULL,
	accel          TEXT NOT NULL DEFAULT '',
	dir            TEXT NOT NULL,
	run_dir        TEXT NOT NULL,
	identity_json  TEXT NOT NULL DEFAULT '',
	network_json   TEXT NOT NULL DEFAULT '{}',
	workspace_json TEXT NOT NULL DEFAULT '{}',
	created_at     TEXT NOT NULL,
	updated_at     TEXT NOT NULL
);
CREATE INDEX vms_image_id ON vms(image_id);
`},
	// The docker bit on images was never used at runtime (as in the seed
	// that removed it); SQLite supports DROP COLUMN since 3.35.
	{2, "drop_images_docker", `ALTER TABLE images DROP COLUMN docker;`},
}

// LatestVersion is the schema version this binary knows.
func LatestVersion() int { return migrations[len(migrations)-1].id }
