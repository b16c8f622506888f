// Package storetest is the conformance suite every store.Store passes.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/store"
)

// Run runs the suite; newStore returns an empty store, closed by the suite.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"instance", testInstance},
		{"operations", testOperations},
		{"records", testRecords},
		{"records/scoped", testRecordsScoped},
		{"identities", testIdentities},
		{"ca-certificates", testCACertificates},
		{"challenges", testChallenges},
		{"challenges/answered-once", testChallengeAnsweredOnce},
		{"enrollments", testEnrollments},
		{"enrollments/kinds-and-scopes", testEnrollmentsIsolated},
		{"update/rollback", testRollback},
		{"view/refuses-writes", testViewRefusesWrites},
		{"update/concurrent", testConcurrent},
		{"prune", testPrune},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			t.Cleanup(func() { s.Close() })
			tt.fn(t, s)
		})
	}
}

var ctx = context.Background()

func testInstance(t *testing.T, s store.Store) {
	if _, err := s.Instance(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Instance on empty store: %v, want ErrNotFound", err)
	}
	inst := &store.Instance{IDScope: "0ne00ABCDEF", CreatedAt: time.Now().UTC().Truncate(time.Second)}
	if err := s.CreateInstance(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateInstance(ctx, &store.Instance{IDScope: "0ne00000000"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second CreateInstance: %v, want ErrConflict", err)
	}
	got, err := s.Instance(ctx)
	if err != nil || got.IDScope != inst.IDScope || !got.CreatedAt.Equal(inst.CreatedAt) {
		t.Fatalf("Instance = %+v, %v; want %+v", got, err, inst)
	}
}

func testOperations(t *testing.T, s store.Store) {
	now := time.Now().UTC()
	op := &store.Operation{Scope: "0ne00ABCDEF", ID: "4.abc.1", RegistrationID: "dev-1", Status: dpsapi.StatusAssigned,
		CreatedAt: now, UpdatedAt: now, Attestation: "symmetricKey",
		Result: &dpsapi.DeviceRegistrationResult{RegistrationID: "dev-1", Status: dpsapi.StatusAssigned, AssignedHub: "hub-a", DeviceID: "dev-1"}}
	mustUpdate(t, s, func(tx store.Tx) error { return tx.PutOperation(op) })
	var got *store.Operation
	mustView(t, s, func(tx store.Tx) (err error) { got, err = tx.Operation(op.Scope, op.ID); return err })
	if got.RegistrationID != "dev-1" || got.Result == nil || got.Result.AssignedHub != "hub-a" {
		t.Fatalf("Operation = %+v", got)
	}
	mustView(t, s, func(tx store.Tx) error {
		if _, err := tx.Operation("0ne00000000", op.ID); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("operation of another scope: %v, want ErrNotFound", err)
		}
		return nil
	})
}

func record(scope, id string) *store.Record {
	now := time.Now().UTC()
	return &store.Record{Scope: scope, RegistrationID: id, DeviceID: id, AssignedHub: "hub-a", InitialHub: "hub-a",
		Status: dpsapi.StatusAssigned, Substatus: dpsapi.SubstatusInitialAssignment, Attestation: "symmetricKey",
		CreatedAt: now, UpdatedAt: now, ETag: "etag-" + id, Payload: []byte(`{"a":1}`)}
}

func testRecords(t *testing.T, s store.Store) {
	const scope = "0ne00ABCDEF"
	for _, id := range []string{"dev-3", "dev-1", "dev-2"} {
		r := record(scope, id)
		mustUpdate(t, s, func(tx store.Tx) error { return tx.PutRecord(r) })
	}
	mustView(t, s, func(tx store.Tx) error {
		r, err := tx.Record(scope, "dev-2")
		if err != nil || r.DeviceID != "dev-2" || string(r.Payload) != `{"a":1}` {
			return fmt.Errorf("record = %+v, %v", r, err)
		}
		all, err := tx.Records(scope, "", 0)
		if err != nil || len(all) != 3 || all[0].RegistrationID != "dev-1" || all[2].RegistrationID != "dev-3" {
			return fmt.Errorf("records = %v, %v; want dev-1..3 in order", ids(all), err)
		}
		page, err := tx.Records(scope, "dev-1", 1)
		if err != nil || len(page) != 1 || page[0].RegistrationID != "dev-2" {
			return fmt.Errorf("records after dev-1 limit 1 = %v, %v", ids(page), err)
		}
		return nil
	})
	mustUpdate(t, s, func(tx store.Tx) error {
		if err := tx.DeleteRecord(scope, "dev-1", "wrong"); !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("delete with wrong etag: %v, want ErrConflict", err)
		}
		if err := tx.DeleteRecord(scope, "dev-1", "etag-dev-1"); err != nil {
			return err
		}
		if err := tx.DeleteRecord(scope, "dev-2", ""); err != nil {
			return err
		}
		if err := tx.DeleteRecord(scope, "dev-2", ""); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("second delete: %v, want ErrNotFound", err)
		}
		return nil
	})
	mustView(t, s, func(tx store.Tx) error {
		all, err := tx.Records(scope, "", 0)
		if err != nil || len(all) != 1 {
			return fmt.Errorf("after deletes Records = %v, %v", ids(all), err)
		}
		return nil
	})
}

