package directory_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/catalog"
	"github.com/edgeprov/edgeprov/daemon/directory"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/secrets"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/daemon/store/bolt"
)

const scope = "0ne00D1EC70"

var (
	ctx  = context.Background()
	b64  = base64.StdEncoding.EncodeToString
	key1 = b64([]byte("directory test key one, 32 bytes"))
	key2 = b64([]byte("directory test key two, 32 bytes"))
)

const catalogYAML = `version: 1
enrollments:
  - registrationId: cat-dev
    attestation: {type: symmetricKey, symmetricKey: {primaryKey: %[1]s}}
  - registrationId: both
    attestation: {type: symmetricKey, symmetricKey: {primaryKey: %[1]s}}
enrollmentGroups:
  - enrollmentGroupId: cat-grp
    registrationIdPrefixes: [cg-]
    attestation: {type: symmetricKey, symmetricKey: {primaryKey: %[1]s}}
`

func newDir(t testing.TB) (*directory.Directory, store.Store, *catalog.Source) {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "edgeprov.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f, err := catalog.Parse(filepath.Join(dir, "enrollments.yaml"), []byte(fmt.Sprintf(catalogYAML, key1)))
	if err != nil {
		t.Fatal(err)
	}
	src := catalog.NewSource(scope, f)
	d, err := directory.New(ctx, directory.Config{Scope: scope, Catalog: src, Store: st, Sealer: testBox(t)})
	if err != nil {
		t.Fatal(err)
	}
	return d, st, src
}

func testBox(t testing.TB) *secrets.Box {
	box, err := secrets.New([]byte("directory test data key, 32 byte"))
	if err != nil {
		t.Fatal(err)
	}
	return box
}

func sym(id, primary string) *enrollment.Individual {
	e := &enrollment.Individual{RegistrationID: id, Common: enrollment.Common{Attestation: enrollment.Attestation{Type: "symmetricKey",
		SymmetricKey: &enrollment.SymmetricKeyAttestation{}}}}
	e.Attestation.SymmetricKey.PrimaryKey = primary
	return e
}

