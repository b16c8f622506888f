package directory

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/catalog"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/store"
)

// kindOps is what the generic management code needs to know about a kind.
type kindOps[T any] struct {
	kind     store.EnrollmentKind
	name     string // as errors name it
	id       func(*T) string
	key      func(id string) string
	common   func(*T) *enrollment.Common
	validate func(*T) error
	decode   func(*Directory, *store.Enrollment) (*T, error)
	inCat    func(*enrollment.Set, string) *T
	catAll   func(*catalog.File) []*T
	sorted   func(*sortedCatalog) []*T
}

var individualOps = kindOps[enrollment.Individual]{
	kind:     store.KindIndividual,
	name:     "individual enrollment",
	id:       func(e *enrollment.Individual) string { return e.RegistrationID },
	key:      dpsapi.NormalizeRegistrationID,
	common:   func(e *enrollment.Individual) *enrollment.Common { return &e.Common },
	validate: func(e *enrollment.Individual) error { return e.Validate("enrollment") },
	decode:   (*Directory).decodeIndividual,
	inCat:    func(s *enrollment.Set, id string) *enrollment.Individual { return s.Individual(id) },
	catAll:   func(f *catalog.File) []*enrollment.Individual { return f.Individuals },
	sorted:   func(s *sortedCatalog) []*enrollment.Individual { return s.ind },
}

var groupOps = kindOps[enrollment.Group]{
	kind:     store.KindGroup,
	name:     "enrollment group",
	id:       func(g *enrollment.Group) string { return g.EnrollmentGroupID },
	key:      strings.ToLower,
	common:   func(g *enrollment.Group) *enrollment.Common { return &g.Common },
	validate: func(g *enrollment.Group) error { return g.Validate("enrollmentGroup") },
	decode:   (*Directory).decodeGroup,
	inCat:    func(s *enrollment.Set, id string) *enrollment.Group { return s.Group(id) },
	catAll:   func(f *catalog.File) []*enrollment.Group { return f.Groups },
	sorted:   func(s *sortedCatalog) []*enrollment.Group { return s.groups },
}

// Individual returns an individual enrollment (with its keys) and its source.
func (d *Directory) Individual(ctx context.Context, id string) (*enrollment.Individual, Source, error) {
	return get(ctx, d, individualOps, id)
}

// Group returns an enrollment group (with its keys) and its source.
func (d *Directory) Group(ctx context.Context, id string) (*enrollment.Group, Source, error) {
	return get(ctx, d, groupOps, id)
}

// PutIndividual creates or replaces an API-made individual enrollment under
// the If-Match rules of protocol.md §6.5; it returns what was stored and
// whether it was created.
func (d *Directory) PutIndividual(ctx context.Context, e *enrollment.Individual, ifMatch string) (*enrollment.Individual, bool, error) {
	return put(ctx, d, individualOps, e, ifMatch)
}

// PutGroup is PutIndividual for groups.
func (d *Directory) PutGroup(ctx context.Context, g *enrollment.Group, ifMatch string) (*enrollment.Group, bool, error) {
	out, created, err := put(ctx, d, groupOps, g, ifMatch)
	if err == nil {
		err = d.reloadGroups(ctx)
	}
	return out, created, err
}

// DeleteIndividual deletes an API-made individual enrollment; a non-empty
// ifMatch must match its etag.
func (d *Directory) DeleteIndividual(ctx context.Context, id, ifMatch string) error {
	return del(ctx, d, individualOps, id, ifMatch)
}

// DeleteGroup is DeleteIndividual for groups.
func (d *Directory) DeleteGroup(ctx context.Context, id, ifMatch string) error {
	if err := del(ctx, d, groupOps, id, ifMatch); err != nil {
		return err
	}
	return d.reloadGroups(ctx)
}

