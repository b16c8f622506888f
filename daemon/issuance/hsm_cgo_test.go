//go:build cgo

package issuance_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/issuance"
	"github.com/edgeprov/edgeprov/hsm"
	"github.com/edgeprov/edgeprov/testenv/softhsm"
)

var env *softhsm.Env

func TestMain(m *testing.M) {
	env = softhsm.Setup(m, "issuing-ca")
	defer env.Close()
	m.Run()
}

// hsmKey returns a P-256 key in the SoftHSM2 token (the same one for every
// caller in this process).
func hsmKey(t testing.TB, kind hsm.KeyKind, label string) crypto.Signer {
	t.Helper()
	ctx := context.Background()
	m, err := hsm.OpenURI(ctx, env.URI("issuing-ca"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	k, err := m.FindOrGenerate(ctx, kind, label)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestIssueWithHSMKey signs device certificates with CA keys that live in
// SoftHSM2 (ECDSA P-256 and RSA-2048) and checks the chains.
func TestIssueWithHSMKey(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kind  hsm.KeyKind
		label string
	}{{"ok/ecdsa-p256", hsm.ECDSAP256, "ca-ec"}, {"ok/rsa-2048", hsm.RSA2048, "ca-rsa"}} {
		t.Run(tc.name, func(t *testing.T) {
			root, _, iss := newCA(t, hsmKey(t, tc.kind, tc.label))
			devKey := p256(t)
			csr, err := issuance.ParseCSR(b64(csrDER(t, devKey, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "dev-hsm"}})))
			if err != nil {
				t.Fatal(err)
			}
			p := &enrollment.ClientCertificateIssuancePolicy{}
			if err := iss.Check(csr, "dev-hsm", "dev-hsm", p); err != nil {
				t.Fatal(err)
			}
			chain, err := iss.Issue(csr, "dev-hsm", p)
			if err != nil {
				t.Fatal(err)
			}
			checkIssued(t, chain, root, devKey.Public(), "dev-hsm")
		})
	}
}

// BenchmarkIssue is the certificate issuance of one registration (CSR
// parsed and checked, certificate signed) with the CA key in a file (crypto
// in process) and in SoftHSM2.
func BenchmarkIssue(b *testing.B) {
	csrB64 := b64(csrDER(b, p256(b), &x509.CertificateRequest{Subject: pkix.Name{CommonName: "bench-device"}}))
	p := &enrollment.ClientCertificateIssuancePolicy{}
	for _, bc := range []struct {
		name string
		key  crypto.Signer
	}{{"file-key", p256(b)}, {"softhsm2-key", hsmKey(b, hsm.ECDSAP256, "bench-ca")}} {
		b.Run(bc.name, func(b *testing.B) {
			_, _, iss := newCA(b, bc.key)
			b.ReportAllocs()
			for b.Loop() {
				csr, err := issuance.ParseCSR(csrB64)
				if err != nil {
					b.Fatal(err)
				}
				if err := iss.Check(csr, "bench-device", "bench-device", p); err != nil {
					b.Fatal(err)
				}
				if _, err := iss.Issue(csr, "bench-device", p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
