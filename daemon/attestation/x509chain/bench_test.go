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
	presented := []*x509.Certificate{leaf.Cert, inter.Cert}
	now := time.Now()
	// first: a chain not seen before (the register call); repeat: the same
	// chain again (the device's poll), answered from the verified-chain cache.
	for _, tc := range []struct {
		name  string
		fresh bool
	}{{"first", true}, {"repeat", false}} {
		b.Run(tc.name, func(b *testing.B) {
			v := &x509chain.Verifier{}
			b.ReportAllocs()
			for b.Loop() {
				if tc.fresh {
					v = &x509chain.Verifier{}
				}
				m, err := v.Verify(scope, "bench-device", presented, now, set, "")
				if err != nil || m.Group != groups[0] {
					b.Fatal(m, err)
				}
			}
		})
	}
}
