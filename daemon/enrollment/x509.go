package enrollment

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
)

// X509Attestation is DPS's X509Attestation: an individual enrollment lists the
// device's own certificates (clientCertificates); a group names its CA, either
// embedded (signingCertificates) or by the name of a CA certificate verified by
// proof of possession (caReferences).
type X509Attestation struct {
	ClientCertificates  *X509Certificates `json:"clientCertificates,omitempty" yaml:"clientCertificates,omitempty"`
	SigningCertificates *X509Certificates `json:"signingCertificates,omitempty" yaml:"signingCertificates,omitempty"`
	CAReferences        *X509CAReferences `json:"caReferences,omitempty" yaml:"caReferences,omitempty"`

	roots *x509.CertPool // signing certificates, built by Validate
}

// X509Certificates is a primary and an optional secondary certificate.
type X509Certificates struct {
	Primary   *X509CertificateWithInfo `json:"primary,omitempty" yaml:"primary,omitempty"`
	Secondary *X509CertificateWithInfo `json:"secondary,omitempty" yaml:"secondary,omitempty"`
}

// X509CAReferences names CA certificates known to the service.
type X509CAReferences struct {
	Primary   string `json:"primary,omitempty" yaml:"primary,omitempty"`
	Secondary string `json:"secondary,omitempty" yaml:"secondary,omitempty"`
}

// X509CertificateWithInfo is one certificate: PEM or base64 DER in
// Certificate. Info is computed by Validate (read-only in DPS's API).
type X509CertificateWithInfo struct {
	Certificate string `json:"certificate,omitempty" yaml:"certificate,omitempty"`
	// CertificateFile (catalog only) names a PEM file holding the
	// certificate, relative to the catalog.
	CertificateFile string `json:"-" yaml:"certificateFile,omitempty"`
	// Thumbprint is an edgeprov extension for individual enrollments: the
	// SHA-256 (64 hex digits) or SHA-1 (40) thumbprint of the device's
	// certificate, instead of the certificate itself.
	Thumbprint string                      `json:"thumbprint,omitempty" yaml:"thumbprint,omitempty"`
	Info       *dpsapi.X509CertificateInfo `json:"info,omitempty" yaml:"-"`

	cert  *x509.Certificate
	thumb []byte // decoded Thumbprint
}

// Certs returns the primary and secondary (nil when absent).
func (c *X509Certificates) Certs() []*X509CertificateWithInfo {
	if c == nil {
		return nil
	}
	var out []*X509CertificateWithInfo
	for _, x := range []*X509CertificateWithInfo{c.Primary, c.Secondary} {
		if x != nil {
			out = append(out, x)
		}
	}
	return out
}

// Names returns the primary and secondary names that are set.
func (r *X509CAReferences) Names() []string {
	if r == nil {
		return nil
	}
	var out []string
	for _, n := range []string{r.Primary, r.Secondary} {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
}

// Cert is the parsed certificate (nil for a thumbprint-only entry). Set by
// Validate.
func (c *X509CertificateWithInfo) Cert() *x509.Certificate { return c.cert }

// Matches reports whether leaf is this entry's certificate: the same DER, or
// the thumbprint of leaf's DER. The comparison is constant-time.
func (c *X509CertificateWithInfo) Matches(leaf *x509.Certificate) bool {
	if c == nil || leaf == nil {
		return false
	}
	switch {
	case c.cert != nil:
		a, b := sha256.Sum256(c.cert.Raw), sha256.Sum256(leaf.Raw)
		return subtle.ConstantTimeCompare(a[:], b[:]) == 1
	case len(c.thumb) == sha256.Size:
		s := sha256.Sum256(leaf.Raw)
		return subtle.ConstantTimeCompare(c.thumb, s[:]) == 1
	case len(c.thumb) == sha1.Size:
		s := sha1.Sum(leaf.Raw)
		return subtle.ConstantTimeCompare(c.thumb, s[:]) == 1
	}
	return false
}

// SigningRoots is a pool of a group's signing certificates (nil when the group
// uses caReferences). Set by Validate.
func (x *X509Attestation) SigningRoots() *x509.CertPool { return x.roots }

// MaxCertificateLen bounds one certificate in an enrollment (DER bytes).
const MaxCertificateLen = 16 << 10

// ParseCertificate reads one certificate written as PEM or as base64 DER, the
// two forms DPS accepts.
func ParseCertificate(s string) (*x509.Certificate, error) {
	s = strings.TrimSpace(s)
	var der []byte
	if strings.HasPrefix(s, "-----BEGIN") {
		b, rest := pem.Decode([]byte(s))
		if b == nil {
			return nil, errors.New("not a valid PEM block")
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block is %q, want CERTIFICATE", b.Type)
		}
		if strings.Contains(string(rest), "-----BEGIN") {
			return nil, errors.New("holds more than one PEM block; give exactly one certificate")
		}
		der = b.Bytes
	} else {
		var err error
		der, err = base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			return nil, errors.New("neither PEM nor base64 DER")
		}
	}
	if len(der) > MaxCertificateLen {
		return nil, fmt.Errorf("certificate is %d bytes, the limit is %d", len(der), MaxCertificateLen)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("not a valid X.509 certificate: %w", err)
	}
	return c, nil
}