func get[T any](ctx context.Context, d *Directory, o kindOps[T], id string) (*T, Source, error) {
	if x := o.inCat(d.cfg.Catalog.Set(d.scope), id); x != nil {
		return x, SourceCatalog, nil
	}
	var out *T
	err := d.cfg.Store.View(ctx, func(tx store.Tx) error {
		e, err := tx.Enrollment(d.scope, o.kind, o.key(id))
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%s %q: %w", o.name, id, ErrNotFound)
		} else if err != nil {
			return err
		}
		out, err = o.decode(d, e)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	return out, SourceAPI, nil
}

// readOnly refuses IDs the catalog declares.
func readOnly[T any](d *Directory, o kindOps[T], id string) error {
	if o.inCat(d.cfg.Catalog.Set(d.scope), id) != nil {
		file := ""
		if f := d.cfg.Catalog.Current(); f != nil {
			file = f.Path
		}
		return &ReadOnlyError{File: file, Kind: o.name, ID: id}
	}
	return nil
}

// prepared is an entry validated outside the transaction.
type prepared[T any] struct {
	x *T
	// keysGiven is false when the caller sent a symmetric-key attestation
	// without keys: a new entry gets generated keys (as DPS does), an update
	// keeps the stored ones (GET never shows them, so get-modify-put must not
	// lose them).
	keysGiven bool
}

func prepare[T any](o kindOps[T], in *T) (prepared[T], error) {
	// Work on a copy: the caller's object is left as it was, and the symmetric
	// key struct is not shared.
	x := new(T)
	*x = *in
	c := o.common(x)
	p := prepared[T]{x: x, keysGiven: true}
	if sk := c.Attestation.SymmetricKey; c.Attestation.Type == enrollment.AttestationSymmetricKey {
		k := enrollment.SymmetricKeyAttestation{}
		if sk != nil {
			k.PrimaryKey, k.SecondaryKey = sk.PrimaryKey, sk.SecondaryKey
		}
		if k.PrimaryKey == "" && k.SecondaryKey == "" {
			p.keysGiven = false
			k.PrimaryKey, k.SecondaryKey = newKey(), newKey()
		}
		c.Attestation.SymmetricKey = &k
	}
	if err := o.validate(x); err != nil {
		return p, &InvalidError{Err: err}
	}
	return p, nil
}

// apply writes one prepared entry in tx under the mode's etag rules.
func apply[T any](tx store.Tx, d *Directory, o kindOps[T], p prepared[T], ifMatch string, mustExist, mustNotExist bool, now time.Time) (*T, bool, error) {
	id := o.id(p.x)
	k := o.key(id)
	cur, err := tx.Enrollment(d.scope, o.kind, k)
	exists := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, false, err
	}
	switch {
	case !exists && (mustExist || (ifMatch != "" && ifMatch != "*")):
		return nil, false, fmt.Errorf("%s %q does not exist: %w", o.name, id, ErrNotFound)
	case exists && mustNotExist:
		return nil, false, fmt.Errorf("%s %q: %w (send If-Match with its etag, or *, to replace it)", o.name, id, ErrExists)
	case exists && ifMatch != "" && !ETagMatches(ifMatch, cur.ETag):
		return nil, false, fmt.Errorf("%s %q has etag %s, not %s: %w", o.name, id, cur.ETag, ifMatch, ErrPrecondition)
	}
	x := new(T)
	*x = *p.x
	c := o.common(x)
	if c.Attestation.SymmetricKey != nil {
		k := *c.Attestation.SymmetricKey
		c.Attestation.SymmetricKey = &k
	}
	created := now
	if exists {
		old, err := o.decode(d, cur)
		if err != nil {
			return nil, false, err
		}
		oc := o.common(old)
		if oc.CreatedDateTimeUTC != nil {
			created = *oc.CreatedDateTimeUTC
		}
		if !p.keysGiven && oc.Attestation.Type == enrollment.AttestationSymmetricKey && oc.Attestation.SymmetricKey != nil {
			c.Attestation.SymmetricKey.PrimaryKey = oc.Attestation.SymmetricKey.PrimaryKey
			c.Attestation.SymmetricKey.SecondaryKey = oc.Attestation.SymmetricKey.SecondaryKey
		}
	}
	c.ETag = NewETag()
	c.CreatedDateTimeUTC, c.LastUpdatedDateTimeUTC = &created, &now
	data, err := d.encode(o.kind, k, x, c)
	if err != nil {
		return nil, false, err
	}
	if err := tx.PutEnrollment(&store.Enrollment{Scope: d.scope, Kind: o.kind, ID: k, ETag: c.ETag, Data: data}); err != nil {
		return nil, false, err
	}
	return x, !exists, nil
}

