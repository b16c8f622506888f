package enrollment_test

import (
	"encoding/base64"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/enrollment"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func tpmGroup(t *testing.T, id string, pems ...string) *enrollment.Group {
	t.Helper()
	g := &enrollment.Group{EnrollmentGroupID: id}
	g.Attestation = enrollment.Attestation{Type: enrollment.AttestationTPM, TPM: &enrollment.TPMAttestation{EKCACertificates: pems}}
	return g
}

func TestTPMAttestation(t *testing.T) {
	ek := base64.StdEncoding.EncodeToString(readFile(t, "../../tpm/dpsauth/testdata/swtpm-ek.bin"))
	srk := base64.StdEncoding.EncodeToString(readFile(t, "../../tpm/dpsauth/testdata/swtpm-srk.bin"))
	root := string(readFile(t, "../catalog/testdata/certs/tpm-vendor-root.pem"))
	other := string(readFile(t, "../catalog/testdata/certs/tpm-vendor-b-root.pem"))
	notCA := string(readFile(t, "../catalog/testdata/certs/not-a-ca.pem"))

	t.Run("ok/individual-keys-parsed", func(t *testing.T) {
		e := &enrollment.Individual{RegistrationID: "tpm-1"}
		e.Attestation = enrollment.Attestation{Type: enrollment.AttestationTPM, TPM: &enrollment.TPMAttestation{EndorsementKey: ek, StorageRootKey: srk}}
		if err := e.Validate("p"); err != nil {
			t.Fatal(err)
		}
		a := e.Attestation.TPM
		if a.EK() == nil || a.SRK() == nil || a.EKCAPool() != nil {
			t.Fatalf("EK parsed %v, SRK parsed %v, CA pool %v", a.EK() != nil, a.SRK() != nil, a.EKCAPool())
		}
		if id := a.EK().RegistrationID(); id != "kprmqgfo54ol6ksnhjah63hvfg7sg6gmabk5fy5imo5ybaiwjyqa" {
			t.Fatalf("registration ID derived from the EK = %s", id)
		}
	})
	t.Run("ok/group-cas-parsed-and-indexed", func(t *testing.T) {
		g := tpmGroup(t, "tpm-fleet", root+other) // one text, two certificates
		if err := g.Validate("p"); err != nil {
			t.Fatal(err)
		}
		if n := len(g.Attestation.TPM.EKCACerts()); n != 2 || g.Attestation.TPM.EKCAPool() == nil {
			t.Fatalf("%d CA certificates parsed", n)
		}
		sym := symGroup("sym", "sym-")
		if err := sym.Validate("q"); err != nil {
			t.Fatal(err)
		}
		s := mustSet(t, nil, []*enrollment.Group{sym, g})
		if got := s.TPMGroups(); !slices.Equal(got, []*enrollment.Group{g}) {
			t.Fatalf("TPMGroups = %v", got)
		}
		if got := s.SymmetricKeyCandidates("anything"); len(got) != 0 {
			t.Fatalf("a TPM group is a symmetric-key candidate: %v", got)
		}
	})
	for _, tt := range []struct {
		name string
		err  func() error
		want []string
	}{
		{"fail/group-without-cas", func() error { return tpmGroup(t, "g").Validate("p") },
			[]string{"p.attestation.tpm.ekCACertificates: required for a TPM group (an edgeprov extension: DPS has no TPM groups)"}},
		{"fail/group-with-an-ek", func() error {
			g := tpmGroup(t, "g", root)
			g.Attestation.TPM.EndorsementKey = ek
			return g.Validate("p")
		}, []string{"p.attestation.tpm: a TPM group trusts EK CA certificates (ekCACertificates), not one device's EK or SRK"}},
		{"fail/group-ca-not-a-ca", func() error { return tpmGroup(t, "g", notCA).Validate("p") },
			[]string{`p.attestation.tpm.ekCACertificates[0]: certificate "CN=Not a CA" is not a CA certificate (basicConstraints CA:TRUE and keyCertSign are needed)`}},
		{"fail/group-ca-not-pem", func() error { return tpmGroup(t, "g", root, "junk").Validate("p") },
			[]string{"p.attestation.tpm.ekCACertificates[1]: text after the last PEM certificate"}},
		{"fail/group-ca-not-a-certificate", func() error {
			return tpmGroup(t, "g", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").Validate("p")
		}, []string{`p.attestation.tpm.ekCACertificates[0]: PEM block "PUBLIC KEY" is not a CERTIFICATE`}},
		{"fail/group-without-tpm-block", func() error {
			g := &enrollment.Group{EnrollmentGroupID: "g"}
			g.Attestation.Type = enrollment.AttestationTPM
			return g.Validate("p")
		}, []string{"p.attestation.tpm.ekCACertificates: required for a TPM group (an edgeprov extension: DPS has no TPM groups)"}},
		{"fail/individual-srk-as-ek", func() error {
			e := &enrollment.Individual{RegistrationID: "t"}
			e.Attestation = enrollment.Attestation{Type: enrollment.AttestationTPM, TPM: &enrollment.TPMAttestation{EndorsementKey: srk}}
			return e.Validate("p")
		}, []string{"p.attestation.tpm.endorsementKey: dpsauth: endorsement key: key not accepted: attributes 0x00030472 lack 0x00000080 (want 0x000300b2 set)"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.err()
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Validate =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}
