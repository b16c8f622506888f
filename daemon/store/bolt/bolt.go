// Package bolt is the embedded store: one bbolt file, no setup. Writes go through
// a group committer so that concurrent registrations share an fsync.
package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/edgeprov/edgeprov/daemon/store"
)

var _ store.Store = (*Store)(nil)

var (
	bucketMeta       = []byte("meta")
	bucketOps        = []byte("operations")
	bucketRecords    = []byte("records")
	bucketIdentities = []byte("identities")
	bucketCAs        = []byte("caCertificates")
	bucketIndividual = []byte("enrollments")
	bucketGroups     = []byte("enrollmentGroups")
	bucketChallenges = []byte("challenges")
	keySchema        = []byte("schemaVersion")
	keyInstance      = []byte("instance")
	keyHealth        = []byte("healthCheck")
)

// Options tune the store.
type Options struct {
	// MaxBatch caps the writes that share one commit; default 1,000.
	MaxBatch int
	// Timeout bounds waiting for the file lock (another edgeprovd holding it).
	Timeout time.Duration
	// ReadOnly opens the file with a shared lock, creates nothing and writes
	// nothing (backups and checks of a stopped daemon's store).
	ReadOnly bool
}

// Store is the bbolt store.
type Store struct {
	db     *bbolt.DB
	commit *committer // nil when read-only

	mu   sync.Mutex
	ping *pingCall // the write check in flight
}

type pingCall struct {
	done chan struct{}
	err  error // set before done is closed
}

var _ store.Pinger = (*Store)(nil)

