package enrollment_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/enrollment"
)

const testKey = "Y2F0YWxvZy10ZXN0LXByaW1hcnkta2V5LTMyYnl0ZXM=" // 32 bytes

func individual(id string) *enrollment.Individual {
	e := &enrollment.Individual{RegistrationID: id}
	e.Attestation = enrollment.Attestation{
		Type:         enrollment.AttestationSymmetricKey,
		SymmetricKey: &enrollment.SymmetricKeyAttestation{PrimaryKey: testKey},
	}
	return e
}

func symGroup(id string, prefixes ...string) *enrollment.Group {
	g := &enrollment.Group{EnrollmentGroupID: id, RegistrationIDPrefixes: prefixes}
	g.Attestation = enrollment.Attestation{
		Type:         enrollment.AttestationSymmetricKey,
		SymmetricKey: &enrollment.SymmetricKeyAttestation{PrimaryKey: testKey},
	}
	return g
}

func x509Group(id string, prefixes ...string) *enrollment.Group {
	g := &enrollment.Group{EnrollmentGroupID: id, RegistrationIDPrefixes: prefixes}
	g.Attestation = enrollment.Attestation{Type: enrollment.AttestationX509, X509: &enrollment.X509Attestation{}}
	return g
}

func mustSet(t testing.TB, ind []*enrollment.Individual, groups []*enrollment.Group) *enrollment.Set {
	t.Helper()
	s, err := enrollment.NewSet(ind, groups)
	if err != nil {
		t.Fatalf("NewSet: %v", err)
	}
	return s
}

