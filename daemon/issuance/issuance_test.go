package issuance_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/issuance"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

func p256(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func csrDER(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func b64(der []byte) string { return base64.StdEncoding.EncodeToString(der) }

func cn(name string) *x509.CertificateRequest {
	return &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}
}

func TestParseCSR(t *testing.T) {
	good := csrDER(t, p256(t), cn("dev-1"))
	badSig := append([]byte{}, good...)
	badSig[len(badSig)-3] ^= 0xff
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name, csr, want string
	}{
		{name: "ok/p256", csr: b64(good)},
		{name: "ok/rsa-2048", csr: b64(csrDER(t, rsaKey, cn("dev-1")))},
		{name: "fail/not-base64", csr: "not base64!", want: "not base64"},
		{name: "fail/pem-armour", csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: good})), want: "without PEM armour"},
		{name: "fail/not-a-csr", csr: b64([]byte("garbage garbage")), want: "not a PKCS#10"},
		{name: "fail/a-certificate", csr: b64(testpki.NewRoot(t, "x").Cert.Raw), want: "not a PKCS#10"},
		{name: "fail/bad-signature", csr: b64(badSig), want: "signature does not verify"},
		{name: "fail/too-long", csr: strings.Repeat("A", issuance.MaxCSRLen+4), want: "longer than"},
		{name: "fail/p224", csr: b64(csrDER(t, p224, cn("dev-1"))), want: "P-224 is not supported"},
		{name: "fail/ed25519", csr: b64(csrDER(t, edKey, cn("dev-1"))), want: "ed25519.PublicKey keys are not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := issuance.ParseCSR(tt.csr)
			if tt.want == "" {
				if err != nil || c == nil {
					t.Fatalf("ParseCSR = %v", err)
				}
				return
			}
			if !errors.Is(err, issuance.ErrInvalidCSR) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseCSR = %v, want ErrInvalidCSR with %q", err, tt.want)
			}
		})
	}
}

// newCA makes an issuing CA under a root: the chain the service hands out.
func newCA(t testing.TB, key crypto.Signer, opts ...testpki.Option) (*testpki.Cert, *testpki.Cert, *issuance.Issuer) {
	t.Helper()
	year := testpki.Validity(time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour))
	root := testpki.NewRoot(t, "edgeprov issuing root", year)
	ca := root.Intermediate(t, "edgeprov issuing CA", append([]testpki.Option{testpki.Key(key), year}, opts...)...)
	iss, err := issuance.NewIssuer("", []*x509.Certificate{ca.Cert, root.Cert}, key)
	if err != nil {
		t.Fatal(err)
	}
	return root, ca, iss
}

func TestCheck(t *testing.T) {
	_, _, iss := newCA(t, p256(t))
	key := p256(t)
	parse := func(tmpl *x509.CertificateRequest, k crypto.Signer) *x509.CertificateRequest {
		c, err := issuance.ParseCSR(b64(csrDER(t, k, tmpl)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	open := &enrollment.ClientCertificateIssuancePolicy{}
	ecOnly := &enrollment.ClientCertificateIssuancePolicy{KeyTypes: []string{"ecdsa-p256"}}
	twoCN := &x509.CertificateRequest{Subject: pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
		{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "dev-1"}, {Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "dev-2"}}}}
	tests := []struct {
		name   string
		csr    *x509.CertificateRequest
		policy *enrollment.ClientCertificateIssuancePolicy
		want   error
	}{
		{"ok/cn-is-registration-id", parse(cn("dev-1"), key), open, nil},
		{"ok/cn-other-case", parse(cn("DEV-1"), key), open, nil},
		{"ok/cn-is-device-id", parse(cn("hub-device-1"), key), open, nil},
		{"ok/ca-name", parse(cn("dev-1"), key), &enrollment.ClientCertificateIssuancePolicy{CertificateAuthorityName: "EDGEPROV"}, nil},
		{"fail/no-policy", parse(cn("dev-1"), key), nil, issuance.ErrNotAllowed},
		{"fail/other-ca", parse(cn("dev-1"), key), &enrollment.ClientCertificateIssuancePolicy{CertificateAuthorityName: "other"}, issuance.ErrNotAllowed},
		{"fail/other-device", parse(cn("dev-2"), key), open, issuance.ErrInvalidCSR},
		{"fail/no-cn", parse(&x509.CertificateRequest{Subject: pkix.Name{Organization: []string{"dev-1"}}}, key), open, issuance.ErrInvalidCSR},
		{"fail/two-cns", parse(twoCN, key), open, issuance.ErrInvalidCSR},
		{"fail/dns-name", parse(&x509.CertificateRequest{Subject: pkix.Name{CommonName: "dev-1"}, DNSNames: []string{"bank.example"}}, key), open, issuance.ErrInvalidCSR},
		{"fail/email", parse(&x509.CertificateRequest{Subject: pkix.Name{CommonName: "dev-1"}, EmailAddresses: []string{"a@b.c"}}, key), open, issuance.ErrInvalidCSR},
		{"fail/key-type-not-allowed", parse(cn("dev-1"), rsaKey), ecOnly, issuance.ErrInvalidCSR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := iss.Check(tt.csr, "dev-1", "hub-device-1", tt.policy)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Check = %v, want %v", err, tt.want)
			}
		})
	}
}