// Open opens or creates the store at path and checks its schema version.
func Open(path string, opts Options) (*Store, error) {
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: opts.Timeout, ReadOnly: opts.ReadOnly})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: locked by another process (is edgeprovd already running?)", path)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 1000
	}
	if opts.ReadOnly {
		err = db.View(func(tx *bbolt.Tx) error {
			meta := tx.Bucket(bucketMeta)
			if meta == nil {
				return errors.New("not an edgeprov store (no meta bucket)")
			}
			_, err := schemaVersion(meta.Get(keySchema))
			return err
		})
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
		return &Store{db: db}, nil
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		// Buckets of later schema versions (CA certificates: 2, enrollments:
		// 3, TPM challenges: 4) are created here, which is all their migration takes.
		for _, b := range [][]byte{bucketMeta, bucketOps, bucketRecords, bucketIdentities, bucketCAs, bucketIndividual, bucketGroups, bucketChallenges} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		v := meta.Get(keySchema)
		if v == nil {
			return meta.Put(keySchema, []byte(strconv.Itoa(store.SchemaVersion)))
		}
		n, err := schemaVersion(v)
		if err != nil {
			return err
		}
		if n < store.SchemaVersion {
			// Every migration so far only adds buckets, created above. Writing
			// the new version keeps an older edgeprovd from ignoring what they hold.
			return meta.Put(keySchema, []byte(strconv.Itoa(store.SchemaVersion)))
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Store{db: db, commit: newCommitter(db, opts.MaxBatch)}, nil
}

// schemaVersion parses a stored schema version and refuses one this build
// cannot read.
func schemaVersion(v []byte) (int, error) {
	n, err := strconv.Atoi(string(v))
	if err != nil {
		return 0, fmt.Errorf("unreadable schema version %q", v)
	}
	if n > store.SchemaVersion {
		return n, fmt.Errorf("store schema version %d is newer than this edgeprovd supports (%d): "+
			"install an edgeprovd at least as new as the one that last ran on this store, "+
			"or restore a backup taken before the upgrade (edgeprovd restore)", n, store.SchemaVersion)
	}
	return n, nil
}

// Ping implements store.Pinger: it commits a tiny write (a timestamp in the
// meta bucket), which takes the writer lock, writes pages and syncs the file.
// Concurrent callers share one write. On a wedged store the commit may never
// finish: Ping returns when ctx ends, and later callers wait for that same
// stuck write rather than piling up more.
func (s *Store) Ping(ctx context.Context) error {
	s.mu.Lock()
	call := s.ping
	if call == nil {
		call = &pingCall{done: make(chan struct{})}
		s.ping = call
		go func() {
			put := func(tx *bbolt.Tx) error {
				return tx.Bucket(bucketMeta).Put(keyHealth, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
			}
			if s.commit != nil { // the path registrations take
				call.err = s.commit.update(put)
			} else {
				call.err = s.db.Update(put)
			}
			s.mu.Lock()
			s.ping = nil
			s.mu.Unlock()
			close(call.done)
		}()
	}
	s.mu.Unlock()
	select {
	case <-call.done:
		if call.err != nil {
			return fmt.Errorf("store write: %w", call.err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("store write did not finish: %w", ctx.Err())
	}
}

// Snapshot calls fn inside a read transaction with the size of a consistent
// copy of the whole file and a WriterTo that writes exactly that many bytes.
// Writers are not blocked meanwhile (bbolt's MVCC); a long snapshot only keeps
// the file from shrinking its free pages until it ends.
func (s *Store) Snapshot(fn func(size int64, w io.WriterTo) error) error {
	return s.db.View(func(tx *bbolt.Tx) error { return fn(tx.Size(), tx) })
}

// Summary is what Check found.
type Summary struct {
	SchemaVersion int    `json:"schemaVersion"`
	IDScope       string `json:"idScope"`
	Records       int    `json:"registrationRecords"`
	Operations    int    `json:"operations"`
	Identities    int    `json:"identities"`
}

// Check runs bbolt's consistency check over every page (no page twice, none
// lost, keys in order) and reports what the store holds.
func (s *Store) Check(ctx context.Context) (*Summary, error) {
	var sum Summary
	err := s.db.View(func(tx *bbolt.Tx) error {
		var errs []error
		for err := range tx.Check() { // drained to the end: the checker reads tx
			if len(errs) < 10 {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("consistency check: %w", errors.Join(errs...))
		}
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return errors.New("not an edgeprov store (no meta bucket)")
		}
		var err error
		if sum.SchemaVersion, err = schemaVersion(meta.Get(keySchema)); err != nil {
			return err
		}
		var inst store.Instance
		if err := getJSON(meta, keyInstance, &inst); err != nil {
			return fmt.Errorf("instance: %w", err)
		}
		sum.IDScope = inst.IDScope
		count := func(name []byte) int {
			if b := tx.Bucket(name); b != nil {
				return b.Stats().KeyN
			}
			return 0
		}
		sum.Records, sum.Operations, sum.Identities = count(bucketRecords), count(bucketOps), count(bucketIdentities)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("check store %s: %w", s.db.Path(), err)
	}
	return &sum, nil
}

// Close closes the file.
func (s *Store) Close() error {
	if s.commit != nil {
		s.commit.close()
	}
	return s.db.Close()
}

// Instance implements store.Store.
func (s *Store) Instance(ctx context.Context) (*Instance, error) {
	var inst store.Instance
	err := s.db.View(func(tx *bbolt.Tx) error {
		return getJSON(tx.Bucket(bucketMeta), keyInstance, &inst)
	})
	if err != nil {
		return nil, err
	}
	return &inst, nil
}

// Instance is store.Instance.
type Instance = store.Instance

// CreateInstance implements store.Store.
func (s *Store) CreateInstance(ctx context.Context, inst *store.Instance) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		if b.Get(keyInstance) != nil {
			return fmt.Errorf("instance: %w", store.ErrConflict)
		}
		return putJSON(b, keyInstance, inst)
	})
}

// Update implements store.Store through the group committer.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.commit == nil {
		return bolterrors.ErrDatabaseReadOnly
	}
	return s.commit.update(func(tx *bbolt.Tx) error { return fn(&txn{tx}) })
}

// View implements store.Store.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(func(tx *bbolt.Tx) error { return fn(&txn{tx}) })
}

// PruneOperations implements store.Store.
func (s *Store) PruneOperations(ctx context.Context, before time.Time) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketOps)
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var op store.Operation
			if err := json.Unmarshal(v, &op); err != nil {
				return fmt.Errorf("operation %q: %w", k, err)
			}
			if op.UpdatedAt.Before(before) {
				if err := c.Delete(); err != nil {
					return err
				}
				n++
			}
		}
		return nil
	})
	return n, err
}

type txn struct{ tx *bbolt.Tx }

func key(a, b string) []byte { return []byte(a + "\x00" + b) }

func (t *txn) Operation(scope, id string) (*store.Operation, error) {
	var op store.Operation
	if err := getJSON(t.tx.Bucket(bucketOps), key(scope, id), &op); err != nil {
		return nil, fmt.Errorf("operation %s: %w", id, err)
	}
	return &op, nil
}

func (t *txn) PutOperation(op *store.Operation) error {
	return putJSON(t.tx.Bucket(bucketOps), key(op.Scope, op.ID), op)
}

func (t *txn) Record(scope, regID string) (*store.Record, error) {
	var r store.Record
	if err := getJSON(t.tx.Bucket(bucketRecords), key(scope, regID), &r); err != nil {
		return nil, fmt.Errorf("registration %s: %w", regID, err)
	}
	return &r, nil
}