func TestPutGetDeleteWithETags(t *testing.T) {
	d, _, _ := newDir(t)
	created, isNew, err := d.PutIndividual(ctx, sym("Dev-1", key1), "")
	if err != nil || !isNew || created.ETag == "" || !strings.HasPrefix(created.ETag, `"`) || created.CreatedDateTimeUTC == nil {
		t.Fatalf("create = %+v, %v, %v", created, isNew, err)
	}
	tests := []struct {
		name    string
		ifMatch string
		wantErr error
	}{
		{"fail/exists-without-if-match", "", directory.ErrExists},
		{"fail/stale-etag", `"00000000-0000-4000-8000-000000000000"`, directory.ErrPrecondition},
		{"ok/matching-etag", created.ETag, nil},
		{"ok/star", "*", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := sym("dev-1", "")
			e.ProvisioningStatus = "disabled"
			got, isNew, err := d.PutIndividual(ctx, e, tt.ifMatch)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil && (isNew || got.ETag == created.ETag || !got.CreatedDateTimeUTC.Equal(*created.CreatedDateTimeUTC)) {
				t.Fatalf("update = %+v new=%v", got, isNew)
			}
		})
	}
	got, src, err := d.Individual(ctx, "DEV-1")
	if err != nil || src != directory.SourceAPI || got.ProvisioningStatus != "disabled" {
		t.Fatalf("get = %+v %s %v", got, src, err)
	}
	// An update without keys kept the ones given at creation.
	if p, _ := got.Attestation.SymmetricKey.Keys(); b64(p) != key1 {
		t.Fatalf("keys were not kept across an update without keys")
	}
	if err := d.DeleteIndividual(ctx, "dev-1", `"nope"`); !errors.Is(err, directory.ErrPrecondition) {
		t.Fatalf("delete with wrong etag: %v", err)
	}
	if err := d.DeleteIndividual(ctx, "dev-1", got.ETag); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Individual(ctx, "dev-1"); !errors.Is(err, directory.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if err := d.DeleteIndividual(ctx, "dev-1", ""); !errors.Is(err, directory.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestGeneratesKeysAndRefusesInvalid(t *testing.T) {
	d, _, _ := newDir(t)
	got, _, err := d.PutIndividual(ctx, sym("gen-1", ""), "")
	if err != nil {
		t.Fatal(err)
	}
	p, s := got.Attestation.SymmetricKey.Keys()
	if len(p) != 64 || len(s) != 64 {
		t.Fatalf("generated keys of %d and %d bytes, want 64", len(p), len(s))
	}
	var inv *directory.InvalidError
	if _, _, err := d.PutIndividual(ctx, sym("bad!", key1), ""); !errors.As(err, &inv) {
		t.Fatalf("invalid ID: %v", err)
	}
	if _, _, err := d.PutIndividual(ctx, sym("bad-key", "not base64"), ""); !errors.As(err, &inv) || !strings.Contains(err.Error(), "primaryKey") {
		t.Fatalf("invalid key: %v", err)
	}
}

func TestCatalogEntriesAreReadOnly(t *testing.T) {
	d, st, _ := newDir(t)
	var ro *directory.ReadOnlyError
	if _, _, err := d.PutIndividual(ctx, sym("CAT-DEV", key2), "*"); !errors.As(err, &ro) || !strings.Contains(err.Error(), "enrollments.yaml") {
		t.Fatalf("put over a catalog entry: %v", err)
	}
	if err := d.DeleteGroup(ctx, "cat-grp", ""); !errors.As(err, &ro) {
		t.Fatalf("delete of a catalog group: %v", err)
	}
	errs, err := d.BulkIndividuals(ctx, directory.ModeUpdate, []*enrollment.Individual{sym("cat-dev", key2), sym("fine-1", key2)})
	if err != nil || len(errs) != 1 || errs[0].Index != 0 || !errors.As(errs[0].Err, &ro) {
		t.Fatalf("bulk over a catalog entry: %+v %v", errs, err)
	}
	e, src, err := d.Individual(ctx, "cat-dev")
	if err != nil || src != directory.SourceCatalog || e.Attestation.SymmetricKey.PrimaryKey != key1 {
		t.Fatalf("catalog entry changed: %+v %s %v", e, src, err)
	}
	// Nothing of the refused item reached the store.
	st.View(ctx, func(tx store.Tx) error {
		if _, err := tx.Enrollment(scope, store.KindIndividual, "cat-dev"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("catalog entry written to the store: %v", err)
		}
		return nil
	})
}

func TestLookupSeesBothSources(t *testing.T) {
	d, st, _ := newDir(t)
	if _, _, err := d.PutIndividual(ctx, sym("api-dev", key2), ""); err != nil {
		t.Fatal(err)
	}
	g := &enrollment.Group{EnrollmentGroupID: "api-grp", RegistrationIDPrefixes: []string{"ag-"}, Common: sym("x", key2).Common}
	if _, _, err := d.PutGroup(ctx, g, ""); err != nil {
		t.Fatal(err)
	}
	// A store entry the catalog shadows (written behind the Directory's back,
	// as if the catalog gained the ID later).
	st.Update(ctx, func(tx store.Tx) error {
		return tx.PutEnrollment(&store.Enrollment{Scope: scope, Kind: store.KindIndividual, ID: "both", ETag: `"x"`,
			Data: []byte(`{"enrollment":{"registrationId":"both","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"` + key2 + `"}}}}`)})
	})
	tests := []struct {
		name, regID, wantKey, wantGroup string
	}{
		{"ok/api-individual", "API-DEV", key2, ""},
		{"ok/catalog-individual", "cat-dev", key1, ""},
		{"ok/catalog-shadows-store", "both", key1, ""},
		{"ok/api-group-by-prefix", "ag-0001", "", "api-grp"},
		{"ok/catalog-group-by-prefix", "cg-0001", "", "cat-grp"},
		{"ok/unknown", "stranger", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := d.Lookup(ctx, strings.ToLower(scope), tt.regID)
			if err != nil {
				t.Fatal(err)
			}
			ind := l.Individual(tt.regID)
			if (ind == nil) != (tt.wantKey == "") || (ind != nil && ind.Attestation.SymmetricKey.PrimaryKey != tt.wantKey) {
				t.Fatalf("individual = %+v", ind)
			}
			c := l.SymmetricKeyCandidates(tt.regID)
			if tt.wantGroup == "" && len(c) != 0 || tt.wantGroup != "" && (len(c) != 1 || c[0].EnrollmentGroupID != tt.wantGroup) {
				t.Fatalf("candidates = %v", c)
			}
		})
	}
	if l, err := d.Lookup(ctx, "0ne00000000", "api-dev"); err != nil || l != nil {
		t.Fatalf("another scope: %v %v", l, err)
	}
	// Deleting the group removes it from the index at once.
	if err := d.DeleteGroup(ctx, "api-grp", ""); err != nil {
		t.Fatal(err)
	}
	l, _ := d.Lookup(ctx, scope, "ag-0001")
	if c := l.SymmetricKeyCandidates("ag-0001"); len(c) != 0 {
		t.Fatalf("deleted group still a candidate: %v", c)
	}
}

func TestListPagesMergeSources(t *testing.T) {
	d, st, _ := newDir(t)
	for _, id := range []string{"a-1", "c-1", "z-9"} {
		if _, _, err := d.PutIndividual(ctx, sym(id, key2), ""); err != nil {
			t.Fatal(err)
		}
	}
	st.Update(ctx, func(tx store.Tx) error { // shadowed by the catalog: listed once
		return tx.PutEnrollment(&store.Enrollment{Scope: scope, Kind: store.KindIndividual, ID: "both", ETag: `"x"`,
			Data: []byte(`{"enrollment":{"registrationId":"both","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"` + key2 + `"}}}}`)})
	})
	want := []string{"a-1", "both", "c-1", "cat-dev", "z-9"}
	for _, size := range []int{1, 2, 3, 10} {
		t.Run(fmt.Sprint("ok/page-size-", size), func(t *testing.T) {
			var got []string
			var srcs []directory.Source
			after := ""
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatal("paging does not end")
				}
				p, err := d.Individuals(ctx, after, size, directory.All)
				if err != nil {
					t.Fatal(err)
				}
				for i, e := range p.Items {
					got, srcs = append(got, e.RegistrationID), append(srcs, p.Sources[i])
				}
				if p.Next == "" {
					break
				}
				after = p.Next
			}
			if fmt.Sprint(got) != fmt.Sprint(want) || srcs[1] != directory.SourceCatalog || srcs[0] != directory.SourceAPI {
				t.Fatalf("listed %v %v, want %v", got, srcs, want)
			}
		})
	}
	p, err := d.Individuals(ctx, "", 100, directory.OnlyAPI)
	if err != nil || len(p.Items) != 4 || p.Next != "" {
		t.Fatalf("API-only listing: %d items, next %q, %v", len(p.Items), p.Next, err)
	}
}

