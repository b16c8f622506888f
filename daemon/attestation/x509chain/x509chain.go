// Package x509chain verifies X.509 attestation (protocol.md §5.3): the
// certificate chain a device presented in the TLS handshake (crypto/tls has
// already checked that the device holds the leaf's key) against an
// individual enrollment's certificates or an enrollment group's CA.
//
// Rules, as DPS applies them and where it says nothing, as edgeprov judges:
//   - the leaf's subject has exactly one CN, equal to the registration ID
//     (case-insensitively), itself a valid registration ID of at most 64
//     characters;
//   - the leaf is within its validity period, is not a CA, has
//     digitalSignature among its key usages when it has any, and its extended
//     key usages, when it has any, include clientAuth or anyExtendedKeyUsage
//     (DPS documents client-authentication certificates; a leaf made for
//     servers only is refused, a leaf without the extension is accepted, as
//     .NET and OpenSSL accept it);
//   - an individual enrollment for the registration ID wins over every group,
//     even when disabled, and matches the leaf by certificate or thumbprint,
//     primary or secondary;
//   - otherwise the chain must verify (crypto/x509: signatures, validity of
//     every certificate, basic constraints, path length, name constraints,
//     key usage nesting, keyCertSign of CAs with key usages) up to a group's
//     signing certificate (root or intermediate) or to a CA certificate its
//     caReferences name;
//   - a device sends at most MaxPresented certificates.
//
// Candidate groups are found from the issuers of the presented certificates
// (enrollment.Set indexes groups by their CAs' subjects), never by trying
// every group. Every failure is the one ErrNoMatch: the caller cannot tell an
// unknown device from a bad certificate.
package x509chain

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
)

// ErrNoMatch is returned when the certificate proves no enrollment: unknown
// device, bad chain, wrong CN, expired, all alike.
var ErrNoMatch = errors.New("no X.509 enrollment matches the certificate")

// MaxPresented bounds the certificates a device may send: the leaf and up to
// four intermediates.
const MaxPresented = 5

// CAs gives the usable CA certificates that groups' caReferences name.
type CAs interface {
	// CA returns the usable CA certificate named name, or nil.
	CA(scope, name string) *x509.Certificate
	// NamesBySubject returns the names of usable CA certificates whose
	// subject is rawSubject (DER).
	NamesBySubject(scope string, rawSubject []byte) []string
}

// Verifier checks presented chains.
type Verifier struct {
	// CAs resolves caReferences; nil means none are usable.
	CAs CAs

	verified chainCache
}

// Match is a verified device certificate.
type Match struct {
	Individual *enrollment.Individual
	Group      *enrollment.Group
	Leaf       *x509.Certificate
	// KeyRef names what verified it, e.g. "enrollment:dev-1#primary",
	// "group:cams#secondary", "group:cams#ca:factory-root".
	KeyRef string
}

var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// Verify checks the chain chain (leaf first, as sent) of the device
// (scope, registrationID) at time now against set. hintGroup, when set, is
// tried first among the candidate groups.
func (v *Verifier) Verify(scope, registrationID string, chain []*x509.Certificate, now time.Time, set enrollment.Lookup, hintGroup string) (*Match, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: no certificate", ErrNoMatch)
	}
	if len(chain) > MaxPresented {
		return nil, fmt.Errorf("%w: %d certificates presented, the limit is %d", ErrNoMatch, len(chain), MaxPresented)
	}
	leaf := chain[0]
	if err := checkLeaf(leaf, registrationID, now); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoMatch, err)
	}
	if set == nil {
		return nil, fmt.Errorf("%w: no enrollments in scope", ErrNoMatch)
	}
	if e := set.Individual(registrationID); e != nil {
		return matchIndividual(e, leaf)
	}
	return v.matchGroup(scope, chain, now, set, hintGroup)
}

