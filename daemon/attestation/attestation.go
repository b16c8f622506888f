// Package attestation decides whether a device proved the identity it claims,
// and which enrollment it matched. One sub-package per mechanism; Verifier
// dispatches on the evidence the device presented.
package attestation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/edgeprov/edgeprov/daemon/attestation/symkey"
	"github.com/edgeprov/edgeprov/daemon/attestation/tpm"
	"github.com/edgeprov/edgeprov/daemon/attestation/x509chain"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/hub"
)

// ErrUnauthorized covers unknown devices and bad proofs alike: callers must not
// be able to tell them apart.
var ErrUnauthorized = errors.New("unauthorized")

// BadEvidenceError is evidence the service refuses as malformed, whatever the
// enrollments say (so its message may be shown to the device).
type BadEvidenceError struct{ Err error }

func (e *BadEvidenceError) Error() string { return e.Err.Error() }
func (e *BadEvidenceError) Unwrap() error { return e.Err }

// ChallengeError means the device must first prove that it holds its TPM:
// it imports AuthenticationKey (protocol.md §5.4.3) and signs its next
// request with the key inside.
type ChallengeError struct{ AuthenticationKey []byte }

func (e *ChallengeError) Error() string { return "TPM challenge issued" }

// Purpose says what a request wants; it matters to proofs that can be used
// once (a TPM challenge answer registers once, then only reads).
type Purpose int

// Purposes of a request.
const (
	PurposeRegister Purpose = iota
	PurposePoll
	PurposeStatus
)

// Evidence is what a device presented.
type Evidence struct {
	Scope string
	// RegistrationID as the device sent it (case preserved: derived keys are
	// computed over these bytes).
	RegistrationID string
	// Authorization is the SAS token, if any.
	Authorization string
	// ClientCerts is the certificate chain the device presented in the TLS
	// handshake (leaf first), if any; crypto/tls has checked that the device
	// holds the leaf's private key.
	ClientCerts []*x509.Certificate
	// NotExpiredAt, when set, is the time the token (or certificate) must
	// have been valid at instead of now: polls of an operation created with
	// valid credentials.
	NotExpiredAt time.Time
	// TPM is the body's tpm object, if any.
	TPM *dpsapi.TPMAttestation
	// Purpose and OperationID: the operation a register call creates or a
	// poll reads.
	Purpose     Purpose
	OperationID string
}

// Result says how the device proved itself.
type Result struct {
	Type       string
	Individual *enrollment.Individual
	Group      *enrollment.Group
	// KeyRef names the key that verified, e.g. "group:line-7#primary".
	KeyRef string
	// DeviceKey is the key the hub identity is created with (symmetric key and
	// TPM); never logged.
	DeviceKey []byte
	// Leaf is the device certificate that verified (X.509).
	Leaf *x509.Certificate
	// AuthenticationKey (TPM register calls) is the blob that carries
	// DeviceKey to the device's TPM, for the final registration state.
	AuthenticationKey []byte

	// claim uses up a single-use proof; nil for the others.
	claim func(context.Context) error
}

