// Package symkey verifies symmetric-key attestation: a SAS token signed with an
// individual enrollment's key or a key derived from a group key (protocol.md
// §5.1, §5.2).
package symkey

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
)

// ErrNoMatch is returned when no enrollment's key signed the token (or there is
// no enrollment): one error for both, on purpose.
var ErrNoMatch = errors.New("no symmetric-key enrollment matches the token")

// dummyKey keeps the work done for an unknown device close to that for a known
// one with a bad signature.
var dummyKey = make([]byte, 32)

// Verifier checks device SAS tokens.
type Verifier struct {
	// Skew is the clock skew tolerated on expiry.
	Skew time.Duration
}

// Match is a verified token.
type Match struct {
	Individual *enrollment.Individual
	Group      *enrollment.Group
	KeyRef     string
	DeviceKey  []byte
}

// Verify checks tok for the device (scope, registrationID) against the
// individual enrollment of that ID, else the candidate groups (hintGroup first).
func (v *Verifier) Verify(scope, registrationID string, tok *sas.Token, now time.Time, set enrollment.Lookup, hintGroup string) (*Match, error) {
	if !strings.EqualFold(tok.Resource, sas.DeviceResource(scope, registrationID)) {
		return nil, fmt.Errorf("%w: token resource %q names another device or scope", ErrNoMatch, tok.Resource)
	}
	if tok.KeyName != "" && tok.KeyName != sas.DeviceKeyName {
		return nil, fmt.Errorf("%w: skn %q", ErrNoMatch, tok.KeyName)
	}
	if err := tok.CheckExpiry(now, v.Skew); err != nil {
		return nil, err
	}
	if set == nil {
		_ = tok.Verify(dummyKey)
		return nil, ErrNoMatch
	}
	if e := set.Individual(registrationID); e != nil {
		// An individual enrollment takes precedence over any group, so a
		// disabled individual entry blocks one device inside an enabled group.
		if e.Attestation.Type != enrollment.AttestationSymmetricKey || e.Attestation.SymmetricKey == nil {
			_ = tok.Verify(dummyKey)
			return nil, ErrNoMatch
		}
		p, s := e.Attestation.SymmetricKey.Keys()
		if k, which := verifyEither(tok, p, s); k != nil {
			return &Match{Individual: e, KeyRef: "enrollment:" + e.RegistrationID + "#" + which, DeviceKey: k}, nil
		}
		return nil, ErrNoMatch
	}
	tried := false
	try := func(g *enrollment.Group) *Match {
		if g == nil || g.Attestation.Type != enrollment.AttestationSymmetricKey || g.Attestation.SymmetricKey == nil {
			return nil
		}
		tried = true
		gp, gs := g.Attestation.SymmetricKey.Keys()
		for _, id := range idForms(registrationID) {
			dp, ds := derive(gp, id), derive(gs, id)
			if k, which := verifyEither(tok, dp, ds); k != nil {
				return &Match{Group: g, KeyRef: "group:" + g.EnrollmentGroupID + "#" + which + "-derived", DeviceKey: k}
			}
		}
		return nil
	}
	if hintGroup != "" {
		if m := try(set.Group(hintGroup)); m != nil {
			return m, nil
		}
	}
	for _, g := range set.SymmetricKeyCandidates(registrationID) {
		if strings.EqualFold(g.EnrollmentGroupID, hintGroup) {
			continue
		}
		if m := try(g); m != nil {
			return m, nil
		}
	}
	if !tried {
		_ = tok.Verify(dummyKey)
	}
	return nil, ErrNoMatch
}

// idForms are the registration ID spellings a derived key may have been computed
// over: as sent, and lower-cased (DPS stores IDs lower-cased; protocol.md §11).
func idForms(id string) []string {
	if l := strings.ToLower(id); l != id {
		return []string{id, l}
	}
	return []string{id}
}

func derive(groupKey []byte, id string) []byte {
	if groupKey == nil {
		return nil
	}
	return sas.DeriveDeviceKey(groupKey, id)
}

// verifyEither returns the key (primary or secondary) that signed tok and its
// name, or nil.
func verifyEither(tok *sas.Token, primary, secondary []byte) ([]byte, string) {
	if primary != nil && tok.Verify(primary) == nil {
		return primary, "primary"
	}
	if secondary != nil && tok.Verify(secondary) == nil {
		return secondary, "secondary"
	}
	return nil, ""
}
