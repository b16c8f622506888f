package x509chain

import (
	"crypto/x509"
	"fmt"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

func group(t testing.TB, id string, ca *testpki.Cert) *enrollment.Group {
	t.Helper()
	g := &enrollment.Group{EnrollmentGroupID: id}
	g.Attestation = enrollment.Attestation{Type: enrollment.AttestationX509, X509: &enrollment.X509Attestation{
		SigningCertificates: &enrollment.X509Certificates{Primary: &enrollment.X509CertificateWithInfo{Certificate: ca.PEM()}}}}
	if err := g.Validate(id); err != nil {
		t.Fatal(err)
	}
	return g
}

// TestCandidatesFromIssuers checks that a device's groups are found from its
// chain's issuers: among 200 groups, only those whose CA issued a certificate
// of the chain are candidates, the hinted one first.
func TestCandidatesFromIssuers(t *testing.T) {
	var groups []*enrollment.Group
	var roots []*testpki.Cert
	for i := range 200 {
		r := testpki.NewRoot(t, fmt.Sprintf("root %d", i))
		roots = append(roots, r)
		groups = append(groups, group(t, fmt.Sprintf("g%d", i), r))
	}
	inter := roots[150].Intermediate(t, "line")
	groups = append(groups, group(t, "line", inter))
	set, err := enrollment.NewSet(nil, groups)
	if err != nil {
		t.Fatal(err)
	}
	v := &Verifier{}
	leaf := inter.Leaf(t, "dev")
	tests := []struct {
		name  string
		chain []*testpki.Cert
		hint  string
		want  []string
	}{
		{"ok/leaf-only", []*testpki.Cert{leaf}, "", []string{"line"}},
		{"ok/with-intermediate", []*testpki.Cert{leaf, inter}, "", []string{"line", "g150"}},
		{"ok/hint-first", []*testpki.Cert{leaf, inter}, "G150", []string{"g150", "line"}},
		{"ok/unrelated-hint-ignored", []*testpki.Cert{leaf, inter}, "g7", []string{"line", "g150"}},
		{"fail/stranger", []*testpki.Cert{testpki.NewRoot(t, "stranger").Leaf(t, "dev")}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var chain []*x509.Certificate
			for _, c := range tt.chain {
				chain = append(chain, c.Cert)
			}
			got := v.candidates("0ne00000001", chain, set, tt.hint)
			if len(got) != len(tt.want) {
				t.Fatalf("%d candidates, want %v", len(got), tt.want)
			}
			for i, c := range got {
				if c.g.EnrollmentGroupID != tt.want[i] {
					t.Fatalf("candidate %d is %s, want %v", i, c.g.EnrollmentGroupID, tt.want)
				}
			}
		})
	}
}
