// Package testpki builds X.509 test PKIs at test time: roots, intermediates
// and device leaves with ECDSA P-256 (or RSA) keys, and writes them as PEM
// files for the binaries and the Node SDK. Nothing here is for production:
// keys are generated fresh for every test.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Cert is a certificate with its key.
type Cert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Parent is the issuer (nil for a self-signed certificate).
	Parent *Cert
}

// Option shapes a certificate.
type Option func(*x509.Certificate, *settings)

type settings struct {
	key    crypto.Signer
	rsa    int
	signer *Cert
}

// Validity sets NotBefore and NotAfter.
func Validity(notBefore, notAfter time.Time) Option {
	return func(c *x509.Certificate, _ *settings) { c.NotBefore, c.NotAfter = notBefore, notAfter }
}

// Expired makes a certificate that expired an hour ago.
func Expired() Option {
	return Validity(time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
}

// ExtKeyUsage replaces the extended key usages (none: no extension).
func ExtKeyUsage(u ...x509.ExtKeyUsage) Option {
	return func(c *x509.Certificate, _ *settings) { c.ExtKeyUsage = u }
}

// KeyUsage replaces the key usage bits.
func KeyUsage(u x509.KeyUsage) Option {
	return func(c *x509.Certificate, _ *settings) { c.KeyUsage = u }
}

// NotCA makes a CA-shaped certificate without the CA flag.
func NotCA() Option {
	return func(c *x509.Certificate, _ *settings) { c.IsCA, c.MaxPathLen, c.MaxPathLenZero = false, 0, false }
}

// CAFlag marks a leaf as a CA.
func CAFlag() Option {
	return func(c *x509.Certificate, _ *settings) { c.IsCA, c.BasicConstraintsValid = true, true }
}

// MaxPathLen sets the CA's path length constraint (0 means zero).
func MaxPathLen(n int) Option {
	return func(c *x509.Certificate, _ *settings) { c.MaxPathLen, c.MaxPathLenZero = n, n == 0 }
}

// Key uses key instead of a fresh P-256 key.
func Key(key crypto.Signer) Option { return func(_ *x509.Certificate, s *settings) { s.key = key } }

// RSA uses a fresh RSA key of bits bits.
func RSA(bits int) Option { return func(_ *x509.Certificate, s *settings) { s.rsa = bits } }

// SignedBy signs the certificate with another CA than its parent (the
// issuer name stays the parent's): a forged signature.
func SignedBy(other *Cert) Option { return func(_ *x509.Certificate, s *settings) { s.signer = other } }

// Subject replaces the subject.
func Subject(n pkix.Name) Option { return func(c *x509.Certificate, _ *settings) { c.Subject = n } }

// DNSNames adds SANs.
func DNSNames(names ...string) Option {
	return func(c *x509.Certificate, _ *settings) { c.DNSNames = names }
}

// NewRoot makes a self-signed root CA.
func NewRoot(tb testing.TB, cn string, opts ...Option) *Cert {
	tb.Helper()
	return build(tb, caTemplate(cn), nil, opts)
}

// Intermediate makes a CA certificate issued by ca.
func (ca *Cert) Intermediate(tb testing.TB, cn string, opts ...Option) *Cert {
	tb.Helper()
	return build(tb, caTemplate(cn), ca, opts)
}

// Leaf makes a device certificate (client auth) with subject CN cn issued by
// ca.
func (ca *Cert) Leaf(tb testing.TB, cn string, opts ...Option) *Cert {
	tb.Helper()
	return build(tb, leafTemplate(cn), ca, opts)
}

// SelfSigned makes a self-signed device certificate.
func SelfSigned(tb testing.TB, cn string, opts ...Option) *Cert {
	tb.Helper()
	return build(tb, leafTemplate(cn), nil, opts)
}

func caTemplate(cn string) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"edgeprov test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            -1,
	}
}

func leafTemplate(cn string) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
}

func build(tb testing.TB, tmpl *x509.Certificate, parent *Cert, opts []Option) *Cert {
	tb.Helper()
	s := &settings{}
	for _, o := range opts {
		o(tmpl, s)
	}
	key := s.key
	if key == nil {
		var err error
		if s.rsa > 0 {
			key, err = rsa.GenerateKey(rand.Reader, s.rsa)
		} else {
			key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		tb.Fatal(err)
	}
	tmpl.SerialNumber = serial
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		tb.Fatal(err)
	}
	ski := sha1.Sum(pubDER)
	tmpl.SubjectKeyId = ski[:]
	issuer, signKey := tmpl, key
	if parent != nil {
		issuer, signKey = parent.Cert, parent.Key
	}
	if s.signer != nil {
		// crypto/x509 refuses a key that is not the parent's: give it a
		// parent with the forger's public key and the real issuer's name.
		fake := *issuer
		fake.PublicKey = s.signer.Key.Public()
		issuer, signKey = &fake, s.signer.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signKey)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &Cert{Cert: c, Key: key, Parent: parent}
}

// PEM is the certificate in PEM.
func (c *Cert) PEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw}))
}

// ChainPEM is the certificate followed by its issuers up to, not including,
// the root.
func (c *Cert) ChainPEM() string {
	out := c.PEM()
	for p := c.Parent; p != nil && p.Parent != nil; p = p.Parent {
		out += p.PEM()
	}
	return out
}

// KeyPEM is the private key, PKCS#8 PEM.
func (c *Cert) KeyPEM(tb testing.TB) string {
	tb.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		tb.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// WriteFiles writes dir/name.pem (certPEM) and dir/name.key and returns their
// paths.
func (c *Cert) WriteFiles(tb testing.TB, dir, name, certPEM string) (certFile, keyFile string) {
	tb.Helper()
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, []byte(certPEM), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(c.KeyPEM(tb)), 0o600); err != nil {
		tb.Fatal(err)
	}
	return certFile, keyFile
}