func TestBulkModes(t *testing.T) {
	d, _, _ := newDir(t)
	errs, err := d.BulkIndividuals(ctx, directory.ModeCreate, []*enrollment.Individual{sym("b-1", key1), sym("b-2", ""), sym("b-1", key1), sym("bad!", key1)})
	if err != nil || len(errs) != 2 || errs[0].Index != 2 || errs[1].Index != 3 {
		t.Fatalf("create: %+v %v", errs, err)
	}
	errs, _ = d.BulkIndividuals(ctx, directory.ModeCreate, []*enrollment.Individual{sym("b-1", key1), sym("b-3", key1)})
	if len(errs) != 1 || !errors.Is(errs[0].Err, directory.ErrExists) {
		t.Fatalf("create of an existing one: %+v", errs)
	}
	cur, _, _ := d.Individual(ctx, "b-1")
	stale := sym("b-1", key2)
	stale.ETag = `"stale"`
	fresh := sym("b-2", key2)
	fresh.ETag = "*"
	errs, _ = d.BulkIndividuals(ctx, directory.ModeUpdateIfMatchETag, []*enrollment.Individual{stale, fresh, sym("b-3", key2)})
	if len(errs) != 2 || !errors.Is(errs[0].Err, directory.ErrPrecondition) || errs[1].Index != 2 {
		t.Fatalf("updateIfMatchETag: %+v", errs)
	}
	if after, _, _ := d.Individual(ctx, "b-1"); after.ETag != cur.ETag {
		t.Fatal("a refused item was written")
	}
	errs, _ = d.BulkIndividuals(ctx, directory.ModeUpdate, []*enrollment.Individual{sym("b-1", key2), sym("b-4", key2)})
	if len(errs) != 0 {
		t.Fatalf("update: %+v", errs)
	}
	errs, _ = d.BulkIndividuals(ctx, directory.ModeDelete, []*enrollment.Individual{{RegistrationID: "b-1"}, {RegistrationID: "b-9"}})
	if len(errs) != 1 || errs[0].ID != "b-9" || !errors.Is(errs[0].Err, directory.ErrNotFound) {
		t.Fatalf("delete: %+v", errs)
	}
	p, _ := d.Individuals(ctx, "", 100, directory.OnlyAPI)
	var ids []string
	for _, e := range p.Items {
		ids = append(ids, e.RegistrationID)
	}
	if fmt.Sprint(ids) != "[b-2 b-3 b-4]" {
		t.Fatalf("after bulk: %v", ids)
	}
	if m, ok := directory.ParseMode("UPDATEIFMATCHETAG"); !ok || m != directory.ModeUpdateIfMatchETag {
		t.Fatal("mode not parsed case-insensitively")
	}
}