func testRecordsScoped(t *testing.T, s store.Store) {
	mustUpdate(t, s, func(tx store.Tx) error {
		if err := tx.PutRecord(record("0ne00000001", "dev")); err != nil {
			return err
		}
		return tx.PutRecord(record("0ne00000002", "dev"))
	})
	mustView(t, s, func(tx store.Tx) error {
		for _, sc := range []string{"0ne00000001", "0ne00000002"} {
			all, err := tx.Records(sc, "", 0)
			if err != nil || len(all) != 1 || all[0].Scope != sc {
				return fmt.Errorf("records(%s) = %v, %v", sc, ids(all), err)
			}
		}
		return nil
	})
}

func testIdentities(t *testing.T, s store.Store) {
	now := time.Now().UTC()
	for _, d := range []string{"b", "a"} {
		id := &store.Identity{Hub: "hub-a", DeviceID: d, AuthType: "sas", Status: "enabled", ETag: "1", CreatedAt: now, UpdatedAt: now}
		mustUpdate(t, s, func(tx store.Tx) error { return tx.PutIdentity(id) })
	}
	mustUpdate(t, s, func(tx store.Tx) error {
		return tx.PutIdentity(&store.Identity{Hub: "hub-b", DeviceID: "a", AuthType: "sas", Status: "enabled", SealedKey: []byte{0, 1, 0xff}})
	})
	mustView(t, s, func(tx store.Tx) error {
		id, err := tx.Identity("hub-b", "a")
		if err != nil || string(id.SealedKey) != "\x00\x01\xff" {
			return fmt.Errorf("sealed key round trip: %+v, %v", id, err)
		}
		return nil
	})
	mustView(t, s, func(tx store.Tx) error {
		all, err := tx.Identities("hub-a", "", 0)
		if err != nil || len(all) != 2 || all[0].DeviceID != "a" {
			return fmt.Errorf("identities(hub-a) = %d, %v", len(all), err)
		}
		return nil
	})
	mustUpdate(t, s, func(tx store.Tx) error {
		if err := tx.DeleteIdentity("hub-a", "a"); err != nil {
			return err
		}
		if err := tx.DeleteIdentity("hub-a", "a"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("second delete: %v", err)
		}
		return nil
	})
	mustView(t, s, func(tx store.Tx) error {
		if _, err := tx.Identity("hub-b", "a"); err != nil {
			return fmt.Errorf("other hub's identity gone: %v", err)
		}
		return nil
	})
}

func testCACertificates(t *testing.T, s store.Store) {
	now := time.Now().UTC().Truncate(time.Second)
	const scope = "0ne00ABCDEF"
	for _, n := range []string{"Zeta-CA", "alpha.ca"} {
		c := &store.CACertificate{Scope: scope, Name: n, Certificate: []byte{0x30, 1, 2}, ETag: "1", CreatedAt: now, UpdatedAt: now}
		mustUpdate(t, s, func(tx store.Tx) error { return tx.PutCACertificate(c) })
	}
	mustUpdate(t, s, func(tx store.Tx) error {
		return tx.PutCACertificate(&store.CACertificate{Scope: "0ne00000001", Name: "other-scope", Certificate: []byte{1}})
	})
	mustUpdate(t, s, func(tx store.Tx) error {
		c, err := tx.CACertificate(scope, "ZETA-ca")
		if err != nil {
			return fmt.Errorf("lookup with other case: %v", err)
		}
		if c.Name != "Zeta-CA" || string(c.Certificate) != "\x30\x01\x02" || !c.CreatedAt.Equal(now) {
			return fmt.Errorf("CACertificate = %+v", c)
		}
		c.Verified, c.VerificationCode, c.VerificationCodeExpiry = true, "ABC", now.Add(time.Hour)
		return tx.PutCACertificate(c)
	})
	mustView(t, s, func(tx store.Tx) error {
		all, err := tx.CACertificates(scope)
		if err != nil || len(all) != 2 || all[0].Name != "alpha.ca" || all[1].Name != "Zeta-CA" {
			return fmt.Errorf("CACertificates = %v, %v", all, err)
		}
		if !all[1].Verified || all[1].VerificationCode != "ABC" || !all[1].VerificationCodeExpiry.Equal(now.Add(time.Hour)) {
			return fmt.Errorf("update lost: %+v", all[1])
		}
		if _, err := tx.CACertificate(scope, "other-scope"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("another scope's CA visible: %v", err)
		}
		return nil
	})
	mustUpdate(t, s, func(tx store.Tx) error {
		if err := tx.DeleteCACertificate(scope, "alpha.CA"); err != nil {
			return err
		}
		if err := tx.DeleteCACertificate(scope, "alpha.ca"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("second delete: %v", err)
		}
		return nil
	})
}

