// Package postgres is the store for several edgeprovd replicas sharing one
// PostgreSQL database. Schema migrations are embedded, versioned and applied
// under an advisory lock, so replicas starting together migrate once.
//
// Durability and throughput: every Update is one transaction committed with
// synchronous_commit on; PostgreSQL's WAL flush covers every transaction that
// committed while it ran, so concurrent registrations share fsyncs (group
// commit) without edgeprov batching them itself.
package postgres

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgeprov/edgeprov/daemon/store"
)

var _ store.Store = (*Store)(nil)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the advisory lock key that serialises migrations.
const migrationLock = 0x65646765 // "edge"

// Store is the PostgreSQL store.
type Store struct{ pool *pgxpool.Pool }

// Open connects, applies pending migrations and checks the schema version.
func Open(ctx context.Context, dsn string, maxConns int32) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres DSN: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect postgres: %w", err)
	}
	s := &Store{pool: pool}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

type migration struct {
	version int
	sql     string
}

func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		v, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("migration %s: name must start with its version", e.Name())
		}
		b, err := migrations.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{v, string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	if len(ms) == 0 || ms[len(ms)-1].version != store.SchemaVersion {
		return fmt.Errorf("embedded migrations end at %d, the store schema is %d", ms[len(ms)-1].version, store.SchemaVersion)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect postgres: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", migrationLock)
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("schema_migrations: %w", err)
	}
	var cur int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&cur); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if cur > store.SchemaVersion {
		return fmt.Errorf("store schema version %d is newer than this edgeprovd supports (%d): upgrade edgeprovd", cur, store.SchemaVersion)
	}
	for _, m := range ms {
		if m.version <= cur {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES ($1)", m.version)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %d: %w", m.version, err)
		}
	}
	return nil
}

// Close closes the pool.
func (s *Store) Close() error { s.pool.Close(); return nil }

// Instance implements store.Store.
func (s *Store) Instance(ctx context.Context) (*store.Instance, error) {
	var inst store.Instance
	err := s.pool.QueryRow(ctx, "SELECT id_scope, created_at FROM instance").Scan(&inst.IDScope, &inst.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read instance: %w", err)
	}
	return &inst, nil
}

// CreateInstance implements store.Store.
func (s *Store) CreateInstance(ctx context.Context, inst *store.Instance) error {
	_, err := s.pool.Exec(ctx, "INSERT INTO instance (id_scope, created_at) VALUES ($1, $2)", inst.IDScope, inst.CreatedAt)
	if isUniqueViolation(err) {
		return fmt.Errorf("instance: %w", store.ErrConflict)
	}
	return err
}

// Update implements store.Store: one transaction, durable on return.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return fn(&txn{ctx: ctx, tx: tx}) })
}

// View implements store.Store. The reads run on the pool without BEGIN and
// COMMIT: under READ COMMITTED each statement takes its own snapshot inside a
// transaction too, so one would only add two round trips to every poll and
// lookup. txn refuses writes itself (errReadOnly).
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	return fn(&txn{ctx: ctx, tx: s.pool, readOnly: true})
}

