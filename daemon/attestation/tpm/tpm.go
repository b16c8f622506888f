// Package tpm verifies TPM attestation as DPS does it (protocol.md §5.4). A
// device that presents an enrolled endorsement key (EK) gets a challenge: a
// fresh key wrapped by tpm/dpsauth so that only the TPM holding that EK can
// import it. The device proves itself by signing a SAS token with that key
// inside its TPM; a successful registration then issues a new hub key,
// wrapped the same way.
//
// Beyond DPS, a TPM enrollment group trusts TPM manufacturer CAs: a device
// proves membership with the EK certificate its TPM carries, its registration
// ID is derived from the EK, and it answers the same challenge (the
// certificate alone proves nothing about who sent it).
//
// Challenges live in the store, their keys sealed (daemon/secrets), so any
// replica can verify the answer.
package tpm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/secrets"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

// Defaults.
const (
	// DefaultChallengeLifetime is how long a device has to answer a challenge,
	// and then to poll the operation its answer created. Importing the key
	// takes a TPM about 10 ms; the rest is the device's network.
	DefaultChallengeLifetime = 5 * time.Minute
	// KeySize is the size of challenge and hub keys (IoT Hub takes 16–64 bytes).
	KeySize = 32
)

var (
	// ErrNoMatch: unknown device, EK not enrolled, wrong EK, bad signature,
	// replayed answer. One error for all.
	ErrNoMatch = errors.New("no TPM enrollment matches")
	// ErrNoChallenge: a token arrived for a device that has no challenge
	// pending (it may be a symmetric-key device). Wraps ErrNoMatch.
	ErrNoChallenge = fmt.Errorf("%w: no challenge pending", ErrNoMatch)
	// ErrMalformed: the tpm object of the request is not well-formed (bad
	// base64, a TPM2B_PUBLIC that is not an RSA-2048 EK/SRK with the standard
	// template, an EK certificate that does not parse). Its message may be
	// shown to the device: it says nothing about enrollments.
	ErrMalformed = errors.New("malformed TPM attestation")
)

// ChallengeError is the outcome of a first, unauthenticated request with an
// enrolled EK: the device must import AuthenticationKey into its TPM and sign
// its next request with it.
type ChallengeError struct {
	AuthenticationKey []byte
}

func (e *ChallengeError) Error() string { return "TPM challenge issued" }

// Presented is the tpm object of a request body, decoded and parsed.
type Presented struct {
	EK     *dpsauth.EK
	SRK    *dpsauth.SRK // nil when the device sent none
	EKCert *x509.Certificate
}

// ParsePresented decodes and validates what a device sent. Errors wrap
// ErrMalformed.
func ParsePresented(a *dpsapi.TPMAttestation) (*Presented, error) {
	if a.EndorsementKey == "" {
		return nil, fmt.Errorf("%w: tpm.endorsementKey is required", ErrMalformed)
	}
	p := &Presented{}
	raw, err := decode(a.EndorsementKey, dpsauth.MaxPublicSize)
	if err != nil {
		return nil, fmt.Errorf("%w: tpm.endorsementKey: %w", ErrMalformed, err)
	}
	if p.EK, err = dpsauth.ParseEK(raw); err != nil {
		return nil, fmt.Errorf("%w: tpm.endorsementKey: %w", ErrMalformed, err)
	}
	if a.StorageRootKey != "" {
		if raw, err = decode(a.StorageRootKey, dpsauth.MaxPublicSize); err != nil {
			return nil, fmt.Errorf("%w: tpm.storageRootKey: %w", ErrMalformed, err)
		}
		if p.SRK, err = dpsauth.ParseSRK(raw); err != nil {
			return nil, fmt.Errorf("%w: tpm.storageRootKey: %w", ErrMalformed, err)
		}
	}
	if a.EndorsementKeyCertificate != "" {
		if raw, err = decode(a.EndorsementKeyCertificate, MaxEKCertificateSize); err != nil {
			return nil, fmt.Errorf("%w: tpm.endorsementKeyCertificate: %w", ErrMalformed, err)
		}
		if p.EKCert, err = x509.ParseCertificate(raw); err != nil {
			return nil, fmt.Errorf("%w: tpm.endorsementKeyCertificate: %w", ErrMalformed, err)
		}
	}
	return p, nil
}

func decode(b64 string, max int) ([]byte, error) {
	if base64.StdEncoding.DecodedLen(len(b64)) > max+2 {
		return nil, fmt.Errorf("%d base64 characters, more than the %d bytes allowed", len(b64), max)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("not valid base64: %w", err)
	}
	if len(raw) > max {
		return nil, fmt.Errorf("%d bytes, more than the %d allowed", len(raw), max)
	}
	return raw, nil
}