func testEnrollments(t *testing.T, s store.Store) {
	const scope = "0ne00ABCDEF"
	for _, id := range []string{"dev-3", "dev-1", "dev-2"} {
		e := &store.Enrollment{Scope: scope, Kind: store.KindIndividual, ID: id, ETag: `"etag-` + id + `"`,
			Data: []byte(`{"registrationId":"` + id + `","attestation":{"type":"symmetricKey"}}`)}
		mustUpdate(t, s, func(tx store.Tx) error { return tx.PutEnrollment(e) })
	}
	mustView(t, s, func(tx store.Tx) error {
		e, err := tx.Enrollment(scope, store.KindIndividual, "dev-2")
		if err != nil || e.ETag != `"etag-dev-2"` || e.ID != "dev-2" || e.Scope != scope || e.Kind != store.KindIndividual ||
			string(e.Data) != `{"registrationId":"dev-2","attestation":{"type":"symmetricKey"}}` {
			return fmt.Errorf("enrollment = %+v, %v", e, err)
		}
		if _, err := tx.Enrollment(scope, store.KindIndividual, "dev-9"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("missing enrollment: %v, want ErrNotFound", err)
		}
		all, err := tx.Enrollments(scope, store.KindIndividual, "", 0)
		if err != nil || len(all) != 3 || all[0].ID != "dev-1" || all[2].ID != "dev-3" || all[1].ETag != `"etag-dev-2"` {
			return fmt.Errorf("enrollments = %v, %v; want dev-1..3 in order", enrollmentIDs(all), err)
		}
		page, err := tx.Enrollments(scope, store.KindIndividual, "dev-1", 1)
		if err != nil || len(page) != 1 || page[0].ID != "dev-2" {
			return fmt.Errorf("enrollments after dev-1 limit 1 = %v, %v", enrollmentIDs(page), err)
		}
		// "after" need not exist.
		page, err = tx.Enrollments(scope, store.KindIndividual, "dev-15", 0)
		if err != nil || len(page) != 2 || page[0].ID != "dev-2" {
			return fmt.Errorf("enrollments after dev-15 = %v, %v", enrollmentIDs(page), err)
		}
		return nil
	})
	// Replace, then delete.
	mustUpdate(t, s, func(tx store.Tx) error {
		return tx.PutEnrollment(&store.Enrollment{Scope: scope, Kind: store.KindIndividual, ID: "dev-1", ETag: `"v2"`, Data: []byte(`{}`)})
	})
	mustUpdate(t, s, func(tx store.Tx) error {
		e, err := tx.Enrollment(scope, store.KindIndividual, "dev-1")
		if err != nil || e.ETag != `"v2"` || string(e.Data) != `{}` {
			return fmt.Errorf("replaced enrollment = %+v, %v", e, err)
		}
		if err := tx.DeleteEnrollment(scope, store.KindIndividual, "dev-1"); err != nil {
			return err
		}
		if err := tx.DeleteEnrollment(scope, store.KindIndividual, "dev-1"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("second delete: %v, want ErrNotFound", err)
		}
		return nil
	})
	mustView(t, s, func(tx store.Tx) error {
		all, err := tx.Enrollments(scope, store.KindIndividual, "", 0)
		if err != nil || len(all) != 2 {
			return fmt.Errorf("after delete: %v, %v", enrollmentIDs(all), err)
		}
		return nil
	})
}