// Claim uses up a single-use proof once the caller has decided to act on
// it: a TPM challenge answer registers once. It fails with an error wrapping
// ErrUnauthorized when the proof was used meanwhile (a replayed answer); for
// other proofs it does nothing.
func (r *Result) Claim(ctx context.Context) error {
	if r.claim == nil {
		return nil
	}
	err := r.claim(ctx)
	if errors.Is(err, tpm.ErrNoMatch) {
		return fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	return err
}

// HubAuthType is how the hub identity authenticates: SAS for symmetric keys
// and TPM, the certificate's thumbprint for an individual X.509 enrollment,
// the CA for a group's.
func (r *Result) HubAuthType() string {
	switch {
	case r.Type != enrollment.AttestationX509:
		return hub.AuthSAS
	case r.Group != nil:
		return hub.AuthCertificateAuthority
	}
	return hub.AuthSelfSigned
}

// Common returns the matched enrollment's shared fields.
func (r *Result) Common() *enrollment.Common {
	if r.Individual != nil {
		return &r.Individual.Common
	}
	return &r.Group.Common
}

// GroupID is the matched group's ID, or "".
func (r *Result) GroupID() string {
	if r.Group != nil {
		return r.Group.EnrollmentGroupID
	}
	return ""
}

// DeviceID is the hub device ID: an individual enrollment's deviceId, else the
// registration ID.
func (r *Result) DeviceID(normalizedRegID string) string {
	if r.Individual != nil && r.Individual.DeviceID != "" {
		return r.Individual.DeviceID
	}
	return normalizedRegID
}

// Verifier dispatches evidence to the mechanism that checks it.
type Verifier struct {
	Symkey *symkey.Verifier
	// X509 verifies client certificates; nil refuses them.
	X509 *x509chain.Verifier
	// TPM is nil when TPM attestation is not offered.
	TPM *tpm.Verifier
	Now func() time.Time
}

// Attest finds the enrollment the evidence proves membership of. hintGroup, when
// set, is tried first (the group of the device's existing record). A SAS token
// decides when present (a symmetric key's, or a TPM's challenge answer);
// otherwise a client certificate; otherwise a TPM's keys, which are answered
// with a challenge. Besides ErrUnauthorized it returns a *ChallengeError (a
// TPM must answer a challenge first) and a *BadEvidenceError (malformed TPM
// keys or certificate).
func (v *Verifier) Attest(ctx context.Context, ev Evidence, set enrollment.Lookup, hintGroup string) (*Result, error) {
	now := v.now()
	tokenTime := now
	if !ev.NotExpiredAt.IsZero() {
		tokenTime = ev.NotExpiredAt
	}
	var presented *tpm.Presented
	if ev.TPM != nil && v.TPM != nil {
		var err error
		if presented, err = tpm.ParsePresented(ev.TPM); err != nil {
			return nil, &BadEvidenceError{err}
		}
	}
	switch {
	case ev.Authorization != "":
		tok, err := sas.Parse(ev.Authorization)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
		}
		if v.TPM != nil && usesTPM(set, ev.RegistrationID) {
			m, err := v.TPM.Verify(ctx, tpm.Answer{Scope: ev.Scope, RegistrationID: ev.RegistrationID, Token: tok,
				Presented: presented, Purpose: tpmPurpose[ev.Purpose], OperationID: ev.OperationID, TokenTime: tokenTime, Now: now}, set)
			switch {
			case err == nil:
				return &Result{Type: enrollment.AttestationTPM, Individual: m.Individual, Group: m.Group, KeyRef: m.KeyRef,
					DeviceKey: m.DeviceKey, AuthenticationKey: m.AuthenticationKey, claim: m.Claim}, nil
			case errors.Is(err, tpm.ErrNoChallenge) && set.Individual(ev.RegistrationID) == nil:
				// No TPM was challenged: maybe a symmetric-key group device.
			case errors.Is(err, tpm.ErrNoMatch):
				return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
			default:
				return nil, err
			}
		}
		m, err := v.Symkey.Verify(ev.Scope, ev.RegistrationID, tok, tokenTime, set, hintGroup)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
		}
		return &Result{Type: enrollment.AttestationSymmetricKey, Individual: m.Individual, Group: m.Group, KeyRef: m.KeyRef, DeviceKey: m.DeviceKey}, nil
	case len(ev.ClientCerts) > 0:
		if v.X509 == nil {
			return nil, fmt.Errorf("%w: X.509 attestation is not enabled", ErrUnauthorized)
		}
		m, err := v.X509.Verify(ev.Scope, ev.RegistrationID, ev.ClientCerts, tokenTime, set, hintGroup)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
		}
		return &Result{Type: enrollment.AttestationX509, Individual: m.Individual, Group: m.Group, KeyRef: m.KeyRef, Leaf: m.Leaf}, nil
	case presented != nil && ev.Purpose == PurposeRegister:
		err := v.TPM.Challenge(ctx, ev.Scope, ev.RegistrationID, presented, set, hintGroup, now)
		var ce *tpm.ChallengeError
		switch {
		case errors.As(err, &ce):
			return nil, &ChallengeError{AuthenticationKey: ce.AuthenticationKey}
		case errors.Is(err, tpm.ErrMalformed):
			return nil, &BadEvidenceError{err}
		case errors.Is(err, tpm.ErrNoMatch):
			return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
		}
		return nil, err
	default:
		return nil, fmt.Errorf("%w: no credentials presented", ErrUnauthorized)
	}
}

var tpmPurpose = map[Purpose]tpm.Purpose{PurposeRegister: tpm.Register, PurposePoll: tpm.Poll, PurposeStatus: tpm.Status}

// usesTPM says whether a token for the device may be a TPM challenge answer:
// its individual enrollment is a TPM one, or it has none and the scope has
// TPM groups.
func usesTPM(set enrollment.Lookup, registrationID string) bool {
	if set == nil {
		return false
	}
	if e := set.Individual(registrationID); e != nil {
		return e.Attestation.Type == enrollment.AttestationTPM
	}
	return len(set.TPMGroups()) > 0
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}
