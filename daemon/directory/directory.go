// Package directory is the one place enrollments are found and managed. Two
// sources feed it: the YAML catalog, authoritative and read-only here, and the
// enrollments made through the service API, kept in the store. The
// registration path asks it through Lookup; the service API manages the
// API-made entries through it.
//
// Lookup cost does not grow with the number of API-made individual
// enrollments: the device's own entry is one store read by key (a B+tree
// lookup in bbolt, an index lookup in PostgreSQL), and only groups, which stay
// few, are indexed in memory; that index is rebuilt whenever a group is written
// through this Directory, and re-read every few seconds for the groups other
// replicas wrote.
package directory

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeprov/edgeprov/daemon/catalog"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/secrets"
	"github.com/edgeprov/edgeprov/daemon/store"
)

// Source says where an enrollment comes from.
type Source string

// Sources.
const (
	SourceCatalog Source = "catalog"
	SourceAPI     Source = "api"
)

var (
	// ErrNotFound: no such enrollment.
	ErrNotFound = errors.New("not found")
	// ErrExists: a create found the enrollment already there (PUT without If-Match).
	ErrExists = errors.New("already exists")
	// ErrPrecondition: If-Match names another etag.
	ErrPrecondition = errors.New("etag does not match")
)

// ReadOnlyError refuses a change to an entry the catalog file declares.
type ReadOnlyError struct {
	File, Kind, ID string
}

func (e *ReadOnlyError) Error() string {
	return fmt.Sprintf("%s %q is declared in the catalog file %s and is read-only through the service API; edit that file instead", e.Kind, e.ID, e.File)
}

// InvalidError is an enrollment that fails validation; Err joins FieldErrors.
type InvalidError struct{ Err error }

func (e *InvalidError) Error() string { return e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

// Config builds a Directory.
type Config struct {
	Scope   string
	Catalog *catalog.Source
	Store   store.Store
	Logger  *slog.Logger
	Now     func() time.Time
	// GroupsRefresh bounds how long a group written by another replica (on a
	// shared store) stays unseen; default 5s.
	GroupsRefresh time.Duration
	// Sealer encrypts the symmetric keys of API-made enrollments at rest
	// (required).
	Sealer secrets.Sealer
}

// Directory implements registration.Enrollments over the catalog and the store.
type Directory struct {
	cfg      Config
	scope    string
	log      *slog.Logger
	groups   atomic.Pointer[enrollment.Set] // API-made groups, indexed
	groupsMu sync.Mutex                     // serialises index rebuilds
	sorted   atomic.Pointer[sortedCatalog]
	decoded  decodedCache
	// groupsAt is when the group index was last read (unix nanoseconds);
	// refreshing is set while a background refresh runs.
	groupsAt   atomic.Int64
	refreshing atomic.Bool
}

// decodedCache keeps recently decoded API-made individual enrollments by ID
// and etag: a device's poll right after its register call, and re-registrations,
// skip the JSON decode and key validation (most of a lookup's cost). The etag
// read from the store decides whether an entry is still current, so the cache
// is never stale.
type decodedCache struct {
	mu sync.Mutex
	m  map[string]*enrollment.Individual
}

const decodedCacheSize = 8192

func (c *decodedCache) get(id, etag string) *enrollment.Individual {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[id]; e != nil && e.ETag == etag {
		return e
	}
	return nil
}

func (c *decodedCache) put(id string, e *enrollment.Individual) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]*enrollment.Individual, decodedCacheSize)
	}
	if len(c.m) >= decodedCacheSize {
		for k := range c.m { // evict an arbitrary entry
			delete(c.m, k)
			break
		}
	}
	c.m[id] = e
}