// PruneOperations implements store.Store.
func (s *Store) PruneOperations(ctx context.Context, before time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, "DELETE FROM operations WHERE updated_at < $1", before)
	if err != nil {
		return 0, fmt.Errorf("prune operations: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

type txn struct {
	ctx      context.Context
	tx       querier
	readOnly bool
}

// errReadOnly refuses a write inside View.
var errReadOnly = errors.New("write in a read-only transaction")

// exec runs a write; View's txn refuses it (it would autocommit on the pool).
func (t *txn) exec(sql string, args ...any) (pgconn.CommandTag, error) {
	if t.readOnly {
		return pgconn.CommandTag{}, errReadOnly
	}
	return t.tx.Exec(t.ctx, sql, args...)
}

// querier is what txn needs of a transaction (Update) or of the pool (View).
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (t *txn) get(what, q string, v any, args ...any) error {
	var body []byte
	err := t.tx.QueryRow(t.ctx, q, args...).Scan(&body)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s: decode: %w", what, err)
	}
	return nil
}

func (t *txn) Operation(scope, id string) (*store.Operation, error) {
	var op store.Operation
	if err := t.get("operation "+id, "SELECT body FROM operations WHERE scope=$1 AND id=$2", &op, scope, id); err != nil {
		return nil, err
	}
	return &op, nil
}

func (t *txn) PutOperation(op *store.Operation) error {
	body, err := json.Marshal(op)
	if err != nil {
		return err
	}
	_, err = t.exec(`INSERT INTO operations (scope, id, updated_at, body) VALUES ($1, $2, $3, $4)
		ON CONFLICT (scope, id) DO UPDATE SET updated_at = EXCLUDED.updated_at, body = EXCLUDED.body`, op.Scope, op.ID, op.UpdatedAt, body)
	return wrap("put operation", err)
}

func (t *txn) Record(scope, regID string) (*store.Record, error) {
	var r store.Record
	if err := t.get("registration "+regID, "SELECT body FROM records WHERE scope=$1 AND registration_id=$2", &r, scope, regID); err != nil {
		return nil, err
	}
	return &r, nil
}

func (t *txn) PutRecord(r *store.Record) error {
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = t.exec(`INSERT INTO records (scope, registration_id, etag, body) VALUES ($1, $2, $3, $4)
		ON CONFLICT (scope, registration_id) DO UPDATE SET etag = EXCLUDED.etag, body = EXCLUDED.body`, r.Scope, r.RegistrationID, r.ETag, body)
	return wrap("put registration", err)
}

func (t *txn) DeleteRecord(scope, regID, etag string) error {
	var tag pgconn.CommandTag
	var err error
	if etag == "" {
		tag, err = t.exec("DELETE FROM records WHERE scope=$1 AND registration_id=$2", scope, regID)
	} else {
		tag, err = t.exec("DELETE FROM records WHERE scope=$1 AND registration_id=$2 AND etag=$3", scope, regID, etag)
	}
	if err != nil {
		return wrap("delete registration", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	if etag != "" {
		if _, err := t.Record(scope, regID); err != nil {
			return err
		}
		return fmt.Errorf("registration %s: etag mismatch: %w", regID, store.ErrConflict)
	}
	return fmt.Errorf("registration %s: %w", regID, store.ErrNotFound)
}

func (t *txn) Records(scope, after string, limit int) ([]*store.Record, error) {
	var out []*store.Record
	err := t.list("SELECT body FROM records WHERE scope=$1 AND registration_id > $2 ORDER BY registration_id", scope, after, limit, func(b []byte) error {
		var r store.Record
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		out = append(out, &r)
		return nil
	})
	return out, err
}

func (t *txn) Enrollment(scope string, kind store.EnrollmentKind, id string) (*store.Enrollment, error) {
	e := &store.Enrollment{Scope: scope, Kind: kind, ID: id}
	err := t.tx.QueryRow(t.ctx, "SELECT etag, body FROM enrollments WHERE scope=$1 AND kind=$2 AND id=$3", scope, string(kind), id).Scan(&e.ETag, &e.Data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%s enrollment %s: %w", kind, id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("%s enrollment %s: %w", kind, id, err)
	}
	return e, nil
}

func checkKind(kind store.EnrollmentKind) error {
	if kind != store.KindIndividual && kind != store.KindGroup {
		return fmt.Errorf("unknown enrollment kind %q", kind)
	}
	return nil
}

func (t *txn) PutEnrollment(e *store.Enrollment) error {
	if err := checkKind(e.Kind); err != nil {
		return err
	}
	if e.ID == "" || e.Scope == "" {
		return fmt.Errorf("enrollment without scope or ID")
	}
	_, err := t.exec(`INSERT INTO enrollments (scope, kind, id, etag, body) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (scope, kind, id) DO UPDATE SET etag = EXCLUDED.etag, body = EXCLUDED.body`, e.Scope, string(e.Kind), e.ID, e.ETag, []byte(e.Data))
	return wrap("put enrollment", err)
}

func (t *txn) DeleteEnrollment(scope string, kind store.EnrollmentKind, id string) error {
	tag, err := t.exec("DELETE FROM enrollments WHERE scope=$1 AND kind=$2 AND id=$3", scope, string(kind), id)
	if err != nil {
		return wrap("delete enrollment", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s enrollment %s: %w", kind, id, store.ErrNotFound)
	}
	return nil
}

func (t *txn) Enrollments(scope string, kind store.EnrollmentKind, after string, limit int) ([]*store.Enrollment, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	q := "SELECT id, etag, body FROM enrollments WHERE scope=$1 AND kind=$2 AND id > $3 ORDER BY id"
	args := []any{scope, string(kind), after}
	if limit > 0 {
		q += " LIMIT $4"
		args = append(args, limit)
	}
	rows, err := t.tx.Query(t.ctx, q, args...)
	if err != nil {
		return nil, wrap("list enrollments", err)
	}
	defer rows.Close()
	var out []*store.Enrollment
	for rows.Next() {
		e := &store.Enrollment{Scope: scope, Kind: kind}
		if err := rows.Scan(&e.ID, &e.ETag, &e.Data); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func (t *txn) Challenge(scope, regID string, now time.Time) (*store.Challenge, error) {
	q := "SELECT body FROM challenges WHERE scope=$1 AND registration_id=$2 AND expires_at > $3"
	if !t.readOnly {
		// Two replicas answering the same challenge: the second waits for the
		// first to commit, then reads what it wrote.
		q += " FOR UPDATE"
	}
	var c store.Challenge
	if err := t.get("challenge of "+regID, q, &c, scope, regID, now); err != nil {
		return nil, err
	}
	return &c, nil
}

func (t *txn) PutChallenge(c *store.Challenge) error {
	body, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = t.exec(`INSERT INTO challenges (scope, registration_id, expires_at, body) VALUES ($1, $2, $3, $4)
		ON CONFLICT (scope, registration_id) DO UPDATE SET expires_at = EXCLUDED.expires_at, body = EXCLUDED.body`,
		c.Scope, c.RegistrationID, c.ExpiresAt, body)
	return wrap("put challenge", err)
}

func (t *txn) DeleteChallenge(scope, regID string) error {
	tag, err := t.exec("DELETE FROM challenges WHERE scope=$1 AND registration_id=$2", scope, regID)
	if err != nil {
		return wrap("delete challenge", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("challenge of %s: %w", regID, store.ErrNotFound)
	}
	return nil
}

func (t *txn) Identity(hub, deviceID string) (*store.Identity, error) {
	var id store.Identity
	if err := t.get("device "+deviceID+" on "+hub, "SELECT body FROM identities WHERE hub=$1 AND device_id=$2", &id, hub, deviceID); err != nil {
		return nil, err
	}
	return &id, nil
}

func (t *txn) PutIdentity(id *store.Identity) error {
	body, err := json.Marshal(id)
	if err != nil {
		return err
	}
	_, err = t.exec(`INSERT INTO identities (hub, device_id, body) VALUES ($1, $2, $3)
		ON CONFLICT (hub, device_id) DO UPDATE SET body = EXCLUDED.body`, id.Hub, id.DeviceID, body)
	return wrap("put identity", err)
}

func (t *txn) DeleteIdentity(hub, deviceID string) error {
	tag, err := t.exec("DELETE FROM identities WHERE hub=$1 AND device_id=$2", hub, deviceID)
	if err != nil {
		return wrap("delete identity", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("device %s on %s: %w", deviceID, hub, store.ErrNotFound)
	}
	return nil
}

func (t *txn) Identities(hub, after string, limit int) ([]*store.Identity, error) {
	var out []*store.Identity
	err := t.list("SELECT body FROM identities WHERE hub=$1 AND device_id > $2 ORDER BY device_id", hub, after, limit, func(b []byte) error {
		var id store.Identity
		if err := json.Unmarshal(b, &id); err != nil {
			return err
		}
		out = append(out, &id)
		return nil
	})
	return out, err
}

func (t *txn) CACertificate(scope, name string) (*store.CACertificate, error) {
	var c store.CACertificate
	if err := t.get("CA certificate "+name, "SELECT body FROM ca_certificates WHERE scope=$1 AND name_key=$2", &c, scope, strings.ToLower(name)); err != nil {
		return nil, err
	}
	return &c, nil
}

func (t *txn) PutCACertificate(c *store.CACertificate) error {
	body, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = t.exec(`INSERT INTO ca_certificates (scope, name_key, body) VALUES ($1, $2, $3)
		ON CONFLICT (scope, name_key) DO UPDATE SET body = EXCLUDED.body`, c.Scope, strings.ToLower(c.Name), body)
	return wrap("put CA certificate", err)
}

func (t *txn) DeleteCACertificate(scope, name string) error {
	tag, err := t.exec("DELETE FROM ca_certificates WHERE scope=$1 AND name_key=$2", scope, strings.ToLower(name))
	if err != nil {
		return wrap("delete CA certificate", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("CA certificate %s: %w", name, store.ErrNotFound)
	}
	return nil
}

func (t *txn) CACertificates(scope string) ([]*store.CACertificate, error) {
	var out []*store.CACertificate
	err := t.list("SELECT body FROM ca_certificates WHERE scope=$1 AND name_key > $2 ORDER BY name_key COLLATE \"C\"", scope, "", 0, func(b []byte) error {
		var c store.CACertificate
		if err := json.Unmarshal(b, &c); err != nil {
			return err
		}
		out = append(out, &c)
		return nil
	})
	return out, err
}

func (t *txn) list(q, key, after string, limit int, fn func([]byte) error) error {
	args := []any{key, after}
	if limit > 0 {
		q += " LIMIT $3"
		args = append(args, limit)
	}
	rows, err := t.tx.Query(t.ctx, q, args...)
	if err != nil {
		return wrap("list", err)
	}
	defer rows.Close()
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return err
		}
		if err := fn(b); err != nil {
			return fmt.Errorf("decode: %w", err)
		}
	}
	return rows.Err()
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}