func put[T any](ctx context.Context, d *Directory, o kindOps[T], in *T, ifMatch string) (*T, bool, error) {
	p, err := prepare(o, in)
	if err != nil {
		return nil, false, err
	}
	if err := readOnly(d, o, o.id(p.x)); err != nil {
		return nil, false, err
	}
	now := d.cfg.Now().UTC()
	var out *T
	var created bool
	// The closure may run more than once (group commit): it recomputes all.
	err = d.cfg.Store.Update(ctx, func(tx store.Tx) error {
		var err error
		out, created, err = apply(tx, d, o, p, ifMatch, false, ifMatch == "", now)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	return out, created, nil
}

func del[T any](ctx context.Context, d *Directory, o kindOps[T], id, ifMatch string) error {
	if err := readOnly(d, o, id); err != nil {
		return err
	}
	return d.cfg.Store.Update(ctx, func(tx store.Tx) error { return remove(tx, d, o, id, ifMatch) })
}

func remove[T any](tx store.Tx, d *Directory, o kindOps[T], id, ifMatch string) error {
	cur, err := tx.Enrollment(d.scope, o.kind, o.key(id))
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s %q: %w", o.name, id, ErrNotFound)
	} else if err != nil {
		return err
	}
	if ifMatch != "" && !ETagMatches(ifMatch, cur.ETag) {
		return fmt.Errorf("%s %q has etag %s, not %s: %w", o.name, id, cur.ETag, ifMatch, ErrPrecondition)
	}
	return tx.DeleteEnrollment(d.scope, o.kind, o.key(id))
}

// Bulk modes (protocol.md §6.4), canonical spelling.
const (
	ModeCreate            = "create"
	ModeUpdate            = "update"
	ModeUpdateIfMatchETag = "updateIfMatchETag"
	ModeDelete            = "delete"
)

// ParseMode accepts a bulk mode in any case (the Node SDK's typings spell it
// updateIfMatchEtag).
func ParseMode(s string) (string, bool) {
	for _, m := range []string{ModeCreate, ModeUpdate, ModeUpdateIfMatchETag, ModeDelete} {
		if strings.EqualFold(s, m) {
			return m, true
		}
	}
	return "", false
}

// ItemError is the failure of one item of a bulk operation.
type ItemError struct {
	Index int
	ID    string
	Err   error
}

// BulkIndividuals runs a bulk operation; items that fail are reported and the
// others are written, in one transaction.
func (d *Directory) BulkIndividuals(ctx context.Context, mode string, items []*enrollment.Individual) ([]ItemError, error) {
	return bulk(ctx, d, individualOps, mode, items)
}

// BulkGroups is BulkIndividuals for groups.
func (d *Directory) BulkGroups(ctx context.Context, mode string, items []*enrollment.Group) ([]ItemError, error) {
	errs, err := bulk(ctx, d, groupOps, mode, items)
	if err == nil {
		err = d.reloadGroups(ctx)
	}
	return errs, err
}

func bulk[T any](ctx context.Context, d *Directory, o kindOps[T], mode string, items []*T) ([]ItemError, error) {
	var pre []ItemError
	ready := make([]prepared[T], len(items))
	ok := make([]bool, len(items))
	seen := make(map[string]int, len(items))
	for i, x := range items {
		if x == nil {
			pre = append(pre, ItemError{i, "", &InvalidError{Err: errors.New("null item")}})
			continue
		}
		id := o.id(x)
		if j, dup := seen[o.key(id)]; dup {
			pre = append(pre, ItemError{i, id, &InvalidError{Err: fmt.Errorf("%s %q appears twice in the request (also item %d)", o.name, id, j)}})
			continue
		}
		seen[o.key(id)] = i
		if err := readOnly(d, o, id); err != nil {
			pre = append(pre, ItemError{i, id, err})
			continue
		}
		if mode == ModeDelete {
			if err := dpsapi.ValidateRegistrationID(id); err != nil {
				pre = append(pre, ItemError{i, id, &InvalidError{Err: err}})
				continue
			}
			ready[i], ok[i] = prepared[T]{x: x}, true
			continue
		}
		p, err := prepare(o, x)
		if err != nil {
			pre = append(pre, ItemError{i, id, err})
			continue
		}
		if mode == ModeUpdateIfMatchETag && o.common(x).ETag == "" {
			pre = append(pre, ItemError{i, id, fmt.Errorf("%s %q carries no etag (mode updateIfMatchETag): %w", o.name, id, ErrPrecondition)})
			continue
		}
		ready[i], ok[i] = p, true
	}
	now := d.cfg.Now().UTC()
	var errs []ItemError
	err := d.cfg.Store.Update(ctx, func(tx store.Tx) error {
		errs = slices.Clone(pre)
		for i, p := range ready {
			if !ok[i] {
				continue
			}
			id := o.id(p.x)
			var err error
			switch mode {
			case ModeCreate:
				_, _, err = apply(tx, d, o, p, "", false, true, now)
			case ModeUpdate:
				_, _, err = apply(tx, d, o, p, "", false, false, now)
			case ModeUpdateIfMatchETag:
				_, _, err = apply(tx, d, o, p, o.common(items[i]).ETag, true, false, now)
			case ModeDelete:
				err = remove(tx, d, o, id, o.common(items[i]).ETag)
			default:
				return fmt.Errorf("unknown bulk mode %q", mode)
			}
			if err != nil {
				if !isItemError(err) {
					return err
				}
				errs = append(errs, ItemError{i, id, err})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(errs, func(a, b int) bool { return errs[a].Index < errs[b].Index })
	return errs, nil
}

func isItemError(err error) bool {
	var inv *InvalidError
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) || errors.Is(err, ErrPrecondition) || errors.As(err, &inv)
}

// Filter selects sources in a listing.
type Filter int

// Filters.
const (
	All Filter = iota
	OnlyCatalog
	OnlyAPI
)

// Page is one page of a listing; Next is the ID to continue after, "" on the
// last page.
type Page[T any] struct {
	Items   []*T
	Sources []Source
	Next    string
}

// Individuals lists individual enrollments of both sources in ID order
// (normalized IDs), after the given one, at most limit.
func (d *Directory) Individuals(ctx context.Context, after string, limit int, f Filter) (*Page[enrollment.Individual], error) {
	return list(ctx, d, individualOps, after, limit, f)
}

// Groups lists enrollment groups like Individuals.
func (d *Directory) Groups(ctx context.Context, after string, limit int, f Filter) (*Page[enrollment.Group], error) {
	return list(ctx, d, groupOps, after, limit, f)
}

// sortedCatalog is the catalog's entries in key order, computed once per file.
type sortedCatalog struct {
	file   *catalog.File
	ind    []*enrollment.Individual
	groups []*enrollment.Group
}

func (d *Directory) sortedCatalog() *sortedCatalog {
	f := d.cfg.Catalog.Current()
	if cur := d.sorted.Load(); cur != nil && cur.file == f {
		return cur
	}
	s := &sortedCatalog{file: f}
	if f != nil {
		s.ind = slices.Clone(f.Individuals)
		slices.SortFunc(s.ind, func(a, b *enrollment.Individual) int {
			return strings.Compare(individualOps.key(a.RegistrationID), individualOps.key(b.RegistrationID))
		})
		s.groups = slices.Clone(f.Groups)
		slices.SortFunc(s.groups, func(a, b *enrollment.Group) int {
			return strings.Compare(groupOps.key(a.EnrollmentGroupID), groupOps.key(b.EnrollmentGroupID))
		})
	}
	d.sorted.Store(s)
	return s
}

func list[T any](ctx context.Context, d *Directory, o kindOps[T], after string, limit int, f Filter) (*Page[T], error) {
	if limit <= 0 {
		return nil, errors.New("limit must be positive")
	}
	after = o.key(after)
	var cat []*T
	if f != OnlyAPI {
		cat = o.sorted(d.sortedCatalog())
		i := sort.Search(len(cat), func(i int) bool { return o.key(o.id(cat[i])) > after })
		cat = cat[i:]
	}
	var buf []*store.Enrollment
	storeAfter, storeDone := after, f == OnlyCatalog
	chunk := min(limit+1, 1000)
	fill := func() error {
		if len(buf) > 0 || storeDone {
			return nil
		}
		err := d.cfg.Store.View(ctx, func(tx store.Tx) error {
			var err error
			buf, err = tx.Enrollments(d.scope, o.kind, storeAfter, chunk)
			return err
		})
		if err != nil {
			return err
		}
		if len(buf) < chunk {
			storeDone = true
		}
		if len(buf) > 0 {
			storeAfter = buf[len(buf)-1].ID
		}
		return nil
	}
	page := &Page[T]{}
	for len(page.Items) <= limit { // one more than asked, to know whether there is a next page
		if err := fill(); err != nil {
			return nil, err
		}
		var ck, sk string
		if len(cat) > 0 {
			ck = o.key(o.id(cat[0]))
		}
		if len(buf) > 0 {
			sk = buf[0].ID
		}
		switch {
		case ck == "" && sk == "":
			return page, nil
		case sk == "" || (ck != "" && ck <= sk):
			page.Items, page.Sources = append(page.Items, cat[0]), append(page.Sources, SourceCatalog)
			cat = cat[1:]
			if ck == sk { // the catalog shadows the store's entry
				buf = buf[1:]
			}
		default:
			x, err := o.decode(d, buf[0])
			if err != nil {
				return nil, err
			}
			page.Items, page.Sources = append(page.Items, x), append(page.Sources, SourceAPI)
			buf = buf[1:]
		}
	}
	page.Items, page.Sources = page.Items[:limit], page.Sources[:limit]
	page.Next = o.key(o.id(page.Items[limit-1]))
	return page, nil
}

// CatalogETag is the etag shown for a catalog entry, which has none of its
// own: a digest of its content, so it changes when the file's entry does.
func CatalogETag(v any) string {
	data, _ := json.Marshal(v)
	sum := sha256.Sum256(data)
	return `"catalog-` + hex.EncodeToString(sum[:12]) + `"`
}
