package enrollment

import (
	"fmt"
	"slices"
	"strings"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
)

// Lookup is what the registration path asks of the enrollments of a scope. Set
// implements it; so does the composite of the catalog and the store's
// API-made enrollments.
type Lookup interface {
	// Individual returns the individual enrollment for a registration ID, or nil.
	Individual(registrationID string) *Individual
	// Group returns the group with the given ID, or nil.
	Group(id string) *Group
	// SymmetricKeyCandidates returns the symmetric-key groups a device with this
	// registration ID may belong to, most specific first.
	SymmetricKeyCandidates(registrationID string) []*Group
	// X509GroupsBySubject returns the X.509 groups with a signing certificate
	// whose subject is rawSubject (DER).
	X509GroupsBySubject(rawSubject []byte) []*Group
	// X509GroupsByCAName returns the X.509 groups whose caReferences name the
	// CA certificate name.
	X509GroupsByCAName(name string) []*Group
	// TPMGroups returns the TPM groups (an edgeprov extension): a TPM device's
	// EK certificate is checked against each one's CAs.
	TPMGroups() []*Group
}

var _ Lookup = (*Set)(nil)

// Set is an immutable, indexed snapshot of the enrollments of one ID scope.
//
// Finding a symmetric-key device's group. A SAS token does not say which group's
// key derived it, and DPS simply tries its (at most 100) groups. edgeprov narrows
// the candidates before any HMAC is computed:
//
//  1. an individual enrollment for the registration ID wins, by map lookup;
//  2. the registration service first tries the group named by the device's
//     existing registration record, so re-registrations and polls cost one group;
//  3. groups that declare registrationIdPrefixes (an edgeprov extension) are
//     indexed by prefix: the candidates are found with one map lookup per
//     distinct prefix length, whatever the number of groups;
//  4. only groups that declare no prefix ("catch-all" groups) are tried on every
//     first registration, as DPS does.
//
// So thousands of prefixed groups cost a few map lookups, and the HMAC work per
// request is bounded by the number of catch-all groups, which operators keep small.
//
// Finding an X.509 device's group. The device's chain says who issued each of
// its certificates, so no group is tried blindly: groups are indexed by the
// subject (DER) of their signing certificates and by the names in their
// caReferences, and the x509chain verifier looks up the issuer of every
// certificate the device sent (and, for caReferences, the names of the CA
// certificates with that subject). Only groups whose CA issued something in
// the chain have their chain verified.
type Set struct {
	x509BySubject map[string][]*Group
	x509ByCAName  map[string][]*Group

	individuals map[string]*Individual
	groups      map[string]*Group
	byPrefix    map[string][]*Group
	prefixLens  []int
	catchAll    []*Group
	tpmGroups   []*Group
	orderInd    []*Individual
	orderGroups []*Group
}

// NewSet indexes validated enrollments. It refuses duplicate IDs (compared
// case-insensitively, as DPS does).
func NewSet(individuals []*Individual, groups []*Group) (*Set, error) {
	s := &Set{
		individuals:   make(map[string]*Individual, len(individuals)),
		groups:        make(map[string]*Group, len(groups)),
		byPrefix:      map[string][]*Group{},
		orderInd:      individuals,
		x509BySubject: map[string][]*Group{},
		x509ByCAName:  map[string][]*Group{},
		orderGroups:   groups,
	}
	for _, e := range individuals {
		k := dpsapi.NormalizeRegistrationID(e.RegistrationID)
		if _, dup := s.individuals[k]; dup {
			return nil, fmt.Errorf("duplicate individual enrollment %q", e.RegistrationID)
		}
		s.individuals[k] = e
	}
	lens := map[int]bool{}
	for _, g := range groups {
		k := strings.ToLower(g.EnrollmentGroupID)
		if _, dup := s.groups[k]; dup {
			return nil, fmt.Errorf("duplicate enrollment group %q", g.EnrollmentGroupID)
		}
		s.groups[k] = g
		if g.Attestation.Type == AttestationTPM {
			s.tpmGroups = append(s.tpmGroups, g)
		}
		if g.Attestation.Type == AttestationX509 && g.Attestation.X509 != nil {
			s.indexX509(g)
			continue
		}
		if g.Attestation.Type != AttestationSymmetricKey {
			continue
		}
		if len(g.RegistrationIDPrefixes) == 0 {
			s.catchAll = append(s.catchAll, g)
			continue
		}
		for _, p := range g.RegistrationIDPrefixes {
			p = strings.ToLower(p)
			s.byPrefix[p] = append(s.byPrefix[p], g)
			lens[len(p)] = true
		}
	}
	for l := range lens {
		s.prefixLens = append(s.prefixLens, l)
	}
	slices.Sort(s.prefixLens)
	return s, nil
}