// checkLeaf applies the rules on the device certificate itself.
func checkLeaf(leaf *x509.Certificate, registrationID string, now time.Time) error {
	n := 0
	for _, a := range leaf.Subject.Names {
		if a.Type.Equal(oidCommonName) {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("the leaf's subject has %d CNs, want exactly one", n)
	}
	cn := leaf.Subject.CommonName
	if err := dpsapi.ValidateX509RegistrationID(cn); err != nil {
		return fmt.Errorf("leaf CN %q: %w", cn, err)
	}
	if !strings.EqualFold(cn, registrationID) {
		return fmt.Errorf("leaf CN %q is not the registration ID %q", cn, registrationID)
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("leaf is valid from %s to %s, not at %s", leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	if leaf.BasicConstraintsValid && leaf.IsCA {
		return errors.New("the leaf is a CA certificate")
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return errors.New("the leaf's key usage lacks digitalSignature")
	}
	if len(leaf.ExtKeyUsage) > 0 || len(leaf.UnknownExtKeyUsage) > 0 {
		if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
			return errors.New("the leaf's extended key usage does not allow client authentication")
		}
	}
	return nil
}

func matchIndividual(e *enrollment.Individual, leaf *x509.Certificate) (*Match, error) {
	x := e.Attestation.X509
	if e.Attestation.Type != enrollment.AttestationX509 || x == nil || x.ClientCertificates == nil {
		return nil, fmt.Errorf("%w: the individual enrollment %q is not X.509", ErrNoMatch, e.RegistrationID)
	}
	for _, c := range []struct {
		name string
		c    *enrollment.X509CertificateWithInfo
	}{{"primary", x.ClientCertificates.Primary}, {"secondary", x.ClientCertificates.Secondary}} {
		if c.c.Matches(leaf) {
			return &Match{Individual: e, Leaf: leaf, KeyRef: "enrollment:" + e.RegistrationID + "#" + c.name}, nil
		}
	}
	return nil, fmt.Errorf("%w: the leaf is not the certificate of individual enrollment %q", ErrNoMatch, e.RegistrationID)
}

// candidate is a group and, for caReferences, the CA name that made it one.
type candidate struct {
	g      *enrollment.Group
	caName string
}

func (v *Verifier) candidates(scope string, chain []*x509.Certificate, set enrollment.Lookup, hintGroup string) []candidate {
	var out []candidate
	add := func(c candidate) {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	for _, c := range chain {
		for _, g := range set.X509GroupsBySubject(c.RawIssuer) {
			add(candidate{g: g})
		}
		if v.CAs == nil {
			continue
		}
		for _, name := range v.CAs.NamesBySubject(scope, c.RawIssuer) {
			for _, g := range set.X509GroupsByCAName(name) {
				add(candidate{g: g, caName: name})
			}
		}
	}
	if hintGroup != "" {
		slices.SortStableFunc(out, func(a, b candidate) int {
			ah, bh := strings.EqualFold(a.g.EnrollmentGroupID, hintGroup), strings.EqualFold(b.g.EnrollmentGroupID, hintGroup)
			switch {
			case ah && !bh:
				return -1
			case bh && !ah:
				return 1
			}
			return 0
		})
	}
	return out
}

func (v *Verifier) matchGroup(scope string, chain []*x509.Certificate, now time.Time, set enrollment.Lookup, hintGroup string) (*Match, error) {
	cands := v.candidates(scope, chain, set, hintGroup)
	if len(cands) == 0 {
		return nil, fmt.Errorf("%w: no enrollment group trusts an issuer of the chain", ErrNoMatch)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	presented := digest(chain...)
	var reasons []string
	for _, c := range cands {
		m, err := v.verifyGroup(scope, c, chain[0], inter, presented, now)
		if err == nil {
			return m, nil
		}
		reasons = append(reasons, fmt.Sprintf("group %q: %v", c.g.EnrollmentGroupID, err))
	}
	return nil, fmt.Errorf("%w: %s", ErrNoMatch, strings.Join(reasons, "; "))
}

func (v *Verifier) verifyGroup(scope string, c candidate, leaf *x509.Certificate, inter *x509.CertPool, presented [32]byte, now time.Time) (*Match, error) {
	x := c.g.Attestation.X509
	if c.g.Attestation.Type != enrollment.AttestationX509 || x == nil {
		return nil, errors.New("not an X.509 group")
	}
	roots := x.SigningRoots()
	key := chainKey{chain: presented, scope: scope, group: c.g.EnrollmentGroupID, caName: c.caName}
	if c.caName != "" {
		ca := v.CAs.CA(scope, c.caName)
		if ca == nil {
			return nil, fmt.Errorf("CA certificate %q is not usable", c.caName)
		}
		roots = x509.NewCertPool()
		roots.AddCert(ca)
		key.anchors = digest(ca)
	} else {
		var anchors []*x509.Certificate
		for _, e := range x.SigningCertificates.Certs() {
			anchors = append(anchors, e.Cert())
		}
		key.anchors = digest(anchors...)
	}
	if roots == nil {
		return nil, errors.New("no signing certificate")
	}
	if ref, ok := v.verified.get(key, now); ok {
		return &Match{Group: c.g, Leaf: leaf, KeyRef: ref}, nil
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return nil, err
	}
	ch := chains[0]
	ref := "group:" + c.g.EnrollmentGroupID
	if c.caName != "" {
		ref += "#ca:" + c.caName
	} else {
		ref += "#" + anchorName(x, ch[len(ch)-1])
	}
	v.verified.put(key, ch, ref)
	return &Match{Group: c.g, Leaf: leaf, KeyRef: ref}, nil
}

// anchorName says whether the primary or the secondary signing certificate
// anchored the chain.
func anchorName(x *enrollment.X509Attestation, anchor *x509.Certificate) string {
	if s := x.SigningCertificates.Secondary; s != nil && s.Cert() != nil && s.Cert().Equal(anchor) {
		return "secondary"
	}
	return "primary"
}