// ValidateCAName checks the name of a CA certificate (what caReferences hold):
// 1 to 64 ASCII letters, digits, '-', '.' and '_', as DPS certificate names.
func ValidateCAName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("CA certificate name %q: want 1 to 64 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return fmt.Errorf("CA certificate name %q: character %q is not allowed (letters, digits, - . _)", name, c)
		}
	}
	return nil
}

// IsCA reports whether c may issue certificates: basic constraints with CA
// set, and certSign among its key usages when it has any.
func IsCA(c *x509.Certificate) bool {
	return c.BasicConstraintsValid && c.IsCA && (c.KeyUsage == 0 || c.KeyUsage&x509.KeyUsageCertSign != 0)
}

func (x *X509Attestation) validate(p *problems, group bool) {
	const f = "attestation.x509"
	if group {
		if x.ClientCertificates != nil {
			p.add(f+".clientCertificates", "not allowed in an enrollment group (use signingCertificates or caReferences)")
		}
		switch {
		case x.SigningCertificates != nil && x.CAReferences != nil:
			p.add(f, "give signingCertificates or caReferences, not both")
		case x.SigningCertificates != nil:
			x.roots = x509.NewCertPool()
			x.validateCerts(p, f+".signingCertificates", x.SigningCertificates, true)
		case x.CAReferences != nil:
			if x.CAReferences.Primary == "" {
				p.add(f+".caReferences.primary", "required")
			}
			for _, n := range []struct{ field, name string }{{"primary", x.CAReferences.Primary}, {"secondary", x.CAReferences.Secondary}} {
				if n.name != "" {
					if err := ValidateCAName(n.name); err != nil {
						p.add(f+".caReferences."+n.field, "%v", err)
					}
				}
			}
		default:
			p.add(f, "an X.509 enrollment group needs signingCertificates or caReferences")
		}
		return
	}
	if x.SigningCertificates != nil || x.CAReferences != nil {
		p.add(f, "an individual enrollment takes clientCertificates only (signingCertificates and caReferences are for groups)")
	}
	if x.ClientCertificates == nil {
		p.add(f+".clientCertificates", "required for an individual X.509 enrollment")
		return
	}
	x.validateCerts(p, f+".clientCertificates", x.ClientCertificates, false)
}

func (x *X509Attestation) validateCerts(p *problems, field string, cs *X509Certificates, signing bool) {
	if cs.Primary == nil {
		p.add(field+".primary", "required")
	}
	for _, e := range []struct {
		name string
		c    *X509CertificateWithInfo
	}{{"primary", cs.Primary}, {"secondary", cs.Secondary}} {
		if e.c == nil {
			continue
		}
		e.c.validate(p, field+"."+e.name, signing)
		if signing && e.c.cert != nil {
			x.roots.AddCert(e.c.cert)
		}
	}
}

