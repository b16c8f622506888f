package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func readKey(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../../tpm/dpsauth/testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type ca struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newCA(t *testing.T, name string, parent *ca) *ca {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &ca{cert: c, key: key}
}

// tpmDirectoryName is the SAN of a TCG EK certificate: a directoryName with
// the TPM manufacturer, model and version.
func tpmDirectoryName(t *testing.T, extra ...pkix.AttributeTypeAndValue) []byte {
	t.Helper()
	rdn := pkix.RDNSequence{
		{{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 1}, Value: "id:00001014"}},
		{{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 2}, Value: "swtpm"}},
		{{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 3}, Value: "id:20191023"}},
	}
	for _, e := range extra {
		rdn = append(rdn, pkix.RelativeDistinguishedNameSET{e})
	}
	dn, err := asn1.Marshal(rdn)
	if err != nil {
		t.Fatal(err)
	}
	return generalNames(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dn})
}

func generalNames(t *testing.T, names ...asn1.RawValue) []byte {
	t.Helper()
	b, err := asn1.Marshal(names)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ekCert issues an EK certificate for pub the way TPM manufacturers do
// (and swtpm_localca), after edit changes the template.
func ekCert(t *testing.T, issuer *ca, pub crypto.PublicKey, edit func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:           x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{oidEKCertificateEKU},
		ExtraExtensions:    []pkix.Extension{{Id: oidSubjectAltName, Critical: true, Value: tpmDirectoryName(t)}},
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer.cert, pub, issuer.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pool(cas ...*ca) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cas {
		p.AddCert(c.cert)
	}
	return p
}

func TestVerifyEKCertificate(t *testing.T) {
	ek, err := dpsauth.ParseEK(readKey(t, "swtpm-ek.bin"))
	if err != nil {
		t.Fatal(err)
	}
	srk, err := dpsauth.ParseSRK(readKey(t, "swtpm-srk.bin"))
	if err != nil {
		t.Fatal(err)
	}
	root := newCA(t, "TPM Vendor Root", nil)
	intermediate := newCA(t, "TPM Vendor EK CA 01", root)
	other := newCA(t, "Another Vendor", nil)
	pub := ek.PublicKey()
	tests := []struct {
		name  string
		cert  *x509.Certificate
		roots *x509.CertPool
		at    time.Time
		want  string // "" = verifies
	}{
		{"ok/critical-tpm-san-and-ek-eku", ekCert(t, root, pub, nil), pool(root), now, ""},
		{"ok/issued-by-a-trusted-intermediate", ekCert(t, intermediate, pub, nil), pool(intermediate), now, ""},
		{"ok/one-of-several-cas", ekCert(t, intermediate, pub, nil), pool(other, intermediate), now, ""},
		{"ok/no-san-no-eku", ekCert(t, root, pub, func(c *x509.Certificate) {
			c.ExtraExtensions, c.UnknownExtKeyUsage = nil, nil
		}), pool(root), now, ""},
		{"ok/non-critical-tpm-san", ekCert(t, root, pub, func(c *x509.Certificate) { c.ExtraExtensions[0].Critical = false }), pool(root), now, ""},

		{"fail/another-ca", ekCert(t, other, pub, nil), pool(root), now, "unknown authority"},
		{"fail/intermediate-not-trusted-root-only", ekCert(t, intermediate, pub, nil), pool(root), now, "unknown authority"},
		{"fail/no-trusted-cas", ekCert(t, root, pub, nil), nil, now, "no trusted EK CA"},
		{"fail/expired", ekCert(t, root, pub, nil), pool(root), now.Add(11 * 365 * 24 * time.Hour), "expired"},
		{"fail/not-yet-valid", ekCert(t, root, pub, nil), pool(root), now.Add(-2 * time.Hour), "not yet valid"},
		{"fail/certificate-of-another-key", ekCert(t, root, srk.PublicKey(), nil), pool(root), now, "not for the presented endorsement key"},
		{"fail/critical-san-with-a-common-name", ekCert(t, root, pub, func(c *x509.Certificate) {
			c.ExtraExtensions[0].Value = tpmDirectoryName(t, pkix.AttributeTypeAndValue{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "evil"})
		}), pool(root), now, "not a TCG TPM attribute"},
		{"fail/critical-san-with-a-registered-id", ekCert(t, root, pub, func(c *x509.Certificate) {
			oid, _ := asn1.Marshal(asn1.ObjectIdentifier{1, 2, 3})
			c.ExtraExtensions[0].Value = generalNames(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 8, Bytes: oid[2:]})
		}), pool(root), now, "not only a TPM directoryName"},
		{"fail/other-unhandled-critical-extension", ekCert(t, root, pub, func(c *x509.Certificate) {
			c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{5, 0}})
		}), pool(root), now, "unhandled critical extension"},
		{"fail/eku-server-auth-only", ekCert(t, root, pub, func(c *x509.Certificate) {
			c.UnknownExtKeyUsage, c.ExtKeyUsage = nil, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		}), pool(root), now, "tcg-kp-EKCertificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := slices.Clone(tt.cert.UnhandledCriticalExtensions)
			err := verifyEKCertificate(tt.cert, tt.roots, ek, tt.at)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("verify: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("verify = %v, want an error mentioning %q", err, tt.want)
			}
			if !slices.EqualFunc(before, tt.cert.UnhandledCriticalExtensions, asn1.ObjectIdentifier.Equal) {
				t.Fatal("verify changed the caller's certificate")
			}
		})
	}

	// The trap this code exists for: Go alone refuses such a certificate.
	c := ekCert(t, root, pub, nil)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool(root), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil ||
		!strings.Contains(err.Error(), "unhandled critical extension") {
		t.Fatalf("plain x509 Verify = %v; the critical TPM SAN is expected to be unhandled by Go", err)
	}
}