func TestSetLookup(t *testing.T) {
	ind := []*enrollment.Individual{individual("Device-01"), individual("device-02")}
	groups := []*enrollment.Group{symGroup("Line7-Sensors"), x509Group("cameras")}
	s := mustSet(t, ind, groups)

	if s.Len() != 4 {
		t.Errorf("Len = %d, want 4", s.Len())
	}
	if !slices.Equal(s.Individuals(), ind) || !slices.Equal(s.Groups(), groups) {
		t.Errorf("Individuals/Groups are not in catalog order")
	}

	tests := []struct {
		name string
		id   string
		want *enrollment.Individual
	}{
		{"ok/as-enrolled", "Device-01", ind[0]},
		{"ok/lower-case", "device-01", ind[0]},
		{"ok/upper-case", "DEVICE-01", ind[0]},
		{"ok/enrolled-lower-asked-mixed", "Device-02", ind[1]},
		{"fail/unknown", "device-03", nil},
		{"fail/prefix-of-an-id", "device-0", nil},
		{"fail/empty", "", nil},
	}
	for _, tt := range tests {
		t.Run("individual/"+tt.name, func(t *testing.T) {
			if got := s.Individual(tt.id); got != tt.want {
				t.Fatalf("Individual(%q) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}

	gtests := []struct {
		name string
		id   string
		want *enrollment.Group
	}{
		{"ok/as-enrolled", "Line7-Sensors", groups[0]},
		{"ok/lower-case", "line7-sensors", groups[0]},
		{"ok/upper-case", "LINE7-SENSORS", groups[0]},
		{"ok/x509-group", "CAMERAS", groups[1]},
		{"fail/unknown", "line8-sensors", nil},
		{"fail/individual-is-not-a-group", "device-01", nil},
	}
	for _, tt := range gtests {
		t.Run("group/"+tt.name, func(t *testing.T) {
			if got := s.Group(tt.id); got != tt.want {
				t.Fatalf("Group(%q) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

func TestSymmetricKeyCandidates(t *testing.T) {
	groups := []*enrollment.Group{
		symGroup("catch-all-1"),
		symGroup("line7", "line7-"),
		symGroup("line7-sensors", "LINE7-SENSOR-"),
		symGroup("line7-sensors-b", "line7-sensor-"), // same prefix as the previous group
		x509Group("x509-catch-all"),                  // never a symmetric-key candidate
		x509Group("x509-line7", "line7-"),            // idem, even with a matching prefix
		symGroup("line8", "line8-", "l8:"),
		symGroup("overlapping", "ovl-", "ovl-a", "OVL-"), // matches twice for "ovl-a1", lists "ovl-" twice
		symGroup("catch-all-2"),
	}
	s := mustSet(t, nil, groups)
	tests := []struct {
		name string
		id   string
		want []string
	}{
		{"ok/longest-prefix-first-then-catch-all", "line7-sensor-0001", []string{"line7-sensors", "line7-sensors-b", "line7", "catch-all-1", "catch-all-2"}},
		{"ok/case-insensitive", "LINE7-Sensor-0001", []string{"line7-sensors", "line7-sensors-b", "line7", "catch-all-1", "catch-all-2"}},
		{"ok/shorter-prefix-only", "line7-camera-01", []string{"line7", "catch-all-1", "catch-all-2"}},
		{"ok/id-equal-to-prefix", "line7-", []string{"line7", "catch-all-1", "catch-all-2"}},
		{"ok/second-prefix-of-a-group", "L8:0001", []string{"line8", "catch-all-1", "catch-all-2"}},
		{"ok/overlapping-prefixes-of-one-group-listed-once", "ovl-a1", []string{"overlapping", "catch-all-1", "catch-all-2"}},
		{"ok/duplicate-prefix-of-one-group-listed-once", "ovl-b1", []string{"overlapping", "catch-all-1", "catch-all-2"}},
		{"ok/no-prefix-matches", "line9-0001", []string{"catch-all-1", "catch-all-2"}},
		{"ok/id-shorter-than-every-prefix", "l", []string{"catch-all-1", "catch-all-2"}},
		{"ok/prefix-must-start-the-id", "x-line7-01", []string{"catch-all-1", "catch-all-2"}},
		{"ok/empty-id", "", []string{"catch-all-1", "catch-all-2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, g := range s.SymmetricKeyCandidates(tt.id) {
				got = append(got, g.EnrollmentGroupID)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("SymmetricKeyCandidates(%q) = %q, want %q", tt.id, got, tt.want)
			}
		})
	}

	t.Run("ok/no-groups", func(t *testing.T) {
		if got := mustSet(t, []*enrollment.Individual{individual("d")}, nil).SymmetricKeyCandidates("d"); len(got) != 0 {
			t.Fatalf("candidates of an empty Set = %v", got)
		}
	})
	t.Run("ok/does-not-alias-catch-all", func(t *testing.T) {
		// Appending to one result must not change the next one.
		a := s.SymmetricKeyCandidates("nothing")
		_ = append(a, groups[1])
		b := s.SymmetricKeyCandidates("nothing")
		if len(b) != 2 || b[0] != groups[0] || b[1] != groups[8] {
			t.Fatalf("second call = %v", b)
		}
	})
}

func TestNewSetDuplicates(t *testing.T) {
	tests := []struct {
		name   string
		ind    []*enrollment.Individual
		groups []*enrollment.Group
		want   string
	}{
		{"ok/individual-and-group-may-share-an-id", []*enrollment.Individual{individual("same")}, []*enrollment.Group{symGroup("same")}, ""},
		{"ok/two-groups-may-share-a-prefix", nil, []*enrollment.Group{symGroup("a", "p-"), symGroup("b", "p-")}, ""},
		{"fail/individual-same-case", []*enrollment.Individual{individual("d-1"), individual("d-1")}, nil, `duplicate individual enrollment "d-1"`},
		{"fail/individual-other-case", []*enrollment.Individual{individual("Device-1"), individual("x"), individual("DEVICE-1")}, nil, `duplicate individual enrollment "DEVICE-1"`},
		{"fail/group-other-case", nil, []*enrollment.Group{symGroup("Line7"), symGroup("LINE7", "p-")}, `duplicate enrollment group "LINE7"`},
		{"fail/group-of-other-attestation", nil, []*enrollment.Group{x509Group("g"), symGroup("G")}, `duplicate enrollment group "G"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := enrollment.NewSet(tt.ind, tt.groups)
			if tt.want == "" {
				if err != nil || s == nil {
					t.Fatalf("NewSet = %v, %v", s, err)
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Fatalf("NewSet error = %v, want %q", err, tt.want)
			}
			if s != nil {
				t.Fatalf("NewSet returned a Set with its error")
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		e    *enrollment.Individual
		want []string // error lines
	}{
		{"ok/inline-key", individual("d-1"), nil},
		{"ok/device-id-with-special-characters", func() *enrollment.Individual {
			e := individual("d-1")
			e.DeviceID = "dev+%_#*?!(),:=@$'.-1"
			return e
		}(), nil},
		{"ok/key-file-already-reported-by-its-reader", func() *enrollment.Individual {
			e := individual("d-1")
			e.Attestation.SymmetricKey = &enrollment.SymmetricKeyAttestation{KeyFile: "k.key"}
			return e
		}(), nil},
		{"fail/no-key", func() *enrollment.Individual {
			e := individual("d-1")
			e.Attestation.SymmetricKey = &enrollment.SymmetricKeyAttestation{}
			return e
		}(), []string{"p.attestation.symmetricKey: primaryKey, secondaryKey or keyFile is required"}},
		{"fail/device-id", func() *enrollment.Individual {
			e := individual("d-1")
			e.DeviceID = strings.Repeat("d", 129)
			return e
		}(), []string{"p.deviceId: device ID is 129 characters, the limit is 128"}},
		{"fail/tpm-without-ek", func() *enrollment.Individual {
			return &enrollment.Individual{RegistrationID: "t", Common: enrollment.Common{Attestation: enrollment.Attestation{Type: enrollment.AttestationTPM}}}
		}(), []string{"p.attestation.tpm.endorsementKey: required for type tpm"}},
		{"fail/unknown-attestation-and-static-with-host-name-ok", func() *enrollment.Individual {
			e := &enrollment.Individual{RegistrationID: "t"}
			e.Attestation.Type = "sas"
			e.AllocationPolicy = enrollment.AllocationStatic
			e.IoTHubHostName = "hub.example.net"
			return e
		}(), []string{`p.attestation.type: unknown attestation type "sas" (symmetricKey, x509 or tpm)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.e.Validate("p")
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Validate =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
	t.Run("ok/keys-decoded", func(t *testing.T) {
		e := individual("d-1")
		e.Attestation.SymmetricKey.SecondaryKey = testKey
		if err := e.Validate("p"); err != nil {
			t.Fatal(err)
		}
		p, s := e.Attestation.SymmetricKey.Keys()
		if string(p) != "catalog-test-primary-key-32bytes" || string(s) != string(p) {
			t.Fatalf("Keys() = %q, %q", p, s)
		}
	})
}

func TestTargetDeviceIDAndEnabled(t *testing.T) {
	e := individual("Reg-01")
	if e.TargetDeviceID() != "Reg-01" || !e.Enabled() {
		t.Fatalf("default: TargetDeviceID %q, Enabled %v", e.TargetDeviceID(), e.Enabled())
	}
	e.DeviceID, e.ProvisioningStatus = "dev-01", enrollment.StatusDisabled
	if e.TargetDeviceID() != "dev-01" || e.Enabled() {
		t.Fatalf("with deviceId and disabled: TargetDeviceID %q, Enabled %v", e.TargetDeviceID(), e.Enabled())
	}
}