// New returns a Directory and indexes the store's groups.
func New(ctx context.Context, cfg Config) (*Directory, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sealer == nil {
		return nil, errors.New("directory: a Sealer is required (keys are never stored in the clear)")
	}
	if cfg.GroupsRefresh == 0 {
		cfg.GroupsRefresh = 5 * time.Second
	}
	d := &Directory{cfg: cfg, scope: dpsapi.NormalizeIDScope(cfg.Scope), log: cfg.Logger}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if err := d.reloadGroups(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// Scope is the ID scope served.
func (d *Directory) Scope() string { return d.scope }

// reloadGroups rebuilds the index of the store's groups from what is committed.
func (d *Directory) reloadGroups(ctx context.Context) error {
	d.groupsMu.Lock()
	defer d.groupsMu.Unlock()
	started := time.Now()
	var groups []*enrollment.Group
	err := d.cfg.Store.View(ctx, func(tx store.Tx) error {
		groups = groups[:0]
		es, err := tx.Enrollments(d.scope, store.KindGroup, "", 0)
		if err != nil {
			return err
		}
		for _, e := range es {
			g, err := d.decodeGroup(e)
			if err != nil {
				// One unreadable entry must not take every group down.
				d.log.Error("skipping unreadable enrollment group in the store", "id", e.ID, "error", err)
				continue
			}
			groups = append(groups, g)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("index enrollment groups: %w", err)
	}
	set, err := enrollment.NewSet(nil, groups)
	if err != nil {
		return fmt.Errorf("index enrollment groups: %w", err)
	}
	d.groups.Store(set)
	d.groupsAt.Store(started.UnixNano())
	return nil
}

// refreshGroups re-reads the group index in the background when it is older
// than GroupsRefresh: writes through this Directory rebuild it at once, this
// catches the ones other replicas made. The lookup that notices does not wait.
func (d *Directory) refreshGroups() {
	if time.Since(time.Unix(0, d.groupsAt.Load())) < d.cfg.GroupsRefresh || !d.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer d.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.reloadGroups(ctx); err != nil {
			d.log.Warn("refreshing the enrollment group index failed; the previous one keeps serving", "error", err)
		}
	}()
}

// Lookup implements registration.Enrollments: the catalog first (it is
// authoritative), then the store.
func (d *Directory) Lookup(ctx context.Context, scope, registrationID string) (enrollment.Lookup, error) {
	if !strings.EqualFold(scope, d.scope) {
		return nil, nil
	}
	d.refreshGroups()
	v := &view{id: dpsapi.NormalizeRegistrationID(registrationID), cat: d.cfg.Catalog.Set(d.scope), api: d.groups.Load()}
	if v.ind = v.cat.Individual(registrationID); v.ind != nil {
		return v, nil
	}
	var raw *store.Enrollment
	err := d.cfg.Store.View(ctx, func(tx store.Tx) error {
		e, err := tx.Enrollment(d.scope, store.KindIndividual, v.id)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		raw = e
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read enrollment %s: %w", v.id, err)
	}
	if raw != nil {
		if v.ind = d.decoded.get(v.id, raw.ETag); v.ind == nil {
			if v.ind, err = d.decodeIndividual(raw); err != nil {
				return nil, err
			}
			d.decoded.put(v.id, v.ind)
		}
	}
	return v, nil
}

// view is what Lookup found for one device.
type view struct {
	id       string
	ind      *enrollment.Individual
	cat, api *enrollment.Set
}

func (v *view) Individual(id string) *enrollment.Individual {
	if dpsapi.NormalizeRegistrationID(id) == v.id {
		return v.ind
	}
	return v.cat.Individual(id)
}

func (v *view) Group(id string) *enrollment.Group {
	if g := v.cat.Group(id); g != nil {
		return g
	}
	return v.api.Group(id)
}

func (v *view) SymmetricKeyCandidates(id string) []*enrollment.Group {
	return v.merge(v.cat.SymmetricKeyCandidates(id), v.api.SymmetricKeyCandidates(id))
}

func (v *view) X509GroupsBySubject(rawSubject []byte) []*enrollment.Group {
	return v.merge(v.cat.X509GroupsBySubject(rawSubject), v.api.X509GroupsBySubject(rawSubject))
}

func (v *view) X509GroupsByCAName(name string) []*enrollment.Group {
	return v.merge(v.cat.X509GroupsByCAName(name), v.api.X509GroupsByCAName(name))
}

func (v *view) TPMGroups() []*enrollment.Group {
	return v.merge(v.cat.TPMGroups(), v.api.TPMGroups())
}

// merge appends the API-made groups a catalog group of the same ID does not shadow.
func (v *view) merge(cat, api []*enrollment.Group) []*enrollment.Group {
	if len(api) == 0 {
		return cat
	}
	out := slices.Clip(cat)
	for _, g := range api {
		if v.cat.Group(g.EnrollmentGroupID) == nil {
			out = append(out, g)
		}
	}
	return out
}

// storedEntry is what the store keeps of an API-made enrollment: the model's
// JSON without its symmetric keys, and the keys sealed by the data key (as
// the local hub's device keys are), bound to the entry they belong to.
type storedEntry struct {
	Enrollment json.RawMessage `json:"enrollment"`
	SealedKeys []byte          `json:"sealedKeys,omitempty"`
}

type keyPair struct {
	Primary   string `json:"p,omitempty"`
	Secondary string `json:"s,omitempty"`
}

// sealContext binds sealed keys to one entry: they cannot be moved to another.
func (d *Directory) sealContext(kind store.EnrollmentKind, id string) []byte {
	return []byte("edgeprov enrollment keys\x00" + d.scope + "\x00" + string(kind) + "\x00" + id)
}

// encode makes the stored form of x (an *Individual or *Group whose Common is c).
func (d *Directory) encode(kind store.EnrollmentKind, id string, x any, c *enrollment.Common) ([]byte, error) {
	var kp keyPair
	if sk := c.Attestation.SymmetricKey; sk != nil {
		kp = keyPair{sk.PrimaryKey, sk.SecondaryKey}
		bare := *sk
		bare.PrimaryKey, bare.SecondaryKey = "", ""
		c.Attestation.SymmetricKey = &bare
		defer func() { c.Attestation.SymmetricKey = sk }()
	}
	body, err := json.Marshal(x)
	if err != nil {
		return nil, err
	}
	out := storedEntry{Enrollment: body}
	if kp != (keyPair{}) {
		plain, _ := json.Marshal(kp)
		if out.SealedKeys, err = d.cfg.Sealer.Seal(plain, d.sealContext(kind, id)); err != nil {
			return nil, fmt.Errorf("seal the keys of %s: %w", id, err)
		}
	}
	return json.Marshal(out)
}

// decode reads a stored entry into x (whose Common is c), opens its keys and
// validates it (which decodes the keys).
func (d *Directory) decode(e *store.Enrollment, x any, c *enrollment.Common, validate func() error) error {
	var st storedEntry
	if err := json.Unmarshal(e.Data, &st); err != nil || len(st.Enrollment) == 0 {
		return fmt.Errorf("decode %s enrollment %s: not a stored enrollment (%v)", e.Kind, e.ID, err)
	}
	if err := json.Unmarshal(st.Enrollment, x); err != nil {
		return fmt.Errorf("decode %s enrollment %s: %w", e.Kind, e.ID, err)
	}
	if len(st.SealedKeys) > 0 {
		plain, err := d.cfg.Sealer.Open(st.SealedKeys, d.sealContext(e.Kind, e.ID))
		if err != nil {
			return fmt.Errorf("open the keys of %s enrollment %s: %w", e.Kind, e.ID, err)
		}
		var kp keyPair
		if err := json.Unmarshal(plain, &kp); err != nil {
			return fmt.Errorf("keys of %s enrollment %s: %w", e.Kind, e.ID, err)
		}
		if c.Attestation.SymmetricKey == nil {
			c.Attestation.SymmetricKey = &enrollment.SymmetricKeyAttestation{}
		}
		c.Attestation.SymmetricKey.PrimaryKey, c.Attestation.SymmetricKey.SecondaryKey = kp.Primary, kp.Secondary
	}
	if err := validate(); err != nil {
		return fmt.Errorf("stored %s enrollment %s: %w", e.Kind, e.ID, err)
	}
	c.ETag = e.ETag
	return nil
}

func (d *Directory) decodeIndividual(e *store.Enrollment) (*enrollment.Individual, error) {
	var ind enrollment.Individual
	if err := d.decode(e, &ind, &ind.Common, func() error { return ind.Validate("enrollment") }); err != nil {
		return nil, err
	}
	return &ind, nil
}

func (d *Directory) decodeGroup(e *store.Enrollment) (*enrollment.Group, error) {
	var g enrollment.Group
	if err := d.decode(e, &g, &g.Common, func() error { return g.Validate("enrollmentGroup") }); err != nil {
		return nil, err
	}
	return &g, nil
}

// Shadowed returns the IDs of store entries that catalog f hides (the catalog
// wins a lookup); an operator should delete them or remove the catalog entry.
func (d *Directory) Shadowed(ctx context.Context, f *catalog.File) ([]string, error) {
	if f == nil {
		return nil, nil
	}
	var out []string
	err := d.cfg.Store.View(ctx, func(tx store.Tx) error {
		out = out[:0]
		for _, e := range f.Individuals {
			if _, err := tx.Enrollment(d.scope, store.KindIndividual, dpsapi.NormalizeRegistrationID(e.RegistrationID)); err == nil {
				out = append(out, "enrollment "+e.RegistrationID)
			}
		}
		for _, g := range f.Groups {
			if _, err := tx.Enrollment(d.scope, store.KindGroup, strings.ToLower(g.EnrollmentGroupID)); err == nil {
				out = append(out, "enrollment group "+g.EnrollmentGroupID)
			}
		}
		return nil
	})
	return out, err
}

// NewETag makes an etag as DPS quotes them: a GUID inside double quotes, the
// quotes being part of the value (protocol.md §6.5).
func NewETag() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return `"` + h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32] + `"`
}

// ETagMatches compares an If-Match value with an etag: quotes and a weak
// prefix are ignored, "*" matches anything.
func ETagMatches(ifMatch, etag string) bool {
	ifMatch = strings.TrimSpace(ifMatch)
	if ifMatch == "*" {
		return true
	}
	norm := func(s string) string {
		s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
		return strings.Trim(s, `"`)
	}
	return norm(ifMatch) != "" && norm(ifMatch) == norm(etag)
}

// newKey is a symmetric key as DPS generates them: 64 random bytes, base64.
func newKey() string {
	var b [64]byte
	rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}
