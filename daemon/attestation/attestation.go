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
	"github.com/edgeprov/edgeprov/daemon/attestation/x509chain"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/hub"
)

// ErrUnauthorized covers unknown devices and bad proofs alike: callers must not
// be able to tell them apart.
var ErrUnauthorized = errors.New("unauthorized")

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
}

// HubAuthType is how the hub identity authenticates: SAS for symmetric keys,
// the certificate's thumbprint for an individual X.509 enrollment, the CA for
// a group's.
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
	Now  func() time.Time
}

// Attest finds the enrollment the evidence proves membership of. hintGroup, when
// set, is tried first (the group of the device's existing record). A SAS token
// decides when present; otherwise a client certificate.
func (v *Verifier) Attest(ctx context.Context, ev Evidence, set enrollment.Lookup, hintGroup string) (*Result, error) {
	now := v.now()
	if !ev.NotExpiredAt.IsZero() {
		now = ev.NotExpiredAt
	}
	switch {
	case ev.Authorization != "":
		tok, err := sas.Parse(ev.Authorization)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
		}
		m, err := v.Symkey.Verify(ev.Scope, ev.RegistrationID, tok, now, set, hintGroup)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
		}
		return &Result{Type: enrollment.AttestationSymmetricKey, Individual: m.Individual, Group: m.Group, KeyRef: m.KeyRef, DeviceKey: m.DeviceKey}, nil
	case len(ev.ClientCerts) > 0:
		if v.X509 == nil {
			return nil, fmt.Errorf("%w: X.509 attestation is not enabled", ErrUnauthorized)
		}
		m, err := v.X509.Verify(ev.Scope, ev.RegistrationID, ev.ClientCerts, now, set, hintGroup)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
		}
		return &Result{Type: enrollment.AttestationX509, Individual: m.Individual, Group: m.Group, KeyRef: m.KeyRef, Leaf: m.Leaf}, nil
	default:
		return nil, fmt.Errorf("%w: no credentials presented", ErrUnauthorized)
	}
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}
