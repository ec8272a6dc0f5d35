// Package store keeps banger's state in SQLite (pure-Go driver): WAL, a busy
// timeout and foreign keys on every connection, one writer at a time, and
// numbered append-only migrations.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/bangerdev/banger/internal/errkind"
)

// ErrNewerDatabase means the database was written by a newer banger.
var ErrNewerDatabase = errors.New("database schema is newer than this binary")

// Store is an open database.
type Store struct {
	db       *sql.DB
	writeMu  sync.Mutex
	readOnly bool
}

func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_txlock", "immediate")
	if readOnly {
		q.Add("mode", "ro")
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(NORMAL)")
	}
	return "file:" + path + "?" + q.Encode()
}

// Open opens (creating if needed) the database at path and applies pending
// migrations. A database from a newer binary is refused untouched.
func Open(ctx context.Context, path string) (*Store, error) {
	st, err := Status(ctx, path)
	if err != nil {
		return nil, err
	}
	if st.Current > st.Latest {
		return nil, fmt.Errorf("opening %s: schema version %d, this binary knows %d: %w (upgrade banger)", path, st.Current, st.Latest, ErrNewerDatabase)
	}
	db, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	s := &Store{db: db}
	if err := s.migrate(ctx, len(migrations)); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// OpenReadOnly opens an existing database without running migrations (used
// by doctor and by the migration check).
func OpenReadOnly(ctx context.Context, path string) (*Store, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("opening %s read-only: %w", path, err)
	}
	db, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		return nil, fmt.Errorf("opening %s read-only: %w", path, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening %s read-only: %w", path, err)
	}
	return &Store{db: db, readOnly: true}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// MigrationStatus compares a database's schema to this binary's.
type MigrationStatus struct {
	Current int `json:"current"`
	Latest  int `json:"latest"`
}

// Pending reports whether migrations would run.
func (m MigrationStatus) Pending() bool { return m.Current < m.Latest }

// Status reads the schema version of the database at path without changing
// it. A missing database has version 0.
func Status(ctx context.Context, path string) (MigrationStatus, error) {
	st := MigrationStatus{Latest: LatestVersion()}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	ro, err := OpenReadOnly(ctx, path)
	if err != nil {
		return st, err
	}
	defer ro.Close()
	cur, err := ro.version(ctx)
	if err != nil {
		return st, err
	}
	st.Current = cur
	return st, nil
}

func (s *Store) version(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type='table' AND name='schema_migrations'`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	if n == 0 {
		return 0, nil
	}
	var v sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT max(id) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	return int(v.Int64), nil
}

// migrate applies migrations up to and including index upto-1 of the list.
func (s *Store) migrate(ctx context.Context, upto int) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`)
		return err
	}, func() error {
		cur, err := s.version(ctx)
		if err != nil {
			return err
		}
		for _, m := range migrations[:upto] {
			if m.id <= cur {
				continue
			}
			if err := s.applyOne(ctx, m); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *Store) applyOne(ctx context.Context, m migration) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migration %d (%s): %w", m.id, m.name, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return fmt.Errorf("migration %d (%s): %w", m.id, m.name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(id, name, applied_at) VALUES (?, ?, ?)`,
		m.id, m.name, now()); err != nil {
		return fmt.Errorf("recording migration %d: %w", m.id, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migration %d (%s): %w", m.id, m.name, err)
	}
	return nil
}

// write serialises writers: it runs the first function in a transaction and
// then any follow-ups while holding the write lock.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error, after ...func() error) error {
	if s.readOnly {
		return errors.New("store is read-only")
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	for _, f := range after {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

// Ping checks the database answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var n int
	return s.db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master`).Scan(&n)
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func notFound(kind, name string) error {
	return errkind.New(errkind.NotFound, "%s %q not found", kind, name)
}