// Verifier issues challenges and checks their answers.
type Verifier struct {
	Store store.Store
	// Sealer seals challenge keys in the store (required).
	Sealer secrets.Sealer
	// ChallengeLifetime: DefaultChallengeLifetime when zero.
	ChallengeLifetime time.Duration
	// Skew is the clock skew tolerated on token expiry.
	Skew time.Duration
	// Rand is the source of keys and blob randomness; crypto/rand when nil.
	Rand io.Reader
}

// Match is a verified answer.
type Match struct {
	Individual *enrollment.Individual
	Group      *enrollment.Group
	// KeyRef names the hub key (issued by this registration; the hub
	// identity keeps it, sealed).
	KeyRef string
	// DeviceKey and AuthenticationKey are set for a register call: a fresh
	// hub key, and the blob that carries it to the device's TPM.
	DeviceKey         []byte
	AuthenticationKey []byte
	// Claim, set for a register call, uses the challenge up: call it once
	// the registration is going ahead. It fails (ErrNoMatch) if another call
	// used it first, which is how a replayed answer is refused.
	Claim func(context.Context) error
}

// target is the enrollment a TPM matched.
type target struct {
	individual *enrollment.Individual
	group      *enrollment.Group
}

func (t target) groupID() string {
	if t.group != nil {
		return t.group.EnrollmentGroupID
	}
	return ""
}

// Challenge answers a first request (no token) that presented p: if p's EK
// is enrolled for the device (individually, or through a TPM group by its EK
// certificate) it stores a new challenge, replacing any pending one, and
// returns a *ChallengeError; otherwise ErrNoMatch.
func (v *Verifier) Challenge(ctx context.Context, scope, registrationID string, p *Presented, set enrollment.Lookup, hintGroup string, now time.Time) error {
	if p.SRK == nil {
		// Without the SRK no blob can be built. Refused as malformed: the
		// answer must not depend on whether the EK is enrolled.
		return fmt.Errorf("%w: tpm.storageRootKey is required to answer with a challenge", ErrMalformed)
	}
	t, err := match(registrationID, p.EK, p.SRK, p.EKCert, set, hintGroup, now)
	if err != nil {
		return err
	}
	key := make([]byte, KeySize)
	defer clear(key)
	if _, err := io.ReadFull(v.rand(), key); err != nil {
		return fmt.Errorf("challenge key: %w", err)
	}
	blob, err := dpsauth.BuildAuthenticationKey(v.rand(), p.EK, p.SRK, key)
	if err != nil {
		return fmt.Errorf("challenge blob: %w", err)
	}
	regKey := dpsapi.NormalizeRegistrationID(registrationID)
	sealed, err := v.seal(key, scope, regKey)
	if err != nil {
		return err
	}
	c := &store.Challenge{Scope: scope, RegistrationID: regKey, SealedKey: sealed,
		EndorsementKey: p.EK.TPM2BPublic(), StorageRootKey: p.SRK.TPM2BPublic(),
		EnrollmentGroupID: t.groupID(), CreatedAt: now, ExpiresAt: now.Add(v.lifetime())}
	if p.EKCert != nil && t.group != nil {
		c.EKCertificate = p.EKCert.Raw
	}
	if err := v.Store.Update(ctx, func(tx store.Tx) error { return tx.PutChallenge(c) }); err != nil {
		return fmt.Errorf("store challenge: %w", err)
	}
	return &ChallengeError{AuthenticationKey: blob}
}

// Purpose says what an answer is used for.
type Purpose int

// Purposes of an answer.
const (
	// Register consumes the challenge: one registration per challenge.
	Register Purpose = iota
	// Poll reads the operation the answer created.
	Poll
	// Status reads the registration record.
	Status
)

// Answer is a token signed with a challenge key.
type Answer struct {
	Scope, RegistrationID string
	Token                 *sas.Token
	// Presented is the tpm object if the device repeated it (Node and the C
	// SDK do, aziot does not); it must name the challenged keys.
	Presented *Presented
	Purpose   Purpose
	// OperationID is the operation a register call creates or a poll reads.
	OperationID string
	// TokenTime is when the token must be valid (polls: when the operation
	// was created); Now is the time on the clock.
	TokenTime, Now time.Time
}

// dummyKey keeps the work for a device without a challenge close to that for
// a bad signature.
var dummyKey = make([]byte, KeySize)