func (t *txn) PutRecord(r *store.Record) error {
	return putJSON(t.tx.Bucket(bucketRecords), key(r.Scope, r.RegistrationID), r)
}

func (t *txn) DeleteRecord(scope, regID, etag string) error {
	b := t.tx.Bucket(bucketRecords)
	k := key(scope, regID)
	if etag != "" {
		r, err := t.Record(scope, regID)
		if err != nil {
			return err
		}
		if r.ETag != etag {
			return fmt.Errorf("registration %s: etag mismatch: %w", regID, store.ErrConflict)
		}
	} else if b.Get(k) == nil {
		return fmt.Errorf("registration %s: %w", regID, store.ErrNotFound)
	}
	return b.Delete(k)
}

func (t *txn) Records(scope, after string, limit int) ([]*store.Record, error) {
	var out []*store.Record
	err := scan(t.tx.Bucket(bucketRecords), scope, after, limit, func(v []byte) error {
		var r store.Record
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		out = append(out, &r)
		return nil
	})
	return out, err
}

func enrollmentBucket(tx *bbolt.Tx, kind store.EnrollmentKind) (*bbolt.Bucket, error) {
	var b *bbolt.Bucket
	switch kind {
	case store.KindIndividual:
		b = tx.Bucket(bucketIndividual)
	case store.KindGroup:
		b = tx.Bucket(bucketGroups)
	default:
		return nil, fmt.Errorf("unknown enrollment kind %q", kind)
	}
	// Imports write IDs mostly in order; bbolt's default split at half a page
	// would leave the file twice as large as its data.
	b.FillPercent = 0.9
	return b, nil
}

// Enrollment values are "etag\ndata": the data is the model's JSON, kept opaque,
// and is not scanned twice on the registration path.
func encodeEnrollment(e *store.Enrollment) ([]byte, error) {
	if strings.ContainsRune(e.ETag, '\n') {
		return nil, fmt.Errorf("enrollment %s: etag contains a newline", e.ID)
	}
	v := make([]byte, 0, len(e.ETag)+1+len(e.Data))
	v = append(append(append(v, e.ETag...), '\n'), e.Data...)
	return v, nil
}

func decodeEnrollment(scope string, kind store.EnrollmentKind, id string, v []byte) (*store.Enrollment, error) {
	i := bytes.IndexByte(v, '\n')
	if i < 0 {
		return nil, fmt.Errorf("enrollment %s: corrupt value", id)
	}
	return &store.Enrollment{Scope: scope, Kind: kind, ID: id, ETag: string(v[:i]), Data: bytes.Clone(v[i+1:])}, nil
}

func (t *txn) Enrollment(scope string, kind store.EnrollmentKind, id string) (*store.Enrollment, error) {
	b, err := enrollmentBucket(t.tx, kind)
	if err != nil {
		return nil, err
	}
	v := b.Get(key(scope, id))
	if v == nil {
		return nil, fmt.Errorf("%s enrollment %s: %w", kind, id, store.ErrNotFound)
	}
	return decodeEnrollment(scope, kind, id, v)
}

func (t *txn) PutEnrollment(e *store.Enrollment) error {
	b, err := enrollmentBucket(t.tx, e.Kind)
	if err != nil {
		return err
	}
	if e.ID == "" || e.Scope == "" {
		return fmt.Errorf("enrollment without scope or ID")
	}
	v, err := encodeEnrollment(e)
	if err != nil {
		return err
	}
	return b.Put(key(e.Scope, e.ID), v)
}

func (t *txn) DeleteEnrollment(scope string, kind store.EnrollmentKind, id string) error {
	b, err := enrollmentBucket(t.tx, kind)
	if err != nil {
		return err
	}
	k := key(scope, id)
	if b.Get(k) == nil {
		return fmt.Errorf("%s enrollment %s: %w", kind, id, store.ErrNotFound)
	}
	return b.Delete(k)
}

