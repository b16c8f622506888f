package registration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/daemon/hub/local"
	"github.com/edgeprov/edgeprov/daemon/registration"
	rt "github.com/edgeprov/edgeprov/daemon/registration/registrationtest"
	"github.com/edgeprov/edgeprov/daemon/store"
)

var ctx = context.Background()

// register registers and polls once, returning the final operation status.
func register(t *testing.T, f *rt.Fixture, regID, token string, payload string) (*dpsapi.RegistrationOperationStatus, error) {
	t.Helper()
	req := registration.RegisterRequest{Scope: rt.Scope, RegistrationID: regID, Authorization: token}
	if payload != "" {
		req.Body.Payload = json.RawMessage(payload)
	}
	op, err := f.Service.Register(ctx, req)
	if err != nil {
		return nil, err
	}
	if op.Status != dpsapi.StatusAssigning || op.OperationID == "" {
		t.Fatalf("register answered %+v, want assigning with an operation ID", op)
	}
	return f.Service.OperationStatus(ctx, registration.PollRequest{Scope: rt.Scope, RegistrationID: regID, OperationID: op.OperationID, Authorization: token})
}

func TestRegister(t *testing.T) {
	tests := []struct {
		name       string
		regID      string
		token      func(f *rt.Fixture) string
		payload    string
		wantStatus string
		wantHub    string
		wantDevice string
		wantCode   int
		wantGroup  string
		wantErr    error
	}{
		{name: "ok/individual-primary", regID: "dev-individual", token: func(f *rt.Fixture) string { return f.Token("dev-individual", rt.IndividualKey) },
			wantStatus: "assigned", wantHub: rt.HubB, wantDevice: "custom-device"},
		{name: "ok/individual-secondary", regID: "dev-individual", token: func(f *rt.Fixture) string { return f.Token("dev-individual", rt.SecondaryKey) },
			wantStatus: "assigned", wantHub: rt.HubB, wantDevice: "custom-device"},
		{name: "ok/individual-case-insensitive", regID: "DEV-Individual", token: func(f *rt.Fixture) string { return f.Token("DEV-Individual", rt.IndividualKey) },
			wantStatus: "assigned", wantHub: rt.HubB, wantDevice: "custom-device"},
		{name: "ok/group-derived-with-payload", regID: "grp-0001", token: func(f *rt.Fixture) string { return f.GroupToken("grp-0001") },
			payload: `{"site":"w7"}`, wantStatus: "assigned", wantDevice: "grp-0001", wantGroup: "grp"},
		{name: "fail/disabled-individual", regID: "dev-disabled", token: func(f *rt.Fixture) string { return f.Token("dev-disabled", rt.DisabledKey) },
			wantStatus: "failed", wantCode: dpsapi.CodeEnrollmentDisabled},
		{name: "fail/disabled-entry-inside-group", regID: "grp-blocked", token: func(f *rt.Fixture) string { return f.GroupToken("grp-blocked") },
			wantStatus: "failed", wantCode: dpsapi.CodeEnrollmentDisabled},
		{name: "fail/no-linked-hub", regID: "dev-nohub", token: func(f *rt.Fixture) string { return f.Token("dev-nohub", rt.OtherKey) },
			wantStatus: "failed", wantCode: dpsapi.CodeNoHub},
		{name: "fail/wrong-key", regID: "dev-individual", token: func(f *rt.Fixture) string { return f.Token("dev-individual", rt.OtherKey) },
			wantErr: registration.ErrUnauthorized},
		{name: "fail/unknown-device", regID: "nobody", token: func(f *rt.Fixture) string { return f.Token("nobody", rt.OtherKey) },
			wantErr: registration.ErrUnauthorized},
		{name: "fail/group-device-wrong-key", regID: "grp-0002", token: func(f *rt.Fixture) string { return f.Token("grp-0002", rt.GroupKey) },
			wantErr: registration.ErrUnauthorized},
		{name: "fail/token-for-another-device", regID: "dev-individual", token: func(f *rt.Fixture) string { return f.Token("grp-0001", rt.IndividualKey) },
			wantErr: registration.ErrUnauthorized},
		{name: "fail/expired-token", regID: "dev-individual", token: func(f *rt.Fixture) string {
			past := f.Now.Load().Add(-2 * time.Hour)
			return fmt.Sprint(tokenAt(f, "dev-individual", past))
		}, wantErr: registration.ErrUnauthorized},
		{name: "fail/malformed-token", regID: "dev-individual", token: func(*rt.Fixture) string { return "SharedAccessSignature sr=x" },
			wantErr: registration.ErrUnauthorized},
		{name: "fail/no-credentials", regID: "dev-individual", token: func(*rt.Fixture) string { return "" },
			wantErr: registration.ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := rt.New(t)
			got, err := register(t, f, tt.regID, tt.token(f), tt.payload)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				assertNothingWritten(t, f)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rs := got.RegistrationState
			if got.Status != tt.wantStatus || rs == nil || rs.Status != tt.wantStatus {
				t.Fatalf("status = %+v, want %s", got, tt.wantStatus)
			}
			if tt.wantStatus == "failed" {
				if rs.ErrorCode != tt.wantCode || rs.ErrorMessage == "" {
					t.Fatalf("failed with %d %q, want code %d and a message", rs.ErrorCode, rs.ErrorMessage, tt.wantCode)
				}
				assertNoRecord(t, f, tt.regID)
				return
			}
			if tt.wantHub != "" && rs.AssignedHub != tt.wantHub {
				t.Errorf("hub = %s, want %s", rs.AssignedHub, tt.wantHub)
			}
			if rs.DeviceID != tt.wantDevice || rs.Substatus != dpsapi.SubstatusInitialAssignment || rs.ETag == "" || rs.CreatedDateTimeUTC == nil {
				t.Errorf("state = %+v", rs)
			}
			if rs.SymmetricKey == nil || rs.SymmetricKey.EnrollmentGroupID != tt.wantGroup {
				t.Errorf("symmetricKey = %+v, want group %q", rs.SymmetricKey, tt.wantGroup)
			}
			if tt.payload != "" && string(rs.Payload) != tt.payload {
				t.Errorf("payload = %s, want %s", rs.Payload, tt.payload)
			}
			// The identity exists on the assigned hub, and the record agrees.
			err = f.Store.View(ctx, func(tx store.Tx) error {
				if _, err := tx.Identity(rs.AssignedHub, rs.DeviceID); err != nil {
					return err
				}
				r, err := tx.Record(rt.Scope, dpsapi.NormalizeRegistrationID(tt.regID))
				if err != nil {
					return err
				}
				if r.AssignedHub != rs.AssignedHub || r.ETag != rs.ETag {
					return fmt.Errorf("record %+v disagrees with %+v", r, rs)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func tokenAt(f *rt.Fixture, regID string, at time.Time) string {
	saved := *f.Now.Load()
	f.Now.Store(&at)
	defer f.Now.Store(&saved)
	return f.Token(regID, rt.IndividualKey)
}

func assertNothingWritten(t *testing.T, f *rt.Fixture) {
	t.Helper()
	err := f.Store.View(ctx, func(tx store.Tx) error {
		recs, err := tx.Records(rt.Scope, "", 0)
		if err != nil || len(recs) != 0 {
			return fmt.Errorf("records written: %d, %v", len(recs), err)
		}
		for _, h := range []string{rt.HubA, rt.HubB} {
			ids, err := tx.Identities(h, "", 0)
			if err != nil || len(ids) != 0 {
				return fmt.Errorf("identities written on %s: %d, %v", h, len(ids), err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func assertNoRecord(t *testing.T, f *rt.Fixture, regID string) {
	t.Helper()
	err := f.Store.View(ctx, func(tx store.Tx) error {
		if _, err := tx.Record(rt.Scope, dpsapi.NormalizeRegistrationID(regID)); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("record of a failed registration: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBadRequests(t *testing.T) {
	f := rt.New(t)
	tok := f.Token("dev-individual", rt.IndividualKey)
	tests := []struct {
		name     string
		req      registration.RegisterRequest
		wantCode int
		wantErr  error
	}{
		{"fail/body-id-differs", registration.RegisterRequest{Scope: rt.Scope, RegistrationID: "dev-individual", Authorization: tok,
			Body: dpsapi.DeviceRegistration{RegistrationID: "someone-else"}}, dpsapi.CodeIDMismatch, nil},
		{"fail/invalid-registration-id", registration.RegisterRequest{Scope: rt.Scope, RegistrationID: "bad id!", Authorization: tok}, dpsapi.CodeInvalidRegistration, nil},
		{"fail/registration-id-ends-with-dot", registration.RegisterRequest{Scope: rt.Scope, RegistrationID: "dev.", Authorization: tok}, dpsapi.CodeInvalidRegistration, nil},
		{"fail/malformed-scope", registration.RegisterRequest{Scope: "scope", RegistrationID: "dev-individual", Authorization: tok}, dpsapi.CodeBadRequest, nil},
		{"fail/unknown-scope", registration.RegisterRequest{Scope: "0ne00000BAD", RegistrationID: "dev-individual", Authorization: tok}, 0, registration.ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.Service.Register(ctx, tt.req)
			var bad *registration.BadRequestError
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			case !errors.As(err, &bad) || bad.Code != tt.wantCode:
				t.Fatalf("err = %v, want bad request %d", err, tt.wantCode)
			}
			assertNothingWritten(t, f)
		})
	}
}

func TestReregistration(t *testing.T) {
	f := rt.New(t)
	first, err := register(t, f, "grp-re", f.GroupToken("grp-re"), "")
	if err != nil {
		t.Fatal(err)
	}
	later := f.Now.Load().Add(time.Minute)
	f.Now.Store(&later)
	second, err := register(t, f, "grp-re", f.GroupToken("grp-re"), "")
	if err != nil {
		t.Fatal(err)
	}
	a, b := first.RegistrationState, second.RegistrationState
	if a.AssignedHub != b.AssignedHub || b.Substatus != dpsapi.SubstatusInitialAssignment || !a.CreatedDateTimeUTC.Equal(b.CreatedDateTimeUTC.Time) {
		t.Fatalf("re-registration changed the assignment: %+v then %+v", a, b)
	}
	if a.ETag == b.ETag || !b.LastUpdatedDateTimeUTC.After(a.LastUpdatedDateTimeUTC.Time) {
		t.Fatalf("re-registration wrote no new record version: %+v then %+v", a, b)
	}

	// Unlink the assigned hub: the device moves, its data migrated (the default
	// reprovision policy), and the old hub's identity is removed.
	old := a.AssignedHub
	var keep []*hub.Linked
	for _, h := range f.Hubs.Linked() {
		if h.HostName != old {
			keep = append(keep, h)
		}
	}
	newHub := "hub-c.test"
	keep = append(keep, &hub.Linked{Name: "c", HostName: newHub, Weight: 1000, ApplyAllocationPolicy: true, Driver: local.New(newHub, f.Store, f.Sealer)})
	f.Hubs.Set(keep)
	third, err := register(t, f, "grp-re", f.GroupToken("grp-re"), "")
	if err != nil {
		t.Fatal(err)
	}
	c := third.RegistrationState
	if c.AssignedHub == old || c.Substatus != dpsapi.SubstatusDeviceDataMigrated {
		t.Fatalf("after unlinking %s: %+v", old, c)
	}
}

func TestPoll(t *testing.T) {
	f := rt.New(t)
	tok := f.Token("dev-individual", rt.IndividualKey)
	op, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: "dev-individual", Authorization: tok})
	if err != nil {
		t.Fatal(err)
	}
	other := f.GroupToken("grp-7")
	if _, err := register(t, f, "grp-7", other, ""); err != nil {
		t.Fatal(err)
	}
	// Tokens expire during long polls (aziot reuses a 30 s token): a token that
	// was valid when the operation was created still polls.
	created := *f.Now.Load()
	short := sasAt(f, created.Add(30*time.Second))
	much := created.Add(time.Hour)
	f.Now.Store(&much)

	tests := []struct {
		name    string
		req     registration.PollRequest
		wantErr error
	}{
		{"ok/expired-since-register", registration.PollRequest{Scope: rt.Scope, RegistrationID: "dev-individual", OperationID: op.OperationID, Authorization: short}, nil},
		{"fail/unknown-operation", registration.PollRequest{Scope: rt.Scope, RegistrationID: "dev-individual", OperationID: "4.0.nope", Authorization: f.Token("dev-individual", rt.IndividualKey)}, registration.ErrNotFound},
		{"fail/unknown-operation-expired-token", registration.PollRequest{Scope: rt.Scope, RegistrationID: "dev-individual", OperationID: "4.0.nope", Authorization: short}, registration.ErrUnauthorized},
		{"fail/operation-of-another-device", registration.PollRequest{Scope: rt.Scope, RegistrationID: "grp-7", OperationID: op.OperationID, Authorization: other}, registration.ErrNotFound},
		{"fail/no-token", registration.PollRequest{Scope: rt.Scope, RegistrationID: "dev-individual", OperationID: op.OperationID}, registration.ErrUnauthorized},
		{"fail/wrong-key", registration.PollRequest{Scope: rt.Scope, RegistrationID: "dev-individual", OperationID: op.OperationID, Authorization: f.Token("dev-individual", rt.OtherKey)}, registration.ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.Service.OperationStatus(ctx, tt.req)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil && (got.Status != "assigned" || got.OperationID != op.OperationID) {
				t.Fatalf("poll = %+v", got)
			}
		})
	}
}

func sasAt(f *rt.Fixture, expiry time.Time) string {
	at := expiry.Add(-time.Hour)
	saved := *f.Now.Load()
	f.Now.Store(&at)
	defer f.Now.Store(&saved)
	return f.Token("dev-individual", rt.IndividualKey)
}

func TestRegistrationStatus(t *testing.T) {
	f := rt.New(t)
	tok := f.GroupToken("grp-status")
	req := registration.StatusRequest{Scope: rt.Scope, RegistrationID: "grp-status", Authorization: tok}
	if _, err := f.Service.RegistrationStatus(ctx, req); !errors.Is(err, registration.ErrNotFound) {
		t.Fatalf("before registering: %v, want ErrNotFound", err)
	}
	op, err := register(t, f, "grp-status", tok, "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.Service.RegistrationStatus(ctx, req)
	if err != nil || got.AssignedHub != op.RegistrationState.AssignedHub || got.ETag != op.RegistrationState.ETag {
		t.Fatalf("status = %+v, %v", got, err)
	}
	req.Authorization = f.Token("grp-status", rt.OtherKey)
	if _, err := f.Service.RegistrationStatus(ctx, req); !errors.Is(err, registration.ErrUnauthorized) {
		t.Fatalf("with a wrong key: %v", err)
	}
}

// BenchmarkRegister measures the in-process register path with durable records
// in bbolt (group commit across parallel registrations), register + one poll.
func BenchmarkRegister(b *testing.B) {
	f := rt.New(b)
	var n atomic.Int64
	// Many devices register at once in a factory; group commit needs them.
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("grp-%d", n.Add(1))
			tok := f.GroupToken(id)
			op, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: id, Authorization: tok})
			if err != nil {
				b.Fatal(err)
			}
			st, err := f.Service.OperationStatus(ctx, registration.PollRequest{Scope: rt.Scope, RegistrationID: id, OperationID: op.OperationID, Authorization: tok})
			if err != nil || st.Status != "assigned" {
				b.Fatal(st, err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "registrations/s")
}