// Verify checks an answer against the device's pending challenge. It
// returns ErrNoChallenge when there is none (the caller may try other
// mechanisms), ErrNoMatch when the answer is wrong or the enrollment no
// longer matches. For Register it issues the hub key and returns, in
// Match.Claim, the step that uses the challenge up.
func (v *Verifier) Verify(ctx context.Context, a Answer, set enrollment.Lookup) (*Match, error) {
	tok, regKey := a.Token, dpsapi.NormalizeRegistrationID(a.RegistrationID)
	var c *store.Challenge
	err := v.Store.View(ctx, func(tx store.Tx) error {
		var err error
		c, err = tx.Challenge(a.Scope, regKey, a.Now)
		return err
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		_ = tok.Verify(dummyKey)
		return nil, ErrNoChallenge
	case err != nil:
		return nil, fmt.Errorf("read challenge: %w", err)
	}
	if !strings.EqualFold(tok.Resource, sas.DeviceResource(a.Scope, a.RegistrationID)) {
		return nil, fmt.Errorf("%w: token resource %q names another device or scope", ErrNoMatch, tok.Resource)
	}
	if tok.KeyName != "" && tok.KeyName != sas.DeviceKeyName {
		return nil, fmt.Errorf("%w: skn %q", ErrNoMatch, tok.KeyName)
	}
	if err := tok.CheckExpiry(a.TokenTime, v.Skew); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoMatch, err)
	}
	key, err := v.open(c)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	if err := tok.Verify(key); err != nil {
		return nil, fmt.Errorf("%w: not signed with the challenge key: %w", ErrNoMatch, err)
	}
	// The challenged keys, and the enrollment they matched, checked again: the
	// catalog may have changed since.
	ek, err := dpsauth.ParseEK(c.EndorsementKey)
	if err != nil {
		return nil, fmt.Errorf("stored challenge EK: %w", err)
	}
	srk, err := dpsauth.ParseSRK(c.StorageRootKey)
	if err != nil {
		return nil, fmt.Errorf("stored challenge SRK: %w", err)
	}
	if p := a.Presented; p != nil && (!p.EK.Equal(ek) || (p.SRK != nil && !p.SRK.Equal(srk))) {
		return nil, fmt.Errorf("%w: the request names other TPM keys than those challenged", ErrNoMatch)
	}
	var cert *x509.Certificate
	if len(c.EKCertificate) > 0 {
		if cert, err = x509.ParseCertificate(c.EKCertificate); err != nil {
			return nil, fmt.Errorf("stored challenge EK certificate: %w", err)
		}
	}
	t, err := match(a.RegistrationID, ek, srk, cert, set, c.EnrollmentGroupID, a.Now)
	if err != nil {
		// The device proved it holds the TPM, but the enrollment is gone or
		// changed: the challenge is of no further use.
		if derr := v.Store.Update(ctx, func(tx store.Tx) error { return tx.DeleteChallenge(c.Scope, c.RegistrationID) }); derr != nil && !errors.Is(derr, store.ErrNotFound) {
			return nil, fmt.Errorf("delete stale challenge: %w", derr)
		}
		return nil, err
	}
	m := &Match{Individual: t.individual, Group: t.group}
	switch a.Purpose {
	case Register:
		if c.OperationID != "" {
			// Answered already; checked again, atomically, by Claim.
			return nil, fmt.Errorf("%w: the challenge was already answered by operation %s (replay)", ErrNoMatch, c.OperationID)
		}
		m.Claim = func(ctx context.Context) error { return v.consume(ctx, c, a) }
		m.DeviceKey = make([]byte, KeySize)
		if _, err := io.ReadFull(v.rand(), m.DeviceKey); err != nil {
			return nil, fmt.Errorf("hub key: %w", err)
		}
		if m.AuthenticationKey, err = dpsauth.BuildAuthenticationKey(v.rand(), ek, srk, m.DeviceKey); err != nil {
			return nil, fmt.Errorf("hub key blob: %w", err)
		}
		m.KeyRef = KeyRef(regKey, m.DeviceKey)
	case Poll:
		if c.OperationID == "" || c.OperationID != a.OperationID {
			return nil, fmt.Errorf("%w: the challenge key authenticates no poll of operation %q", ErrNoMatch, a.OperationID)
		}
	}
	return m, nil
}

// consume marks the challenge answered by a.OperationID, atomically: of two
// register calls with the same answer, one wins and the other is refused.
// The lifetime restarts, for the polls that follow.
func (v *Verifier) consume(ctx context.Context, c *store.Challenge, a Answer) error {
	return v.Store.Update(ctx, func(tx store.Tx) error {
		cur, err := tx.Challenge(c.Scope, c.RegistrationID, a.Now)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("%w: the challenge expired", ErrNoMatch)
		case err != nil:
			return err
		case !bytes.Equal(cur.SealedKey, c.SealedKey):
			return fmt.Errorf("%w: a newer challenge replaced the one answered", ErrNoMatch)
		case cur.OperationID != "":
			return fmt.Errorf("%w: the challenge was already answered by operation %s (replay)", ErrNoMatch, cur.OperationID)
		}
		cur.OperationID, cur.ExpiresAt = a.OperationID, a.Now.Add(v.lifetime())
		return tx.PutChallenge(cur)
	})
}

