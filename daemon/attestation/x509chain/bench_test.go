package x509chain_test

import (
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/attestation/x509chain"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

// BenchmarkVerifyChain is the X.509 attestation of one registration: a P-256
// leaf sent with its intermediate, verified up to the root enrolled in a group,
// among 100 X.509 groups (the lookup does not grow with them).
func BenchmarkVerifyChain(b *testing.B) {
	root := testpki.NewRoot(b, "bench root")
	inter := root.Intermediate(b, "bench intermediate")
	leaf := inter.Leaf(b, "bench-device")
	groups := []*enrollment.Group{x509Group(b, "bench", &enrollment.X509Attestation{
		SigningCertificates: &enrollment.X509Certificates{Primary: certEntry(root)}})}
	for i := range 99 {
		groups = append(groups, x509Group(b, fmt.Sprintf("other-%d", i), &enrollment.X509Attestation{
			SigningCertificates: &enrollment.X509Certificates{Primary: certEntry(testpki.NewRoot(b, fmt.Sprintf("other %d", i)))}}))
	}
	set, err := enrollment.NewSet(nil, groups)
	if err != nil {
		b.Fatal(err)
	}
	v := &x509chain.Verifier{}
	presented := []*x509.Certificate{leaf.Cert, inter.Cert}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		m, err := v.Verify(scope, "bench-device", presented, now, set, "")
		if err != nil || m.Group != groups[0] {
			b.Fatal(m, err)
		}
	}
}