func (c *X509CertificateWithInfo) validate(p *problems, field string, signing bool) {
	c.cert, c.thumb, c.Info = nil, nil, nil
	switch {
	case c.Certificate != "" && c.Thumbprint != "":
		p.add(field, "give certificate or thumbprint, not both")
		return
	case c.Thumbprint != "":
		if signing {
			p.add(field+".thumbprint", "a signing certificate must be given whole (certificate), not by thumbprint")
			return
		}
		t, err := hex.DecodeString(strings.ReplaceAll(c.Thumbprint, ":", ""))
		if err != nil || (len(t) != sha256.Size && len(t) != sha1.Size) {
			p.add(field+".thumbprint", "want the SHA-256 (64 hex digits) or SHA-1 (40 hex digits) thumbprint")
			return
		}
		c.thumb = t
		return
	case c.Certificate == "":
		// A certificateFile that gave nothing was reported by the catalog.
		if c.CertificateFile == "" {
			p.add(field+".certificate", "required")
		}
		return
	}
	cert, err := ParseCertificate(c.Certificate)
	if err != nil {
		p.add(field+".certificate", "%v", err)
		return
	}
	switch {
	case signing && !IsCA(cert):
		p.add(field+".certificate", "%q is not a CA certificate (basicConstraints CA:TRUE and keyCertSign are needed)", cert.Subject.String())
		return
	case !signing && cert.BasicConstraintsValid && cert.IsCA:
		p.add(field+".certificate", "%q is a CA certificate; a device certificate must not be (enroll the CA in a group)", cert.Subject.String())
		return
	}
	c.cert, c.Info = cert, dpsapi.NewX509CertificateInfo(cert)
}

// ClientCertificateIssuancePolicy makes edgeprov issue the device a
// certificate when it sends a CSR (DPS preview field). Lifetime and KeyTypes
// are edgeprov extensions.
type ClientCertificateIssuancePolicy struct {
	// CertificateAuthorityName, when set, must name the daemon's issuing CA.
	CertificateAuthorityName string `json:"certificateAuthorityName,omitempty" yaml:"certificateAuthorityName,omitempty"`
	// Lifetime of issued certificates, a Go duration ("720h"); default
	// DefaultIssuedLifetime. Never past the issuing CA's own expiry.
	Lifetime string `json:"lifetime,omitempty" yaml:"lifetime,omitempty"`
	// KeyTypes the CSR's key may have; default all of KeyTypes.
	KeyTypes []string `json:"keyTypes,omitempty" yaml:"keyTypes,omitempty"`

	lifetime time.Duration
}

// Key types a CSR may carry.
const (
	KeyTypeECDSAP256 = "ecdsa-p256"
	KeyTypeECDSAP384 = "ecdsa-p384"
	KeyTypeRSA2048   = "rsa-2048"
	KeyTypeRSA3072   = "rsa-3072"
	KeyTypeRSA4096   = "rsa-4096"
)

// KeyTypes are the key types edgeprov issues certificates for.
var KeyTypes = []string{KeyTypeECDSAP256, KeyTypeECDSAP384, KeyTypeRSA2048, KeyTypeRSA3072, KeyTypeRSA4096}

// Issued certificate lifetimes.
const (
	DefaultIssuedLifetime = 30 * 24 * time.Hour
	MinIssuedLifetime     = time.Hour
	MaxIssuedLifetime     = 5 * 365 * 24 * time.Hour
)

// LifetimeDuration is the parsed Lifetime (set by Validate).
func (p *ClientCertificateIssuancePolicy) LifetimeDuration() time.Duration {
	if p.lifetime == 0 {
		return DefaultIssuedLifetime
	}
	return p.lifetime
}

// AllowsKeyType reports whether a CSR key of type kt may be certified.
func (p *ClientCertificateIssuancePolicy) AllowsKeyType(kt string) bool {
	if len(p.KeyTypes) == 0 {
		for _, k := range KeyTypes {
			if k == kt {
				return true
			}
		}
		return false
	}
	for _, k := range p.KeyTypes {
		if strings.EqualFold(k, kt) {
			return true
		}
	}
	return false
}

func (p *ClientCertificateIssuancePolicy) validate(pr *problems) {
	const f = "clientCertificateIssuancePolicy"
	p.lifetime = 0
	if p.Lifetime != "" {
		d, err := time.ParseDuration(p.Lifetime)
		switch {
		case err != nil:
			pr.add(f+".lifetime", "%q is not a duration (e.g. 720h)", p.Lifetime)
		case d < MinIssuedLifetime || d > MaxIssuedLifetime:
			pr.add(f+".lifetime", "must be between %s and %s", MinIssuedLifetime, MaxIssuedLifetime)
		default:
			p.lifetime = d
		}
	}
	for i, kt := range p.KeyTypes {
		ok := false
		for _, k := range KeyTypes {
			ok = ok || strings.EqualFold(k, kt)
		}
		if !ok {
			pr.add(fmt.Sprintf("%s.keyTypes[%d]", f, i), "unknown key type %q (%s)", kt, strings.Join(KeyTypes, ", "))
		}
	}
}