// KeyRef names a TPM device's hub key for the hub identity: issued by edgeprov
// at this device's TPM registration. The suffix is a short fingerprint, so
// that a re-registration, which issues a new key, changes the reference too.
func KeyRef(registrationID string, hubKey []byte) string {
	sum := sha256.Sum256(hubKey)
	return "tpm:" + registrationID + "#issued-" + hex.EncodeToString(sum[:4])
}

// sealContext binds a sealed challenge key to its device.
func sealContext(scope, regKey string) []byte {
	return []byte("tpm-challenge\x00" + scope + "\x00" + regKey)
}

func (v *Verifier) seal(key []byte, scope, regKey string) ([]byte, error) {
	if v.Sealer == nil {
		return nil, errors.New("tpm: no sealer for challenge keys")
	}
	sealed, err := v.Sealer.Seal(key, sealContext(scope, regKey))
	if err != nil {
		return nil, fmt.Errorf("seal challenge key: %w", err)
	}
	return sealed, nil
}

func (v *Verifier) open(c *store.Challenge) ([]byte, error) {
	if v.Sealer == nil {
		return nil, errors.New("tpm: no sealer for challenge keys")
	}
	key, err := v.Sealer.Open(c.SealedKey, sealContext(c.Scope, c.RegistrationID))
	if err != nil {
		return nil, fmt.Errorf("open challenge key of %s: %w", c.RegistrationID, err)
	}
	return key, nil
}

// match finds the enrollment of a TPM: the device's individual enrollment,
// which must name this EK (and the SRK, if it pins one); else, with an EK
// certificate, the TPM group whose CAs issued it (hintGroup first), provided
// the registration ID is the one derived from the EK.
func match(registrationID string, ek *dpsauth.EK, srk *dpsauth.SRK, cert *x509.Certificate, set enrollment.Lookup, hintGroup string, now time.Time) (target, error) {
	if set == nil {
		return target{}, fmt.Errorf("%w: no enrollments", ErrNoMatch)
	}
	if e := set.Individual(registrationID); e != nil {
		a := e.Attestation.TPM
		switch {
		case e.Attestation.Type != enrollment.AttestationTPM || a == nil || a.EK() == nil:
			return target{}, fmt.Errorf("%w: the individual enrollment is not a TPM enrollment", ErrNoMatch)
		case !a.EK().Equal(ek):
			return target{}, fmt.Errorf("%w: the endorsement key is not the enrolled one", ErrNoMatch)
		case a.SRK() != nil && !a.SRK().Equal(srk):
			return target{}, fmt.Errorf("%w: the storage root key is not the one the enrollment pins", ErrNoMatch)
		}
		return target{individual: e}, nil
	}
	if cert == nil {
		return target{}, fmt.Errorf("%w: no individual enrollment and no EK certificate", ErrNoMatch)
	}
	if dpsapi.NormalizeRegistrationID(registrationID) != ek.RegistrationID() {
		return target{}, fmt.Errorf("%w: a TPM group device's registration ID must be the one derived from its EK (%s)", ErrNoMatch, ek.RegistrationID())
	}
	groups := set.TPMGroups()
	if h := set.Group(hintGroup); h != nil && h.Attestation.Type == enrollment.AttestationTPM {
		groups = append([]*enrollment.Group{h}, slices.DeleteFunc(slices.Clone(groups), func(g *enrollment.Group) bool { return g == h })...)
	}
	var errs []error
	for _, g := range groups {
		err := verifyEKCertificate(cert, g.Attestation.TPM.EKCAPool(), ek, now)
		if err == nil {
			return target{group: g}, nil
		}
		errs = append(errs, fmt.Errorf("group %s: %w", g.EnrollmentGroupID, err))
	}
	if len(errs) == 0 {
		return target{}, fmt.Errorf("%w: no TPM enrollment group", ErrNoMatch)
	}
	return target{}, fmt.Errorf("%w: EK certificate: %w", ErrNoMatch, errors.Join(errs...))
}

func (v *Verifier) lifetime() time.Duration {
	if v.ChallengeLifetime > 0 {
		return v.ChallengeLifetime
	}
	return DefaultChallengeLifetime
}

func (v *Verifier) rand() io.Reader {
	if v.Rand != nil {
		return v.Rand
	}
	return rand.Reader
}