func testEnrollmentsIsolated(t *testing.T, s store.Store) {
	put := func(scope string, kind store.EnrollmentKind, id string) {
		e := &store.Enrollment{Scope: scope, Kind: kind, ID: id, ETag: `"` + scope + string(kind) + `"`, Data: []byte(`{"k":"` + string(kind) + `"}`)}
		mustUpdate(t, s, func(tx store.Tx) error { return tx.PutEnrollment(e) })
	}
	put("0ne00000001", store.KindIndividual, "same")
	put("0ne00000001", store.KindGroup, "same")
	put("0ne00000002", store.KindIndividual, "same")
	mustView(t, s, func(tx store.Tx) error {
		g, err := tx.Enrollment("0ne00000001", store.KindGroup, "same")
		if err != nil || string(g.Data) != `{"k":"group"}` {
			return fmt.Errorf("group = %+v, %v", g, err)
		}
		for _, sc := range []string{"0ne00000001", "0ne00000002"} {
			all, err := tx.Enrollments(sc, store.KindIndividual, "", 0)
			if err != nil || len(all) != 1 || all[0].Scope != sc {
				return fmt.Errorf("individuals(%s) = %v, %v", sc, enrollmentIDs(all), err)
			}
		}
		if gs, err := tx.Enrollments("0ne00000002", store.KindGroup, "", 0); err != nil || len(gs) != 0 {
			return fmt.Errorf("groups of scope 2 = %v, %v; want none", enrollmentIDs(gs), err)
		}
		if _, err := tx.Enrollment("0ne00000001", "bogus", "same"); err == nil {
			return fmt.Errorf("unknown kind accepted")
		}
		return nil
	})
	mustUpdate(t, s, func(tx store.Tx) error { return tx.DeleteEnrollment("0ne00000001", store.KindIndividual, "same") })
	mustView(t, s, func(tx store.Tx) error {
		if _, err := tx.Enrollment("0ne00000001", store.KindGroup, "same"); err != nil {
			return fmt.Errorf("group gone with the individual of the same ID: %v", err)
		}
		return nil
	})
}

func enrollmentIDs(es []*store.Enrollment) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.ID)
	}
	return out
}

func testChallenges(t *testing.T, s store.Store) {
	const scope = "0ne00ABCDEF"
	now := time.Now().UTC().Truncate(time.Millisecond)
	c := &store.Challenge{Scope: scope, RegistrationID: "tpm-1", SealedKey: []byte("sealed challenge key"),
		EndorsementKey: []byte{0x01, 0x3a, 0xee}, StorageRootKey: []byte{0x01, 0x18, 0xff}, EKCertificate: []byte{0x30, 0x82},
		EnrollmentGroupID: "vendor-a", CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
	mustUpdate(t, s, func(tx store.Tx) error { return tx.PutChallenge(c) })
	mustView(t, s, func(tx store.Tx) error {
		got, err := tx.Challenge(scope, "tpm-1", now)
		if err != nil {
			return err
		}
		if string(got.SealedKey) != string(c.SealedKey) || string(got.EndorsementKey) != string(c.EndorsementKey) ||
			string(got.StorageRootKey) != string(c.StorageRootKey) || string(got.EKCertificate) != string(c.EKCertificate) ||
			got.EnrollmentGroupID != "vendor-a" || !got.ExpiresAt.Equal(c.ExpiresAt) || !got.CreatedAt.Equal(now) || got.OperationID != "" {
			return fmt.Errorf("challenge = %+v, want %+v", got, c)
		}
		if _, err := tx.Challenge(scope, "tpm-1", c.ExpiresAt); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("challenge at its expiry: %v, want ErrNotFound", err)
		}
		if _, err := tx.Challenge("0ne00000000", "tpm-1", now); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("challenge of another scope: %v, want ErrNotFound", err)
		}
		if _, err := tx.Challenge(scope, "tpm-2", now); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("challenge of another device: %v, want ErrNotFound", err)
		}
		return nil
	})
	// Replacing it (answered by an operation) keeps one challenge per device.
	answered := *c
	answered.OperationID, answered.ExpiresAt = "4.abc.1", now.Add(2*time.Minute)
	mustUpdate(t, s, func(tx store.Tx) error { return tx.PutChallenge(&answered) })
	mustUpdate(t, s, func(tx store.Tx) error {
		got, err := tx.Challenge(scope, "tpm-1", now.Add(90*time.Second))
		if err != nil || got.OperationID != "4.abc.1" {
			return fmt.Errorf("replaced challenge = %+v, %v", got, err)
		}
		if err := tx.DeleteChallenge(scope, "tpm-1"); err != nil {
			return err
		}
		if err := tx.DeleteChallenge(scope, "tpm-1"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("second delete: %v, want ErrNotFound", err)
		}
		if _, err := tx.Challenge(scope, "tpm-1", now); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("deleted challenge: %v, want ErrNotFound", err)
		}
		return nil
	})
	// An expired challenge can still be deleted (and replaced).
	mustUpdate(t, s, func(tx store.Tx) error { return tx.PutChallenge(c) })
	mustUpdate(t, s, func(tx store.Tx) error { return tx.DeleteChallenge(scope, "tpm-1") })
}

