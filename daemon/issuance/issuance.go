// Package issuance certifies devices' keys at registration (DPS's preview
// certificate issuance, protocol.md §2.3, §6.6): a device sends a PKCS#10 CSR,
// its enrollment's clientCertificateIssuancePolicy says whether and how it may
// be certified, and an Issuer signs a client certificate for the device ID
// with edgeprov's issuing CA, whose key is any crypto.Signer (a file, or an
// HSM through package hsm).
//
// Nothing of the CSR is copied into the certificate but its public key: the
// subject is the device ID, the extensions are edgeprov's.
package issuance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/enrollment"
)

var (
	// ErrInvalidCSR: the csr is not base64 DER PKCS#10, its signature does
	// not verify, its key is not acceptable, or it asks for a subject the
	// device may not have.
	ErrInvalidCSR = errors.New("invalid CSR")
	// ErrNotAllowed: the device's enrollment does not allow issuance (no
	// policy, or a policy naming another CA).
	ErrNotAllowed = errors.New("certificate issuance is not allowed for this enrollment")
)

// MaxCSRLen bounds the base64 csr field (an RSA-4096 CSR is under 2 KB).
const MaxCSRLen = 8 << 10

// clockSkew back-dates certificates so devices with slightly slow clocks
// accept them at once.
const clockSkew = 5 * time.Minute

// ParseCSR decodes a csr field: base64 DER PKCS#10 without PEM armour. It
// checks the CSR's signature (proof that the device holds the key).
func ParseCSR(b64 string) (*x509.CertificateRequest, error) {
	if len(b64) > MaxCSRLen {
		return nil, fmt.Errorf("%w: longer than %d characters", ErrInvalidCSR, MaxCSRLen)
	}
	der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil {
		return nil, fmt.Errorf("%w: not base64 DER (send the PKCS#10 DER in base64, without PEM armour)", ErrInvalidCSR)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: not a PKCS#10 certificate request: %w", ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: the signature does not verify: %w", ErrInvalidCSR, err)
	}
	if _, err := KeyType(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	return csr, nil
}

// KeyType names a public key as enrollment.KeyTypes do.
func KeyType(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return enrollment.KeyTypeECDSAP256, nil
		case elliptic.P384():
			return enrollment.KeyTypeECDSAP384, nil
		}
		return "", fmt.Errorf("ECDSA curve %s is not supported (P-256, P-384)", k.Curve.Params().Name)
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return enrollment.KeyTypeRSA2048, nil
		case 3072:
			return enrollment.KeyTypeRSA3072, nil
		case 4096:
			return enrollment.KeyTypeRSA4096, nil
		}
		return "", fmt.Errorf("RSA-%d keys are not supported (2048, 3072, 4096)", k.N.BitLen())
	}
	return "", fmt.Errorf("%T keys are not supported (ECDSA P-256/P-384, RSA)", pub)
}

var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// Check decides whether the device (registrationID, deviceID) may have csr
// certified under policy: the policy exists and names this issuer (or none),
// the subject is exactly one CN equal to the registration ID
// (case-insensitively) or the device ID, no subject alternative names are
// asked for, and the key type is allowed.
func (i *Issuer) Check(csr *x509.CertificateRequest, registrationID, deviceID string, policy *enrollment.ClientCertificateIssuancePolicy) error {
	if policy == nil {
		return ErrNotAllowed
	}
	if n := policy.CertificateAuthorityName; n != "" && !strings.EqualFold(n, i.Name) {
		return fmt.Errorf("%w: the enrollment names certificate authority %q, this service issues with %q", ErrNotAllowed, n, i.Name)
	}
	cns := 0
	for _, a := range csr.Subject.Names {
		if a.Type.Equal(oidCommonName) {
			cns++
		}
	}
	cn := csr.Subject.CommonName
	if cns != 1 || !(strings.EqualFold(cn, registrationID) || cn == deviceID) {
		return fmt.Errorf("%w: the subject must be CN=%s (the registration ID), not %q", ErrInvalidCSR, registrationID, csr.Subject.String())
	}
	if len(csr.DNSNames)+len(csr.EmailAddresses)+len(csr.IPAddresses)+len(csr.URIs) > 0 {
		return fmt.Errorf("%w: subject alternative names may not be requested", ErrInvalidCSR)
	}
	kt, err := KeyType(csr.PublicKey)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	if !policy.AllowsKeyType(kt) {
		return fmt.Errorf("%w: %s keys are not allowed by the enrollment's issuance policy", ErrInvalidCSR, kt)
	}
	return nil
}

// Issuer signs device certificates with an issuing CA.
type Issuer struct {
	// Name is what clientCertificateIssuancePolicy.certificateAuthorityName
	// may name.
	Name string
	// Chain is the issuing CA's certificate followed by its issuers (the
	// root last, when present).
	Chain []*x509.Certificate
	Key   crypto.Signer
	Now   func() time.Time
}

// NewIssuer checks that key is the key of chain[0] and that chain[0] is a CA.
func NewIssuer(name string, chain []*x509.Certificate, key crypto.Signer) (*Issuer, error) {
	if len(chain) == 0 {
		return nil, errors.New("issuing CA: no certificate")
	}
	ca := chain[0]
	if !enrollment.IsCA(ca) {
		return nil, fmt.Errorf("issuing CA %q is not a CA certificate (basicConstraints CA:TRUE and keyCertSign are needed)", ca.Subject.String())
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(ca.PublicKey) {
		return nil, fmt.Errorf("issuing CA %q: the key is not the certificate's key", ca.Subject.String())
	}
	if name == "" {
		name = "edgeprov"
	}
	return &Issuer{Name: name, Chain: chain, Key: key}, nil
}

// Issue signs a client certificate for deviceID with csr's public key, valid
// for the policy's lifetime (never past the CA's own expiry), and returns the
// chain to give the device: the new certificate, then Chain, all DER. Call
// Check first.
func (i *Issuer) Issue(csr *x509.CertificateRequest, deviceID string, policy *enrollment.ClientCertificateIssuancePolicy) ([][]byte, error) {
	ca := i.Chain[0]
	now := time.Now()
	if i.Now != nil {
		now = i.Now()
	}
	if !now.Before(ca.NotAfter) {
		return nil, fmt.Errorf("issuing CA %q expired on %s", ca.Subject.String(), ca.NotAfter.Format(time.RFC3339))
	}
	notAfter := now.Add(policy.LifetimeDuration())
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(csr.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	ski := sha1.Sum(pubDER) // RFC 5280 §4.2.1.2 method 1 (over the whole SPKI, as Go does for CAs)
	ku := x509.KeyUsageDigitalSignature
	if _, isRSA := csr.PublicKey.(*rsa.PublicKey); isRSA {
		ku |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{CommonName: deviceID},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              ku,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		SubjectKeyId:          ski[:],
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, csr.PublicKey, i.Key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", deviceID, err)
	}
	out := [][]byte{der}
	for _, c := range i.Chain {
		out = append(out, c.Raw)
	}
	return out, nil
}
