package registration_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/daemon/registration"
	rt "github.com/edgeprov/edgeprov/daemon/registration/registrationtest"
	"github.com/edgeprov/edgeprov/daemon/store"
)

var groupKey = []byte("reprovision tests group key 32b!")

func boolp(b bool) *bool { return &b }

// symGroup is a symmetric-key group for devices whose IDs start with prefix.
func symGroup(id, prefix string, edit func(c *enrollment.Common)) *enrollment.Group {
	g := &enrollment.Group{EnrollmentGroupID: id, RegistrationIDPrefixes: []string{prefix}, Common: enrollment.Common{
		Attestation: enrollment.Attestation{Type: enrollment.AttestationSymmetricKey,
			SymmetricKey: &enrollment.SymmetricKeyAttestation{PrimaryKey: base64.StdEncoding.EncodeToString(groupKey)}}}}
	if edit != nil {
		edit(&g.Common)
	}
	return g
}

func deviceToken(f *rt.Fixture, regID string) string {
	return f.Token(regID, sas.DeriveDeviceKey(groupKey, regID))
}

// mustRegister registers and polls, and fails the test unless the device is
// assigned.
func mustRegister(t *testing.T, f *rt.Fixture, regID, payload string) *dpsapi.DeviceRegistrationResult {
	t.Helper()
	later := f.Now.Load().Add(time.Second)
	f.Now.Store(&later)
	op, err := register(t, f, regID, deviceToken(f, regID), payload)
	if err != nil {
		t.Fatal(err)
	}
	if op.Status != dpsapi.StatusAssigned {
		t.Fatalf("%s: %+v", regID, op.RegistrationState)
	}
	return op.RegistrationState
}