// testChallengeAnsweredOnce answers one challenge from several transactions
// at once, as replicas receiving the same (replayed) answer do: exactly one
// may mark it answered. Each transaction, once it has read the challenge,
// waits a little for the others to have read it too, so that a store whose
// Challenge does not lock lets them all through.
func testChallengeAnsweredOnce(t *testing.T, s store.Store) {
	const scope, n = "0ne00ABCDEF", 4
	now := time.Now().UTC()
	c := &store.Challenge{Scope: scope, RegistrationID: "tpm-1", SealedKey: []byte("k"), CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
	mustUpdate(t, s, func(tx store.Tx) error { return tx.PutChallenge(c) })
	errAnswered := errors.New("already answered")
	var read atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.Update(ctx, func(tx store.Tx) error {
				cur, err := tx.Challenge(scope, "tpm-1", now)
				if err != nil {
					return err
				}
				read.Add(1)
				for deadline := time.Now().Add(150 * time.Millisecond); read.Load() < n && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond)
				}
				if cur.OperationID != "" {
					return errAnswered
				}
				cur.OperationID = fmt.Sprintf("op-%d", i)
				return tx.PutChallenge(cur)
			})
		}()
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, errAnswered):
			t.Fatal(err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d transactions answered the challenge, want 1", ok)
	}
}

func testRollback(t *testing.T, s store.Store) {
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.PutRecord(record("0ne00ABCDEF", "half")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want boom", err)
	}
	mustView(t, s, func(tx store.Tx) error {
		if _, err := tx.Record("0ne00ABCDEF", "half"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("half-written record visible: %v", err)
		}
		return nil
	})
}

// A write inside View fails and leaves nothing behind: View is for reads,
// and a store may run it outside any transaction.
func testViewRefusesWrites(t *testing.T, s store.Store) {
	err := s.View(ctx, func(tx store.Tx) error { return tx.PutRecord(record("0ne00ABCDEF", "sneaky")) })
	if err == nil {
		t.Fatal("PutRecord inside View succeeded")
	}
	mustView(t, s, func(tx store.Tx) error {
		if _, err := tx.Record("0ne00ABCDEF", "sneaky"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("record written inside View is visible: %v", err)
		}
		return nil
	})
}

func testConcurrent(t *testing.T, s store.Store) {
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := record("0ne00ABCDEF", fmt.Sprintf("dev-%03d", i))
			errs <- s.Update(ctx, func(tx store.Tx) error { return tx.PutRecord(r) })
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	mustView(t, s, func(tx store.Tx) error {
		all, err := tx.Records("0ne00ABCDEF", "", 0)
		if err != nil || len(all) != n {
			return fmt.Errorf("records = %d, %v; want %d", len(all), err, n)
		}
		return nil
	})
}

func testPrune(t *testing.T, s store.Store) {
	old := time.Now().Add(-2 * time.Hour).UTC()
	for i, at := range []time.Time{old, old, time.Now().UTC()} {
		op := &store.Operation{Scope: "0ne00ABCDEF", ID: fmt.Sprint(i), RegistrationID: "d", Status: "assigned", CreatedAt: at, UpdatedAt: at}
		mustUpdate(t, s, func(tx store.Tx) error { return tx.PutOperation(op) })
	}
	n, err := s.PruneOperations(ctx, time.Now().Add(-time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("PruneOperations = %d, %v; want 2", n, err)
	}
	mustView(t, s, func(tx store.Tx) error {
		_, err := tx.Operation("0ne00ABCDEF", "2")
		return err
	})
}

func ids(rs []*store.Record) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.RegistrationID)
	}
	return out
}

func mustUpdate(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.Update(ctx, fn); err != nil {
		t.Fatal(err)
	}
}

func mustView(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.View(ctx, fn); err != nil {
		t.Fatal(err)
	}
}
