package x509chain_test

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/attestation/x509chain"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

// FuzzVerify feeds presented chains made of arbitrary certificates (any DER
// crypto/x509 parses) to Verify: it must not panic, and whatever it accepts
// must chain to the enrolled root by crypto/x509's own verification.
func FuzzVerify(f *testing.F) {
	root := testpki.NewRoot(f, "fuzz root")
	inter := root.Intermediate(f, "fuzz intermediate")
	g := x509Group(f, "fuzz", &enrollment.X509Attestation{SigningCertificates: &enrollment.X509Certificates{Primary: certEntry(root)}})
	set, err := enrollment.NewSet(nil, []*enrollment.Group{g})
	if err != nil {
		f.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root.Cert)
	f.Add(inter.Leaf(f, "fuzz-1").Cert.Raw, inter.Cert.Raw)
	f.Add(root.Leaf(f, "fuzz-1", testpki.ExtKeyUsage()).Cert.Raw, []byte{})
	f.Add(inter.Leaf(f, "fuzz-1", testpki.CAFlag()).Cert.Raw, root.Cert.Raw)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00}, []byte{0x30})
	v := &x509chain.Verifier{}
	now := time.Now()
	f.Fuzz(func(t *testing.T, leafDER, interDER []byte) {
		leaf, err := x509.ParseCertificate(leafDER)
		if err != nil {
			return
		}
		chain := []*x509.Certificate{leaf}
		if c, err := x509.ParseCertificate(interDER); err == nil {
			chain = append(chain, c)
		}
		m, err := v.Verify("0ne00000001", leaf.Subject.CommonName, chain, now, set, "")
		if err != nil {
			if !errors.Is(err, x509chain.ErrNoMatch) {
				t.Fatalf("error %v is not ErrNoMatch", err)
			}
			return
		}
		inters := x509.NewCertPool()
		for _, c := range chain[1:] {
			inters.AddCert(c)
		}
		if _, err := m.Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("accepted a chain crypto/x509 refuses: %v", err)
		}
	})
}
