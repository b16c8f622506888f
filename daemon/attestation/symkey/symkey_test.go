package symkey_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/attestation/symkey"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
)

const scope = "0ne0000ABCD"

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func key(seed string) []byte {
	k := bytes.Repeat([]byte(seed), 32/len(seed)+1)
	return k[:32]
}

var (
	indPrimary, indSecondary = key("individual-primary"), key("individual-secondary")
	grpPrimary, grpSecondary = key("group-primary"), key("group-secondary")
	legacyKey                = key("legacy-group")
	fleetKey                 = key("fleet-catch-all")
)

func b64(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

func symAttestation(primary, secondary []byte) enrollment.Attestation {
	sk := &enrollment.SymmetricKeyAttestation{}
	if primary != nil {
		sk.PrimaryKey = b64(primary)
	}
	if secondary != nil {
		sk.SecondaryKey = b64(secondary)
	}
	return enrollment.Attestation{Type: enrollment.AttestationSymmetricKey, SymmetricKey: sk}
}

// fixture is a validated Set:
//   - individuals dev-ind (keys), dev-disabled (disabled), line7-tpm (TPM, inside
//     the line7 prefix), line7-own (own key, inside the line7 prefix);
//   - groups line7 (prefix line7-, both keys), sec-only (prefix sec-, secondary
//     key only), legacy (prefix old-), fleet (catch-all, disabled), cams (x509,
//     catch-all).
type fixture struct {
	set                                *enrollment.Set
	devInd, devDisabled                *enrollment.Individual
	line7, secOnly, legacy, fleet, cam *enrollment.Group
}

// swtpmEK is a real EK (tpm/dpsauth/testdata/swtpm-ek.bin): TPM enrollments
// are validated.
const swtpmEK = "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAw9jEJOEB7P6mCwtKD7+VljXQ0O5YNn7TEn7RBz0QpFX83J1JRXXEtadQ8e1+kEkxnd2i/o9eJWjhcYIl32JyNGUyi+JZJ6Sysiv0jR+XPjHNS36qJr2kfwsoWIhPZgvBabfE2id4p+Vy17p3sNqCVeeVy/5mxffF1opiWrxaNwasn4XpweQPdcnTOT6VmZz28XnpHOj83F92v8xKtnGJr/DMNdiiVB49YQ476JxZfnM2BMqv0fIQqu74p82Ebmv83Jn8J/isC2AtqUGKaYHyCCd7yKfiz9MpST89dZM2NNdA2WKzFe3OIK4y4Z7Brr92a897/VCJTNeUfyxYm1haNQ=="

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{}
	mk := func(id, status string, a enrollment.Attestation) *enrollment.Individual {
		e := &enrollment.Individual{RegistrationID: id}
		e.Attestation, e.ProvisioningStatus = a, status
		if err := e.Validate(id); err != nil {
			t.Fatal(err)
		}
		return e
	}
	mg := func(id, status string, a enrollment.Attestation, prefixes ...string) *enrollment.Group {
		g := &enrollment.Group{EnrollmentGroupID: id, RegistrationIDPrefixes: prefixes}
		g.Attestation, g.ProvisioningStatus = a, status
		if err := g.Validate(id); err != nil {
			t.Fatal(err)
		}
		return g
	}
	f.devInd = mk("Dev-Ind", "", symAttestation(indPrimary, indSecondary))
	f.devDisabled = mk("dev-disabled", enrollment.StatusDisabled, symAttestation(indPrimary, nil))
	tpm := mk("line7-tpm", "", enrollment.Attestation{Type: enrollment.AttestationTPM, TPM: &enrollment.TPMAttestation{EndorsementKey: swtpmEK}})
	own := mk("line7-own", "", symAttestation(indPrimary, nil))
	f.line7 = mg("Line7", "", symAttestation(grpPrimary, grpSecondary), "line7-")
	f.secOnly = mg("sec-only", "", symAttestation(nil, grpSecondary), "sec-")
	f.legacy = mg("legacy", "", symAttestation(legacyKey, nil), "old-")
	f.fleet = mg("fleet", enrollment.StatusDisabled, symAttestation(fleetKey, nil))
	f.cam = mg("cams", "", enrollment.Attestation{Type: enrollment.AttestationX509, X509: &enrollment.X509Attestation{CAReferences: &enrollment.X509CAReferences{Primary: "cams-ca"}}})
	var err error
	f.set, err = enrollment.NewSet(
		[]*enrollment.Individual{f.devInd, f.devDisabled, tpm, own},
		[]*enrollment.Group{f.line7, f.secOnly, f.legacy, f.fleet, f.cam},
	)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func token(t testing.TB, k []byte, resource string, expiry time.Time, skn string) *sas.Token {
	t.Helper()
	tok, err := sas.Parse(sas.Build(k, resource, expiry, skn))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestVerify(t *testing.T) {
	f := newFixture(t)
	exp := now.Add(time.Hour)
	res := func(id string) string { return sas.DeviceResource(scope, id) }
	derived := sas.DeriveDeviceKey

	type want struct {
		ind    *enrollment.Individual
		group  *enrollment.Group
		keyRef string
		key    []byte
		err    error
	}
	tests := []struct {
		name  string
		regID string // as the device sends it
		tok   *sas.Token
		set   *enrollment.Set
		hint  string
		want  want
	}{
		{"ok/individual-primary", "Dev-Ind", token(t, indPrimary, res("Dev-Ind"), exp, "registration"), f.set, "",
			want{ind: f.devInd, keyRef: "enrollment:Dev-Ind#primary", key: indPrimary}},
		{"ok/individual-secondary", "Dev-Ind", token(t, indSecondary, res("Dev-Ind"), exp, "registration"), f.set, "",
			want{ind: f.devInd, keyRef: "enrollment:Dev-Ind#secondary", key: indSecondary}},
		{"ok/individual-other-case", "DEV-IND", token(t, indPrimary, res("DEV-IND"), exp, ""), f.set, "",
			want{ind: f.devInd, keyRef: "enrollment:Dev-Ind#primary", key: indPrimary}},
		{"ok/individual-wins-over-hint", "Dev-Ind", token(t, indPrimary, res("Dev-Ind"), exp, ""), f.set, "line7",
			want{ind: f.devInd, keyRef: "enrollment:Dev-Ind#primary", key: indPrimary}},
		{"ok/disabled-individual-still-matched", "dev-disabled", token(t, indPrimary, res("dev-disabled"), exp, ""), f.set, "",
			want{ind: f.devDisabled, keyRef: "enrollment:dev-disabled#primary", key: indPrimary}},
		{"ok/group-derived-primary", "line7-0001", token(t, derived(grpPrimary, "line7-0001"), res("line7-0001"), exp, "registration"), f.set, "",
			want{group: f.line7, keyRef: "group:Line7#primary-derived", key: derived(grpPrimary, "line7-0001")}},
		{"ok/group-derived-secondary", "line7-0001", token(t, derived(grpSecondary, "line7-0001"), res("line7-0001"), exp, "registration"), f.set, "",
			want{group: f.line7, keyRef: "group:Line7#secondary-derived", key: derived(grpSecondary, "line7-0001")}},
		{"ok/group-with-secondary-key-only", "sec-01", token(t, derived(grpSecondary, "sec-01"), res("sec-01"), exp, ""), f.set, "",
			want{group: f.secOnly, keyRef: "group:sec-only#secondary-derived", key: derived(grpSecondary, "sec-01")}},
		{"ok/upper-case-id-key-derived-over-lower-case", "LINE7-0002", token(t, derived(grpPrimary, "line7-0002"), res("LINE7-0002"), exp, ""), f.set, "",
			want{group: f.line7, keyRef: "group:Line7#primary-derived", key: derived(grpPrimary, "line7-0002")}},
		{"ok/upper-case-id-key-derived-as-sent", "LINE7-0002", token(t, derived(grpPrimary, "LINE7-0002"), res("LINE7-0002"), exp, ""), f.set, "",
			want{group: f.line7, keyRef: "group:Line7#primary-derived", key: derived(grpPrimary, "LINE7-0002")}},
		{"ok/hint-group-outside-the-prefix", "line7-moved", token(t, derived(legacyKey, "line7-moved"), res("line7-moved"), exp, ""), f.set, "LEGACY",
			want{group: f.legacy, keyRef: "group:legacy#primary-derived", key: derived(legacyKey, "line7-moved")}},
		{"ok/bad-hint-falls-back-to-candidates", "line7-0003", token(t, derived(grpPrimary, "line7-0003"), res("line7-0003"), exp, ""), f.set, "no-such-group",
			want{group: f.line7, keyRef: "group:Line7#primary-derived", key: derived(grpPrimary, "line7-0003")}},
		{"ok/x509-hint-ignored", "line7-0003", token(t, derived(grpPrimary, "line7-0003"), res("line7-0003"), exp, ""), f.set, "cams",
			want{group: f.line7, keyRef: "group:Line7#primary-derived", key: derived(grpPrimary, "line7-0003")}},
		{"ok/disabled-catch-all-group-still-matched", "anything-01", token(t, derived(fleetKey, "anything-01"), res("anything-01"), exp, ""), f.set, "",
			want{group: f.fleet, keyRef: "group:fleet#primary-derived", key: derived(fleetKey, "anything-01")}},
		{"ok/expired-within-skew", "Dev-Ind", token(t, indPrimary, res("Dev-Ind"), now.Add(-4*time.Minute), ""), f.set, "",
			want{ind: f.devInd, keyRef: "enrollment:Dev-Ind#primary", key: indPrimary}},
		{"ok/scope-case-insensitive", "Dev-Ind", token(t, indPrimary, sas.DeviceResource(strings.ToLower(scope), "Dev-Ind"), exp, ""), f.set, "",
			want{ind: f.devInd, keyRef: "enrollment:Dev-Ind#primary", key: indPrimary}},

		{"fail/wrong-individual-key", "Dev-Ind", token(t, grpPrimary, res("Dev-Ind"), exp, ""), f.set, "",
			want{err: symkey.ErrNoMatch}},
		{"fail/wrong-group-key", "line7-0001", token(t, derived(legacyKey, "line7-0001"), res("line7-0001"), exp, ""), f.set, "",
			want{err: symkey.ErrNoMatch}},
		{"fail/group-key-itself-not-derived", "line7-0001", token(t, grpPrimary, res("line7-0001"), exp, ""), f.set, "",
			want{err: symkey.ErrNoMatch}},
		{"fail/key-derived-for-another-device", "line7-0001", token(t, derived(grpPrimary, "line7-0002"), res("line7-0001"), exp, ""), f.set, "",
			want{err: symkey.ErrNoMatch}},
		{"fail/group-outside-its-prefix-without-hint", "line7-moved", token(t, derived(legacyKey, "line7-moved"), res("line7-moved"), exp, ""), f.set, "",
			want{err: symkey.ErrNoMatch}},
		{"fail/expired-beyond-skew", "Dev-Ind", token(t, indPrimary, res("Dev-Ind"), now.Add(-6*time.Minute), ""), f.set, "",
			want{err: sas.ErrExpired}},
		{"fail/sr-names-another-device", "Dev-Ind", token(t, indPrimary, res("dev-disabled"), exp, ""), f.set, "",
			want{err: symkey.ErrNoMatch}},
		{"fail/sr-names-another-scope", "Dev-Ind", token(t, indPrimary, sas.DeviceResource("0ne0000ABCE", "Dev-Ind"), exp, ""), f.set, "",
			want{err: symkey.ErrNoMatch}},
		{"fail/sr-not-a-registration", "Dev-Ind", token(t, indPrimary, scope+"/enrollments/Dev-Ind", exp, ""), f.set, "",
			want{err: symkey.ErrNoMatch}},
		{"fail/skn-not-registration", "Dev-Ind", token(t, indPrimary, res("Dev-Ind"), exp, "provisioningserviceowner"), f.set, "",
			want{err: symkey.ErrNoMatch}},
		{"fail/individual-of-another-attestation-type-blocks-its-group", "line7-tpm", token(t, derived(grpPrimary, "line7-tpm"), res("line7-tpm"), exp, ""), f.set, "line7",
			want{err: symkey.ErrNoMatch}},
		{"fail/individual-with-own-key-blocks-its-group", "line7-own", token(t, derived(grpPrimary, "line7-own"), res("line7-own"), exp, ""), f.set, "",
			want{err: symkey.ErrNoMatch}},
		{"fail/no-set", "Dev-Ind", token(t, indPrimary, res("Dev-Ind"), exp, ""), nil, "",
			want{err: symkey.ErrNoMatch}},
	}
	v := &symkey.Verifier{Skew: 5 * time.Minute}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := v.Verify(scope, tt.regID, tt.tok, now, tt.set, tt.hint)
			if tt.want.err != nil {
				if !errors.Is(err, tt.want.err) {
					t.Fatalf("Verify error = %v, want %v", err, tt.want.err)
				}
				if m != nil {
					t.Fatalf("Verify returned a match with its error: %+v", m)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if m.Individual != tt.want.ind || m.Group != tt.want.group {
				t.Fatalf("matched individual %v group %v, want %v %v", m.Individual, m.Group, tt.want.ind, tt.want.group)
			}
			if m.KeyRef != tt.want.keyRef {
				t.Errorf("KeyRef = %q, want %q", m.KeyRef, tt.want.keyRef)
			}
			if !bytes.Equal(m.DeviceKey, tt.want.key) {
				t.Errorf("DeviceKey is not the key that signed the token")
			}
		})
	}
}

// BenchmarkSymmetricKeyGroupLookup measures a first registration (no hint) of a
// device of the LAST of 1,000 symmetric-key groups, through Verify: with every
// group declaring a registration ID prefix, and with every group a catch-all.
// candidates/op is the number of groups whose derived keys Verify may compute.
// catch-all-with-hint is the re-registration of the same device: the group of
// its existing record is tried first.
func BenchmarkSymmetricKeyGroupLookup(b *testing.B) {
	const n = 1000
	build := func(b *testing.B, prefixed bool) (*enrollment.Set, string, *sas.Token) {
		groups := make([]*enrollment.Group, n)
		for i := range groups {
			g := &enrollment.Group{EnrollmentGroupID: fmt.Sprintf("group-%04d", i)}
			if prefixed {
				g.RegistrationIDPrefixes = []string{fmt.Sprintf("grp%04d-", i)}
			}
			g.Attestation = symAttestation(key(fmt.Sprintf("primary-%04d", i)), key(fmt.Sprintf("secondary-%04d", i)))
			if err := g.Validate("g"); err != nil {
				b.Fatal(err)
			}
			groups[i] = g
		}
		set, err := enrollment.NewSet(nil, groups)
		if err != nil {
			b.Fatal(err)
		}
		id := fmt.Sprintf("grp%04d-device-000001", n-1)
		gk, _ := groups[n-1].Attestation.SymmetricKey.Keys()
		tok := token(b, sas.DeriveDeviceKey(gk, id), sas.DeviceResource(scope, id), now.Add(time.Hour), sas.DeviceKeyName)
		return set, id, tok
	}
	for _, bc := range []struct {
		name     string
		prefixed bool
		hint     string
	}{
		{"prefixed", true, ""},
		{"catch-all", false, ""},
		{"catch-all-with-hint", false, fmt.Sprintf("group-%04d", n-1)},
	} {
		b.Run(fmt.Sprintf("%s/groups=%d", bc.name, n), func(b *testing.B) {
			set, id, tok := build(b, bc.prefixed)
			v := &symkey.Verifier{Skew: 5 * time.Minute}
			want := set.Groups()[n-1]
			for b.Loop() {
				m, err := v.Verify(scope, id, tok, now, set, bc.hint)
				if err != nil || m.Group != want {
					b.Fatalf("Verify = %+v, %v; want the last group", m, err)
				}
			}
			if bc.hint == "" {
				b.ReportMetric(float64(len(set.SymmetricKeyCandidates(id))), "candidates/op")
			}
		})
	}
}