// TestVerifySwtpmLocalCAEKCertificate checks an EK certificate made by the
// real tools, not by this test: swtpm_setup --create-ek-cert with
// swtpm_localca (swtpm 0.7.1), kept in testdata/swtpm-localca with its CA
// chain (CN=swtpm-localca, issued by CN=swtpm-localca-rootca).
func TestVerifySwtpmLocalCAEKCertificate(t *testing.T) {
	der, err := os.ReadFile("testdata/swtpm-localca/ek-rsa2048.der")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(cert.UnhandledCriticalExtensions, oidSubjectAltName.Equal) {
		t.Fatal("swtpm_localca's critical SAN is no longer left unhandled by Go; revisit verifyEKCertificate")
	}
	// The EK this certificate is for: the TCG template with its modulus, as
	// the TPM reports it.
	rsaPub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		t.Fatalf("EK certificate key is %T", cert.PublicKey)
	}
	tmpl := tpm2.RSAEKTemplate
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: rsaPub.N.Bytes()})
	ek, err := dpsauth.ParseEK(tpm2.Marshal(tpm2.New2B(tmpl)))
	if err != nil {
		t.Fatal(err)
	}
	other, err := dpsauth.ParseEK(readKey(t, "swtpm-ek.bin"))
	if err != nil {
		t.Fatal(err)
	}
	issuer, root := readPool(t, "swtpm-localca.pem"), readPool(t, "swtpm-localca-rootca.pem")
	both := readPool(t, "swtpm-localca.pem", "swtpm-localca-rootca.pem")
	for _, tt := range []struct {
		name  string
		roots *x509.CertPool
		ek    *dpsauth.EK
		want  string
	}{
		{"ok/issuing-ca-trusted", issuer, ek, ""},
		{"ok/issuing-and-root-ca-trusted", both, ek, ""},
		// The device sends its EK certificate only: a group must list the CA
		// that issues them, not only the root above it.
		{"fail/only-the-root-trusted", root, ek, "unknown authority"},
		{"fail/another-ek", issuer, other, "not for the presented endorsement key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := verifyEKCertificate(cert, tt.roots, tt.ek, time.Now())
			if (tt.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("verify = %v, want %q", err, tt.want)
			}
		})
	}
}

func readPool(t *testing.T, names ...string) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	for _, n := range names {
		data, err := os.ReadFile("testdata/swtpm-localca/" + n)
		if err != nil {
			t.Fatal(err)
		}
		if !p.AppendCertsFromPEM(data) {
			t.Fatalf("%s holds no certificate", n)
		}
	}
	return p
}