func identityOn(t *testing.T, f *rt.Fixture, hubName, deviceID string) *store.Identity {
	t.Helper()
	var id *store.Identity
	err := f.Store.View(ctx, func(tx store.Tx) error {
		var err error
		id, err = tx.Identity(hubName, deviceID)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// evolve changes a device's twin and capabilities on its hub, as back-end
// applications do after provisioning.
func evolve(t *testing.T, f *rt.Fixture, hubName, deviceID string, twin string, iotEdge bool) {
	t.Helper()
	err := f.Store.Update(ctx, func(tx store.Tx) error {
		id, err := tx.Identity(hubName, deviceID)
		if err != nil {
			return err
		}
		id.InitialTwin, id.IoTEdge = json.RawMessage(twin), iotEdge
		return tx.PutIdentity(id)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func twinOf(t *testing.T, id *store.Identity) string {
	t.Helper()
	if id == nil {
		return "<no identity>"
	}
	var tw hub.Twin
	if err := json.Unmarshal(id.InitialTwin, &tw); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(tw)
	return canonicalJSON(t, string(b))
}

// canonicalJSON re-encodes s with sorted object keys.
func canonicalJSON(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

const (
	initialTwin = `{"tags":{"site":"w7"},"properties":{"desired":{"interval":30}}}`
	evolvedA    = `{"tags":{"site":"w7","rack":"A-12"},"properties":{"desired":{"interval":5}}}`
	evolvedB    = `{"tags":{"site":"w7","rack":"B-3"},"properties":{"desired":{"interval":7}}}`
)

// TestReprovisioning runs every reprovision policy through the ways a device's
// hub can change, and checks the hub, the substatus, the twin on the new hub,
// the capabilities, and what is left on the old hub.
func TestReprovisioning(t *testing.T) {
	const (
		hubA = "hub-a.test"
		hubB = "hub-b.test"
	)
	type policy struct{ update, migrate *bool }
	var (
		migrate = policy{nil, nil} // DPS's defaults: true, true
		reset   = policy{boolp(true), boolp(false)}
		never   = policy{boolp(false), boolp(true)}
	)
	// Hub changes between the registrations.
	drainA := func(f *rt.Fixture) {
		a := f.LocalHub("a", hubA, 1)
		a.ApplyAllocationPolicy = false
		f.Hubs.Set([]*hub.Linked{a, f.LocalHub("b", hubB, 1)})
	}
	unlinkA := func(f *rt.Fixture) { f.Hubs.Set([]*hub.Linked{f.LocalHub("b", hubB, 1)}) }
	same := func(*rt.Fixture) {}
	backToA := func(f *rt.Fixture) {
		b := f.LocalHub("b", hubB, 1)
		b.ApplyAllocationPolicy = false
		f.Hubs.Set([]*hub.Linked{f.LocalHub("a", hubA, 1), b})
	}

	tests := []struct {
		name   string
		policy policy
		// viaB first moves the device to hub B (migrating) and evolves its
		// twin there. wantEdge: capabilities come from the enrollment (true)
		// unless migrated from the old hub, where evolve changed them.
		viaB          bool
		change        func(*rt.Fixture)
		wantHub       string
		wantSubstatus string
		wantTwin      string
		wantEdge      bool
		oldKept       bool // the identity on the hub left behind stays
	}{
		{"ok/migrate/moves", migrate, false, drainA, hubB, dpsapi.SubstatusDeviceDataMigrated, evolvedA, false, false},
		{"ok/reset/moves", reset, false, drainA, hubB, dpsapi.SubstatusDeviceDataReset, initialTwin, true, false},
		{"ok/migrate/same-hub", migrate, false, same, hubA, dpsapi.SubstatusInitialAssignment, evolvedA, true, false},
		{"ok/reset/same-hub", reset, false, same, hubA, dpsapi.SubstatusDeviceDataReset, initialTwin, true, false},
		{"ok/never/hub-drained", never, false, drainA, hubA, dpsapi.SubstatusInitialAssignment, evolvedA, true, false},
		{"ok/never-reset/hub-drained", policy{boolp(false), boolp(false)}, false, drainA, hubA, dpsapi.SubstatusInitialAssignment, evolvedA, true, false},
		{"ok/never/hub-unlinked-allocates-anew", never, false, unlinkA, hubB, dpsapi.SubstatusDeviceDataMigrated, initialTwin, true, true},
		{"ok/migrate/back-to-initial-hub", migrate, true, backToA, hubA, dpsapi.SubstatusReprovisionedToInitialAssignment, evolvedB, true, false},
		{"ok/reset/back-to-initial-hub", reset, true, backToA, hubA, dpsapi.SubstatusReprovisionedToInitialAssignment, initialTwin, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := symGroup("rp", "rp-", func(c *enrollment.Common) {
				c.InitialTwin = &enrollment.InitialTwin{Tags: map[string]any{"site": "w7"},
					Properties: &enrollment.InitialTwinProperties{Desired: map[string]any{"interval": 30}}}
				c.Capabilities = &enrollment.Capabilities{IoTEdge: true}
				c.ReprovisionPolicy = &enrollment.ReprovisionPolicy{UpdateHubAssignment: tt.policy.update, MigrateDeviceData: tt.policy.migrate}
			})
			f := rt.NewWith(t, rt.Options{Groups: []*enrollment.Group{g},
				Hubs: func(f *rt.Fixture) []*hub.Linked { return []*hub.Linked{f.LocalHub("a", hubA, 1)} }})
			const dev = "rp-0001"

			first := mustRegister(t, f, dev, "")
			if first.AssignedHub != hubA || first.Substatus != dpsapi.SubstatusInitialAssignment {
				t.Fatalf("first registration: %+v", first)
			}
			if got := twinOf(t, identityOn(t, f, hubA, dev)); got != canonicalJSON(t, initialTwin) || !identityOn(t, f, hubA, dev).IoTEdge {
				t.Fatalf("first twin %s, iotEdge %v", got, identityOn(t, f, hubA, dev).IoTEdge)
			}
			evolve(t, f, hubA, dev, evolvedA, false)
			left := hubA
			if tt.viaB {
				drainA(f)
				mid := mustRegister(t, f, dev, "")
				if mid.AssignedHub != hubB {
					t.Fatalf("did not move to B first: %+v", mid)
				}
				evolve(t, f, hubB, dev, evolvedB, true)
				left = hubB
			}

			tt.change(f)
			got := mustRegister(t, f, dev, "")
			if got.AssignedHub != tt.wantHub || got.Substatus != tt.wantSubstatus {
				t.Fatalf("assigned %s (%s), want %s (%s)", got.AssignedHub, got.Substatus, tt.wantHub, tt.wantSubstatus)
			}
			id := identityOn(t, f, tt.wantHub, dev)
			if tw := twinOf(t, id); tw != canonicalJSON(t, tt.wantTwin) || id.IoTEdge != tt.wantEdge || id.Status != "enabled" {
				t.Fatalf("on %s: twin %s iotEdge %v status %s; want twin %s iotEdge %v", tt.wantHub, tw, id.IoTEdge, id.Status, tt.wantTwin, tt.wantEdge)
			}
			if left != tt.wantHub {
				if kept := identityOn(t, f, left, dev) != nil; kept != tt.oldKept {
					t.Fatalf("identity on the hub it left (%s) kept = %v, want %v", left, kept, tt.oldKept)
				}
			}
			if !first.CreatedDateTimeUTC.Equal(got.CreatedDateTimeUTC.Time) || got.ETag == first.ETag {
				t.Fatalf("record: created %v then %v, etag %s then %s", first.CreatedDateTimeUTC, got.CreatedDateTimeUTC, first.ETag, got.ETag)
			}
		})
	}
}

// TestDisabledEnrollmentRevokes: a registered device whose enrollment is then
// disabled is refused when it registers again, and its identity on the hub is
// disabled too; enabled again, it gets it back.
func TestDisabledEnrollmentRevokes(t *testing.T) {
	enabled := symGroup("rv", "rv-", nil)
	f := rt.NewWith(t, rt.Options{Groups: []*enrollment.Group{enabled}})
	st := mustRegister(t, f, "rv-1", "")
	if id := identityOn(t, f, st.AssignedHub, "rv-1"); id == nil || id.Status != "enabled" {
		t.Fatalf("identity %+v", id)
	}

	disabled := symGroup("rv", "rv-", func(c *enrollment.Common) { c.ProvisioningStatus = enrollment.StatusDisabled })
	f.Enrollments.Replace(t, nil, []*enrollment.Group{disabled})
	op, err := register(t, f, "rv-1", deviceToken(f, "rv-1"), "")
	if err != nil {
		t.Fatal(err)
	}
	if op.Status != dpsapi.StatusFailed || op.RegistrationState.ErrorCode != dpsapi.CodeEnrollmentDisabled {
		t.Fatalf("with the enrollment disabled: %+v", op.RegistrationState)
	}
	if id := identityOn(t, f, st.AssignedHub, "rv-1"); id == nil || id.Status != "disabled" {
		t.Fatalf("identity after the disabled registration: %+v", id)
	}
	// A device that never registered leaves nothing behind.
	if op, _ := register(t, f, "rv-2", deviceToken(f, "rv-2"), ""); op.Status != dpsapi.StatusFailed {
		t.Fatalf("rv-2: %+v", op)
	}
	assertNoRecord(t, f, "rv-2")
	for _, h := range []string{rt.HubA, rt.HubB} {
		if identityOn(t, f, h, "rv-2") != nil {
			t.Fatalf("rv-2 has an identity on %s", h)
		}
	}

	f.Enrollments.Replace(t, nil, []*enrollment.Group{enabled})
	again := mustRegister(t, f, "rv-1", "")
	if id := identityOn(t, f, again.AssignedHub, "rv-1"); id == nil || id.Status != "enabled" {
		t.Fatalf("identity after re-enabling: %+v", id)
	}
}

func TestDeleteRegistration(t *testing.T) {
	f := rt.NewWith(t, rt.Options{Groups: []*enrollment.Group{symGroup("dl", "dl-", nil)}})
	st := mustRegister(t, f, "dl-1", "")
	tests := []struct {
		name    string
		regID   string
		etag    string
		wantErr error
	}{
		{"fail/unknown", "dl-unknown", "", registration.ErrNotFound},
		{"fail/stale-etag", "dl-1", "IjEi", store.ErrConflict},
		{"ok/matching-etag", "DL-1", st.ETag, nil},
		{"fail/already-deleted", "dl-1", "", registration.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := f.Service.DeleteRegistration(ctx, rt.Scope, tt.regID, tt.etag)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("DeleteRegistration = %v, want %v", err, tt.wantErr)
			}
			exists := identityOn(t, f, st.AssignedHub, "dl-1") != nil
			if exists != (tt.name == "fail/stale-etag" || tt.name == "fail/unknown") {
				t.Fatalf("identity exists = %v after %s", exists, tt.name)
			}
		})
	}
	assertNoRecord(t, f, "dl-1")
	// Registering again starts over.
	if again := mustRegister(t, f, "dl-1", ""); again.Substatus != dpsapi.SubstatusInitialAssignment || again.CreatedDateTimeUTC.Equal(st.CreatedDateTimeUTC.Time) {
		t.Fatalf("after deletion: %+v", again)
	}
}

// TestPayloadAndCapabilities: without a webhook the device's payload comes
// back to it; capabilities.iotEdge reaches the identity.
func TestPayloadAndCapabilities(t *testing.T) {
	f := rt.NewWith(t, rt.Options{Groups: []*enrollment.Group{
		symGroup("edge", "edge-", func(c *enrollment.Common) { c.Capabilities = &enrollment.Capabilities{IoTEdge: true} }),
		symGroup("leaf", "leaf-", nil),
	}})
	for _, tt := range []struct{ regID, payload, wantPayload string }{
		{"edge-1", `{"model":"gw-2"}`, `{"model":"gw-2"}`},
		{"leaf-1", ``, ``},
		{"leaf-2", `"a string"`, ``},
	} {
		st := mustRegister(t, f, tt.regID, tt.payload)
		if string(st.Payload) != tt.wantPayload {
			t.Errorf("%s: payload %s, want %s", tt.regID, st.Payload, tt.wantPayload)
		}
		if id := identityOn(t, f, st.AssignedHub, tt.regID); id.IoTEdge != (tt.regID == "edge-1") {
			t.Errorf("%s: iotEdge %v", tt.regID, id.IoTEdge)
		}
	}
}