func TestETagMatches(t *testing.T) {
	for _, tt := range []struct {
		ifMatch, etag string
		want          bool
	}{
		{`"a"`, `"a"`, true}, {`a`, `"a"`, true}, {`W/"a"`, `"a"`, true}, {`*`, `"a"`, true},
		{`"b"`, `"a"`, false}, {`""`, `""`, false}, {` `, `"a"`, false},
	} {
		if got := directory.ETagMatches(tt.ifMatch, tt.etag); got != tt.want {
			t.Errorf("ETagMatches(%q, %q) = %v", tt.ifMatch, tt.etag, got)
		}
	}
}

// Two replicas on one store: a group written through one is found by the
// other's lookups within GroupsRefresh.
func TestGroupsOfAnotherReplica(t *testing.T) {
	d1, st, src := newDir(t)
	d2, err := directory.New(ctx, directory.Config{Scope: scope, Catalog: src, Store: st, GroupsRefresh: 50 * time.Millisecond, Sealer: testBox(t)})
	if err != nil {
		t.Fatal(err)
	}
	g := &enrollment.Group{EnrollmentGroupID: "remote", RegistrationIDPrefixes: []string{"rm-"}, Common: sym("x", key2).Common}
	if _, _, err := d1.PutGroup(ctx, g, ""); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := d2.Lookup(ctx, scope, "rm-1")
		if err != nil {
			t.Fatal(err)
		}
		if c := l.SymmetricKeyCandidates("rm-1"); len(c) == 1 && c[0].EnrollmentGroupID == "remote" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the other replica never saw the group")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Keys are sealed at rest: the store never holds them in the clear, a wrong
// data key cannot read them, and sealed keys moved to another entry do not open.
func TestKeysSealedAtRest(t *testing.T) {
	d, st, src := newDir(t)
	if _, _, err := d.PutIndividual(ctx, sym("sealed-1", key2), ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.PutIndividual(ctx, sym("sealed-2", key1), ""); err != nil {
		t.Fatal(err)
	}
	var raw1, raw2 *store.Enrollment
	st.View(ctx, func(tx store.Tx) error {
		raw1, _ = tx.Enrollment(scope, store.KindIndividual, "sealed-1")
		raw2, _ = tx.Enrollment(scope, store.KindIndividual, "sealed-2")
		return nil
	})
	if strings.Contains(string(raw1.Data), key2) || !strings.Contains(string(raw1.Data), "sealedKeys") {
		t.Fatalf("stored in the clear: %s", raw1.Data)
	}
	if e, _, err := d.Individual(ctx, "sealed-1"); err != nil || e.Attestation.SymmetricKey.PrimaryKey != key2 {
		t.Fatalf("read back: %+v %v", e, err)
	}
	other, err := secrets.New([]byte("another data key, thirty-two by."))
	if err != nil {
		t.Fatal(err)
	}
	d2, err := directory.New(ctx, directory.Config{Scope: scope, Catalog: src, Store: st, Sealer: other})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d2.Individual(ctx, "sealed-1"); err == nil {
		t.Fatal("read with another data key")
	}
	// Swap the sealed keys of the two entries: neither opens.
	st.Update(ctx, func(tx store.Tx) error {
		raw2.Data, raw1.Data = raw1.Data, raw2.Data
		tx.PutEnrollment(raw1)
		return tx.PutEnrollment(raw2)
	})
	if _, _, err := d.Individual(ctx, "sealed-1"); err == nil {
		t.Fatal("sealed keys of another entry opened")
	}
}