// checkIssued verifies an issued chain: the device's certificate first, for
// its key and the device ID, a client-auth leaf chaining to the root.
func checkIssued(t testing.TB, chain [][]byte, root *testpki.Cert, pub crypto.PublicKey, deviceID string) *x509.Certificate {
	t.Helper()
	if len(chain) != 3 {
		t.Fatalf("chain of %d certificates, want leaf, CA, root", len(chain))
	}
	var certs []*x509.Certificate
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	leaf := certs[0]
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root.Cert)
	inter.AddCert(certs[1])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("issued certificate does not verify: %v", err)
	}
	if !certs[2].Equal(root.Cert) {
		t.Fatal("the root is not last")
	}
	if leaf.Subject.String() != "CN="+deviceID || leaf.IsCA || len(leaf.DNSNames) != 0 {
		t.Fatalf("issued %s (CA %v, SANs %v)", leaf.Subject, leaf.IsCA, leaf.DNSNames)
	}
	if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
		t.Fatal("issued for another key")
	}
	return leaf
}

func TestIssue(t *testing.T) {
	caKey := p256(t)
	root, _, iss := newCA(t, caKey)
	devKey := p256(t)
	csr, err := issuance.ParseCSR(b64(csrDER(t, devKey, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "dev-1", Organization: []string{"ignored"}},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: []byte{0x30, 0x03, 0x01, 0x01, 0xff}}}})))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	iss.Now = func() time.Time { return now }
	chain, err := iss.Issue(csr, "hub-device-1", &enrollment.ClientCertificateIssuancePolicy{})
	if err != nil {
		t.Fatal(err)
	}
	leaf := checkIssued(t, chain, root, devKey.Public(), "hub-device-1")
	if d := leaf.NotAfter.Sub(now); d < enrollment.DefaultIssuedLifetime-time.Second || d > enrollment.DefaultIssuedLifetime {
		t.Fatalf("lifetime %s, want the default %s", d, enrollment.DefaultIssuedLifetime)
	}

	// The CA's expiry caps the lifetime.
	shortKey := p256(t)
	_, shortCA, short := newCA(t, shortKey, testpki.Validity(now.Add(-time.Hour), now.Add(2*time.Hour)))
	p := &enrollment.ClientCertificateIssuancePolicy{Lifetime: "720h"}
	if err := (&enrollment.Individual{RegistrationID: "x", Common: enrollment.Common{ClientCertificateIssuancePolicy: p,
		Attestation: enrollment.Attestation{Type: "x509", X509: &enrollment.X509Attestation{ClientCertificates: &enrollment.X509Certificates{
			Primary: &enrollment.X509CertificateWithInfo{Thumbprint: strings.Repeat("ab", 32)}}}}}}).Validate("x"); err != nil {
		t.Fatal(err)
	}
	chain, err = short.Issue(csr, "dev-1", p)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(chain[0])
	if !c.NotAfter.Equal(shortCA.Cert.NotAfter) {
		t.Fatalf("NotAfter %s, want the CA's %s", c.NotAfter, shortCA.Cert.NotAfter)
	}
}

func TestNewIssuerRefuses(t *testing.T) {
	key := p256(t)
	root := testpki.NewRoot(t, "root")
	ca := root.Intermediate(t, "ca", testpki.Key(key))
	leaf := root.Leaf(t, "not-a-ca", testpki.Key(key))
	if _, err := issuance.NewIssuer("x", []*x509.Certificate{ca.Cert}, p256(t)); err == nil {
		t.Fatal("NewIssuer accepted a key that is not the CA's")
	}
	if _, err := issuance.NewIssuer("x", []*x509.Certificate{leaf.Cert}, key); err == nil {
		t.Fatal("NewIssuer accepted a leaf as CA")
	}
	if _, err := issuance.NewIssuer("x", nil, key); err == nil {
		t.Fatal("NewIssuer accepted no certificate")
	}
}

// FuzzParseCSR: the csr field is untrusted input.
func FuzzParseCSR(f *testing.F) {
	good := csrDER(f, p256(f), cn("dev-1"))
	f.Add(b64(good))
	f.Add(b64(good[:len(good)/2]))
	f.Add("MIIB")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := issuance.ParseCSR(s)
		if err != nil {
			if !errors.Is(err, issuance.ErrInvalidCSR) {
				t.Fatalf("error %v is not ErrInvalidCSR", err)
			}
			return
		}
		if err := c.CheckSignature(); err != nil {
			t.Fatalf("accepted a CSR whose signature does not verify: %v", err)
		}
	})
}