func (t *txn) Enrollments(scope string, kind store.EnrollmentKind, after string, limit int) ([]*store.Enrollment, error) {
	b, err := enrollmentBucket(t.tx, kind)
	if err != nil {
		return nil, err
	}
	var out []*store.Enrollment
	err = scanKV(b, scope, after, limit, func(k, v []byte) error {
		e, err := decodeEnrollment(scope, kind, string(k[len(scope)+1:]), v)
		if err != nil {
			return err
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

func (t *txn) Challenge(scope, regID string, now time.Time) (*store.Challenge, error) {
	var c store.Challenge
	if err := getJSON(t.tx.Bucket(bucketChallenges), key(scope, regID), &c); err != nil {
		return nil, fmt.Errorf("challenge of %s: %w", regID, err)
	}
	if !now.Before(c.ExpiresAt) {
		return nil, fmt.Errorf("challenge of %s expired at %s: %w", regID, c.ExpiresAt.UTC().Format(time.RFC3339), store.ErrNotFound)
	}
	return &c, nil
}

func (t *txn) PutChallenge(c *store.Challenge) error {
	return putJSON(t.tx.Bucket(bucketChallenges), key(c.Scope, c.RegistrationID), c)
}

func (t *txn) DeleteChallenge(scope, regID string) error {
	b := t.tx.Bucket(bucketChallenges)
	if b.Get(key(scope, regID)) == nil {
		return fmt.Errorf("challenge of %s: %w", regID, store.ErrNotFound)
	}
	return b.Delete(key(scope, regID))
}

func (t *txn) Identity(hub, deviceID string) (*store.Identity, error) {
	var id store.Identity
	if err := getJSON(t.tx.Bucket(bucketIdentities), key(hub, deviceID), &id); err != nil {
		return nil, fmt.Errorf("device %s on %s: %w", deviceID, hub, err)
	}
	return &id, nil
}

func (t *txn) PutIdentity(id *store.Identity) error {
	return putJSON(t.tx.Bucket(bucketIdentities), key(id.Hub, id.DeviceID), id)
}

func (t *txn) DeleteIdentity(hub, deviceID string) error {
	b := t.tx.Bucket(bucketIdentities)
	if b.Get(key(hub, deviceID)) == nil {
		return fmt.Errorf("device %s on %s: %w", deviceID, hub, store.ErrNotFound)
	}
	return b.Delete(key(hub, deviceID))
}

func (t *txn) Identities(hub, after string, limit int) ([]*store.Identity, error) {
	var out []*store.Identity
	err := scan(t.tx.Bucket(bucketIdentities), hub, after, limit, func(v []byte) error {
		var id store.Identity
		if err := json.Unmarshal(v, &id); err != nil {
			return err
		}
		out = append(out, &id)
		return nil
	})
	return out, err
}

func caKey(scope, name string) []byte { return key(scope, strings.ToLower(name)) }

func (t *txn) CACertificate(scope, name string) (*store.CACertificate, error) {
	var c store.CACertificate
	if err := getJSON(t.tx.Bucket(bucketCAs), caKey(scope, name), &c); err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", name, err)
	}
	return &c, nil
}

func (t *txn) PutCACertificate(c *store.CACertificate) error {
	return putJSON(t.tx.Bucket(bucketCAs), caKey(c.Scope, c.Name), c)
}

func (t *txn) DeleteCACertificate(scope, name string) error {
	b := t.tx.Bucket(bucketCAs)
	if b.Get(caKey(scope, name)) == nil {
		return fmt.Errorf("CA certificate %s: %w", name, store.ErrNotFound)
	}
	return b.Delete(caKey(scope, name))
}

func (t *txn) CACertificates(scope string) ([]*store.CACertificate, error) {
	var out []*store.CACertificate
	err := scan(t.tx.Bucket(bucketCAs), scope, "", 0, func(v []byte) error {
		var c store.CACertificate
		if err := json.Unmarshal(v, &c); err != nil {
			return err
		}
		out = append(out, &c)
		return nil
	})
	return out, err
}

// scan visits the values under prefix, in key order, after the given suffix.
func scan(b *bbolt.Bucket, prefix, after string, limit int, fn func([]byte) error) error {
	return scanKV(b, prefix, after, limit, func(_, v []byte) error { return fn(v) })
}

// scanKV is scan with the keys.
func scanKV(b *bbolt.Bucket, prefix, after string, limit int, fn func(k, v []byte) error) error {
	p := []byte(prefix + "\x00")
	c := b.Cursor()
	var k, v []byte
	if after == "" {
		k, v = c.Seek(p)
	} else {
		start := key(prefix, after)
		k, v = c.Seek(start)
		if bytes.Equal(k, start) {
			k, v = c.Next()
		}
	}
	n := 0
	for ; k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if limit > 0 && n == limit {
			break
		}
		if err := fn(k, v); err != nil {
			return fmt.Errorf("decode %q: %w", k, err)
		}
		n++
	}
	return nil
}

func getJSON(b *bbolt.Bucket, k []byte, v any) error {
	data := b.Get(k)
	if data == nil {
		return store.ErrNotFound
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %q: %w", k, err)
	}
	return nil
}

func putJSON(b *bbolt.Bucket, k []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, data)
}