// Individual returns the individual enrollment for a registration ID, or nil.
func (s *Set) Individual(registrationID string) *Individual {
	if s == nil {
		return nil
	}
	return s.individuals[dpsapi.NormalizeRegistrationID(registrationID)]
}

// Group returns the group with the given ID, or nil.
func (s *Set) Group(id string) *Group {
	if s == nil {
		return nil
	}
	return s.groups[strings.ToLower(id)]
}

// SymmetricKeyCandidates returns the symmetric-key groups a device with this
// registration ID may belong to: prefix matches first (longest prefix first),
// then the catch-all groups. A group is listed once, even when several of its
// prefixes match.
func (s *Set) SymmetricKeyCandidates(registrationID string) []*Group {
	if s == nil {
		return nil
	}
	id := dpsapi.NormalizeRegistrationID(registrationID)
	var out []*Group
	for i := len(s.prefixLens) - 1; i >= 0; i-- {
		l := s.prefixLens[i]
		if l <= len(id) {
			for _, g := range s.byPrefix[id[:l]] {
				if !slices.Contains(out, g) {
					out = append(out, g)
				}
			}
		}
	}
	return append(out, s.catchAll...)
}

// TPMGroups returns the TPM groups (an edgeprov extension) in catalog order.
// A TPM device's registration ID is derived from its EK, so no prefix can
// narrow them: the device's EK certificate is checked against each group's
// CAs, which costs no key operation until a chain verifies.
func (s *Set) TPMGroups() []*Group {
	if s == nil {
		return nil
	}
	return s.tpmGroups
}

// Individuals returns the individual enrollments in catalog order.
func (s *Set) Individuals() []*Individual {
	if s == nil {
		return nil
	}
	return s.orderInd
}

// Groups returns the groups in catalog order.
func (s *Set) Groups() []*Group {
	if s == nil {
		return nil
	}
	return s.orderGroups
}

// Len is the number of entries.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.orderInd) + len(s.orderGroups)
}

func (s *Set) indexX509(g *Group) {
	x := g.Attestation.X509
	for _, c := range x.SigningCertificates.Certs() {
		if c.Cert() == nil {
			continue
		}
		k := string(c.Cert().RawSubject)
		if !slices.Contains(s.x509BySubject[k], g) {
			s.x509BySubject[k] = append(s.x509BySubject[k], g)
		}
	}
	for _, n := range x.CAReferences.Names() {
		k := strings.ToLower(n)
		if !slices.Contains(s.x509ByCAName[k], g) {
			s.x509ByCAName[k] = append(s.x509ByCAName[k], g)
		}
	}
}

// X509GroupsBySubject returns the X.509 groups with a signing certificate
// whose subject is rawSubject (DER, as in x509.Certificate.RawIssuer of the
// certificates it issued).
func (s *Set) X509GroupsBySubject(rawSubject []byte) []*Group {
	if s == nil {
		return nil
	}
	return s.x509BySubject[string(rawSubject)]
}

// X509GroupsByCAName returns the X.509 groups whose caReferences name the CA
// certificate name (case-insensitively).
func (s *Set) X509GroupsByCAName(name string) []*Group {
	if s == nil {
		return nil
	}
	return s.x509ByCAName[strings.ToLower(name)]
}
