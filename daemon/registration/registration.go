// Package registration is THE provisioning use case: Register, OperationStatus
// and RegistrationStatus. Transports (HTTPS, MQTT) decode into these requests
// and map the domain errors; every rule lives here once.
package registration

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/allocation"
	"github.com/edgeprov/edgeprov/daemon/attestation"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/daemon/issuance"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/daemon/throttle"
)

// Enrollments finds what a scope's enrollments hold for one device: its
// individual enrollment and the groups it may belong to. Lookup returns nil
// (and no error) when the scope has no enrollments; an error only when they
// could not be read.
type Enrollments interface {
	Lookup(ctx context.Context, scope, registrationID string) (enrollment.Lookup, error)
}

// TxDriver is an optional hub.Driver capability: a driver whose registry lives
// in edgeprov's own store writes the identity inside the registration's
// transaction, so record, identity and operation share one commit.
type TxDriver interface {
	EnsureDeviceTx(tx store.Tx, d hub.Device, now time.Time) error
}

// Hubs gives the current linked hubs, in config order.
type Hubs interface {
	Linked() []*hub.Linked
}

// CertIssuer certifies device keys sent as CSRs (package issuance's Issuer).
type CertIssuer interface {
	// Check decides whether the device may have csr certified under policy;
	// its errors are the device's fault (400).
	Check(csr *x509.CertificateRequest, registrationID, deviceID string, policy *enrollment.ClientCertificateIssuancePolicy) error
	// Issue returns the DER chain to give the device, its certificate first.
	Issue(csr *x509.CertificateRequest, deviceID string, policy *enrollment.ClientCertificateIssuancePolicy) ([][]byte, error)
}

// Config builds a Service.
type Config struct {
	Store       store.Store
	Enrollments Enrollments
	Hubs        Hubs
	Verifier    *attestation.Verifier
	// Issuer certifies CSRs; nil: devices that send one are refused.
	Issuer CertIssuer
	// Policies by DPS name; DefaultPolicy applies when an enrollment names none.
	Policies      map[string]allocation.Policy
	DefaultPolicy string
	// Scopes are the ID scopes this daemon serves.
	Scopes []string
	Logger *slog.Logger
	Now    func() time.Time
	// Observer receives outcomes for metrics (nil: none).
	Observer Observer
	// Throttling (all optional): per-device windows for register calls and
	// polls, and admission control bounding registrations in progress.
	RegisterLimit *throttle.Window
	PollLimit     *throttle.Window
	Admission     *throttle.Admission
}

// Service runs registrations.
type Service struct {
	cfg    Config
	scopes map[string]bool
	log    *slog.Logger
}

// New returns a Service.
func New(cfg Config) *Service {
	s := &Service{cfg: cfg, scopes: map[string]bool{}, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.cfg.Now == nil {
		s.cfg.Now = time.Now
	}
	if s.cfg.Observer == nil {
		s.cfg.Observer = nopObserver{}
	}
	if s.cfg.DefaultPolicy == "" {
		s.cfg.DefaultPolicy = enrollment.AllocationHashed
	}
	for _, sc := range cfg.Scopes {
		s.scopes[dpsapi.NormalizeIDScope(sc)] = true
	}
	return s
}

// RegisterRequest is a device's register call.
type RegisterRequest struct {
	Scope          string // from the path or MQTT username
	RegistrationID string // from the path or MQTT username, case as sent
	// APIVersion is the device API version asked for ("" when absent); a
	// csr is accepted only with an issuance version (dpsapi.AllowsCSR).
	APIVersion    string
	Body          dpsapi.DeviceRegistration
	Authorization string
	// ClientCerts is the chain the device presented in the TLS handshake,
	// leaf first (nil when none).
	ClientCerts []*x509.Certificate
}

// PollRequest is an operation status poll.
type PollRequest struct {
	Scope, RegistrationID, OperationID string
	Authorization                      string
	ClientCerts                        []*x509.Certificate
}

// StatusRequest is the registration status lookup (POST /{scope}/registrations/{id}).
type StatusRequest struct {
	Scope, RegistrationID string
	Body                  dpsapi.DeviceRegistration
	Authorization         string
	ClientCerts           []*x509.Certificate
}

// Register runs the pipeline of DESIGN.md and answers "assigning" with an
// operation ID; the outcome is durable in the store before this returns, so the
// first poll sees the final state.
func (s *Service) Register(ctx context.Context, req RegisterRequest) (*dpsapi.RegistrationOperationStatus, error) {
	scope, key, err := s.target(req.Scope, req.RegistrationID)
	if err != nil {
		return nil, err
	}
	if b := req.Body.RegistrationID; b != "" && !strings.EqualFold(b, req.RegistrationID) {
		return nil, badRequest(dpsapi.CodeIDMismatch, "registrationId %q in the body differs from %q in the request path", b, req.RegistrationID)
	}
	csr, err := s.parseCSR(req)
	if err != nil {
		return nil, err
	}
	prev, err := s.previousRecord(ctx, scope, key)
	if err != nil {
		return nil, err
	}
	hint := ""
	if prev != nil {
		hint = prev.EnrollmentGroupID
	}

	// Admission control before any key work, so an overload cannot pile up
	// HMACs; a burst waits for a slot rather than failing.
	release, err := s.cfg.Admission.Acquire(ctx)
	if err != nil {
		if errors.Is(err, throttle.ErrBusy) {
			return nil, &ThrottledError{RetryAfter: 5 * time.Second, Reason: "too many registrations in progress"}
		}
		return nil, err
	}
	defer release()

	// 1–2. Find the enrollment and attest. A TPM without a token gets its
	// challenge here (a *TPMChallengeError).
	started := time.Now()
	opID := newOperationID()
	res, err := s.attest(ctx, attestation.Evidence{Scope: scope, RegistrationID: req.RegistrationID, Authorization: req.Authorization,
		ClientCerts: req.ClientCerts, TPM: req.Body.TPM, Purpose: attestation.PurposeRegister, OperationID: opID}, hint)
	if err != nil {
		if errors.As(err, new(*TPMChallengeError)) {
			s.cfg.Observer.Registered(enrollment.AttestationTPM, "", "", "challenge", time.Since(started))
		} else {
			s.cfg.Observer.Registered("unknown", "", "", "unauthorized", time.Since(started))
		}
		return nil, err
	}
	// Per-device limits apply after attestation, so nobody can use up another
	// device's budget by sending its registration ID.
	if ok, wait := s.cfg.RegisterLimit.Allow(scope+"/"+key, s.cfg.Now()); !ok {
		return nil, &ThrottledError{RetryAfter: wait, Reason: "registering too often"}
	}
	if csr != nil {
		// Asked only now: whether the enrollment allows issuance is not told
		// to devices that did not prove who they are.
		if err := s.checkCSR(csr, req.RegistrationID, res.DeviceID(key), res); err != nil {
			return nil, err
		}
	}
	// A single-use proof (a TPM challenge answer) is used up only now, so a
	// throttled device can send the same answer again; a replay stops here.
	if err := res.Claim(ctx); err != nil {
		if errors.Is(err, attestation.ErrUnauthorized) {
			s.log.LogAttrs(ctx, slog.LevelInfo, "attestation refused", slog.String("scope", scope),
				slog.String("registrationId", req.RegistrationID), slog.String("reason", err.Error()))
			s.cfg.Observer.Registered(res.Type, "", "", "unauthorized", time.Since(started))
			return nil, ErrUnauthorized
		}
		return nil, fmt.Errorf("claim the attestation of %s: %w", key, err)
	}

	now := s.cfg.Now().UTC()
	op := &store.Operation{Scope: scope, ID: opID, RegistrationID: key, CreatedAt: now, UpdatedAt: now,
		Attestation: res.Type, EnrollmentGroupID: res.GroupID()}
	var rec *store.Record
	var inTx func(store.Tx) error
	var after func(context.Context)

	// 3. Refuse disabled enrollments (an individual entry inside a group wins),
	// and take away the access a registered device had on its hub.
	if c := res.Common(); !c.Enabled() {
		s.fail(op, dpsapi.CodeEnrollmentDisabled, "The enrollment is disabled.")
		s.revoke(ctx, res, prev)
	} else if rec, inTx, after, err = s.assign(ctx, scope, key, req, res, prev, now, csr != nil); err != nil {
		var fe *failure
		if !errors.As(err, &fe) {
			return nil, err
		}
		s.fail(op, fe.code, fe.msg)
	} else {
		op.Status = dpsapi.StatusAssigned
		op.Result = resultOf(rec)
		if csr != nil {
			// The chain goes to the operation only: it is the device's to
			// read once, not part of the registration record.
			chain, err := s.cfg.Issuer.Issue(csr, rec.DeviceID, res.Common().ClientCertificateIssuancePolicy)
			if err != nil {
				return nil, fmt.Errorf("issue certificate for %s: %w", key, err)
			}
			for _, der := range chain {
				op.Result.IssuedCertificateChain = append(op.Result.IssuedCertificateChain, base64.StdEncoding.EncodeToString(der))
			}
		}
		if res.AuthenticationKey != nil {
			// The hub key, wrapped to the device's TPM: only in the operation,
			// which the device polls (§5.4.1 step 6).
			op.Result.TPM = &dpsapi.TPMRegistrationResult{AuthenticationKey: base64.StdEncoding.EncodeToString(res.AuthenticationKey)}
		}
	}

	// 6. The record and the operation become durable together, before the device
	// can read "assigned".
	if err := s.cfg.Store.Update(ctx, func(tx store.Tx) error {
		if inTx != nil {
			if err := inTx(tx); err != nil {
				return err
			}
		}
		if rec != nil {
			if err := tx.PutRecord(rec); err != nil {
				return err
			}
		}
		return tx.PutOperation(op)
	}); err != nil {
		return nil, fmt.Errorf("store registration of %s: %w", key, err)
	}
	if after != nil {
		after(ctx)
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "registration", slog.String("scope", scope), slog.String("registrationId", key),
		slog.String("attestation", res.Type), slog.String("enrollmentGroupId", res.GroupID()), slog.String("status", op.Status),
		slog.String("operationId", op.ID), slog.String("hub", assignedHub(rec)))
	s.cfg.Observer.Registered(res.Type, enrollmentName(res), assignedHub(rec), op.Status, time.Since(started))
	return &dpsapi.RegistrationOperationStatus{OperationID: op.ID, Status: dpsapi.StatusAssigning}, nil
}

// failure is an outcome that ends the operation as failed (not a request error).
type failure struct {
	code int
	msg  string
}

func (f *failure) Error() string { return f.msg }

func (s *Service) fail(op *store.Operation, code int, msg string) {
	op.Status = dpsapi.StatusFailed
	op.Result = &dpsapi.DeviceRegistrationResult{RegistrationID: op.RegistrationID, Status: dpsapi.StatusFailed,
		ErrorCode: code, ErrorMessage: msg, LastUpdatedDateTimeUTC: dpsapi.NewTime(op.UpdatedAt)}
}

// OperationStatus answers a poll: the caller must prove the same identity as
// for the register call.
func (s *Service) OperationStatus(ctx context.Context, req PollRequest) (*dpsapi.RegistrationOperationStatus, error) {
	scope, key, err := s.target(req.Scope, req.RegistrationID)
	if err != nil {
		return nil, err
	}
	var op *store.Operation
	err = s.cfg.Store.View(ctx, func(tx store.Tx) error {
		var err error
		op, err = tx.Operation(scope, req.OperationID)
		return err
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("read operation: %w", err)
	}
	ev := attestation.Evidence{Scope: scope, RegistrationID: req.RegistrationID, Authorization: req.Authorization, ClientCerts: req.ClientCerts,
		Purpose: attestation.PurposePoll, OperationID: req.OperationID}
	hint := ""
	if op != nil && op.RegistrationID == key {
		// Tokens may have expired since the register call (aziot's live 30 s and
		// are reused for every poll): they must have been valid when it was made.
		ev.NotExpiredAt, hint = op.CreatedAt, op.EnrollmentGroupID
	}
	if _, err := s.attest(ctx, ev, hint); err != nil {
		return nil, err
	}
	if ok, wait := s.cfg.PollLimit.Allow(scope+"/"+key, s.cfg.Now()); !ok {
		return nil, &ThrottledError{RetryAfter: wait, Reason: "polling too often"}
	}
	if op == nil || op.RegistrationID != key {
		return nil, fmt.Errorf("operation %q of %s: %w", req.OperationID, key, ErrNotFound)
	}
	out := &dpsapi.RegistrationOperationStatus{OperationID: op.ID, Status: op.Status, RegistrationState: op.Result}
	if op.Result == nil {
		out.RegistrationState = &dpsapi.DeviceRegistrationResult{RegistrationID: key, Status: op.Status}
	}
	return out, nil
}

// RegistrationStatus returns the device's registration record.
func (s *Service) RegistrationStatus(ctx context.Context, req StatusRequest) (*dpsapi.DeviceRegistrationResult, error) {
	scope, key, err := s.target(req.Scope, req.RegistrationID)
	if err != nil {
		return nil, err
	}
	if b := req.Body.RegistrationID; b != "" && !strings.EqualFold(b, req.RegistrationID) {
		return nil, badRequest(dpsapi.CodeIDMismatch, "registrationId %q in the body differs from %q in the request path", b, req.RegistrationID)
	}
	if req.Body.CSR != "" {
		return nil, badRequest(dpsapi.CodeInvalidCSR, "csr may not be sent to the registration status lookup")
	}
	prev, err := s.previousRecord(ctx, scope, key)
	if err != nil {
		return nil, err
	}
	hint := ""
	if prev != nil {
		hint = prev.EnrollmentGroupID
	}
	if _, err := s.attest(ctx, attestation.Evidence{Scope: scope, RegistrationID: req.RegistrationID, Authorization: req.Authorization,
		ClientCerts: req.ClientCerts, TPM: req.Body.TPM, Purpose: attestation.PurposeStatus}, hint); err != nil {
		return nil, err
	}
	if prev == nil {
		return nil, fmt.Errorf("registration of %s: %w", key, ErrNotFound)
	}
	return resultOf(prev), nil
}

// target validates the scope and registration ID from the path. An unknown (but
// well-formed) scope is unauthorized, like an unknown device.
func (s *Service) target(scope, regID string) (string, string, error) {
	if err := dpsapi.ValidateIDScope(scope); err != nil {
		return "", "", badRequest(dpsapi.CodeBadRequest, "%v", err)
	}
	if err := dpsapi.ValidateRegistrationID(regID); err != nil {
		return "", "", badRequest(dpsapi.CodeInvalidRegistration, "%v", err)
	}
	scope = dpsapi.NormalizeIDScope(scope)
	if !s.scopes[scope] {
		return "", "", fmt.Errorf("scope %s is not served here: %w", scope, ErrUnauthorized)
	}
	return scope, dpsapi.NormalizeRegistrationID(regID), nil
}

func (s *Service) attest(ctx context.Context, ev attestation.Evidence, hint string) (*attestation.Result, error) {
	set, err := s.cfg.Enrollments.Lookup(ctx, ev.Scope, ev.RegistrationID)
	if err != nil {
		return nil, fmt.Errorf("look up enrollments of %s: %w", ev.RegistrationID, err)
	}
	res, err := s.cfg.Verifier.Attest(ctx, ev, set, hint)
	var challenge *attestation.ChallengeError
	var bad *attestation.BadEvidenceError
	switch {
	case err == nil:
		return res, nil
	case errors.As(err, &challenge):
		s.log.LogAttrs(ctx, slog.LevelInfo, "TPM challenge issued", slog.String("scope", ev.Scope), slog.String("registrationId", ev.RegistrationID))
		return nil, &TPMChallengeError{AuthenticationKey: challenge.AuthenticationKey}
	case errors.As(err, &bad):
		return nil, badRequest(dpsapi.CodeInvalidAttestation, "%v", bad.Err)
	case errors.Is(err, attestation.ErrUnauthorized):
		// The reason goes to the log only: the caller sees one answer.
		s.log.LogAttrs(ctx, slog.LevelInfo, "attestation refused", slog.String("scope", ev.Scope),
			slog.String("registrationId", ev.RegistrationID), slog.String("reason", err.Error()))
		return nil, ErrUnauthorized
	}
	return nil, fmt.Errorf("attest %s: %w", ev.RegistrationID, err)
}

func (s *Service) previousRecord(ctx context.Context, scope, key string) (*store.Record, error) {
	var rec *store.Record
	err := s.cfg.Store.View(ctx, func(tx store.Tx) error {
		r, err := tx.Record(scope, key)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		rec = r
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read registration of %s: %w", key, err)
	}
	return rec, nil
}

func resultOf(r *store.Record) *dpsapi.DeviceRegistrationResult {
	out := &dpsapi.DeviceRegistrationResult{RegistrationID: r.RegistrationID, CreatedDateTimeUTC: dpsapi.NewTime(r.CreatedAt),
		AssignedHub: r.AssignedHub, DeviceID: r.DeviceID, Status: r.Status, Substatus: r.Substatus,
		LastUpdatedDateTimeUTC: dpsapi.NewTime(r.UpdatedAt), ETag: r.ETag, Payload: r.Payload}
	switch r.Attestation {
	case enrollment.AttestationSymmetricKey:
		out.SymmetricKey = &dpsapi.SymmetricKeyRegistrationResult{EnrollmentGroupID: r.EnrollmentGroupID}
	case enrollment.AttestationX509:
		out.X509 = &dpsapi.X509RegistrationResult{EnrollmentGroupID: r.EnrollmentGroupID, CertificateInfo: r.CertificateInfo}
	}
	return out
}

// parseCSR reads the csr of a register call (400 when it cannot be used).
// Other API versions than the issuance previews refuse it, as DPS does, so a
// device never believes it asked for a certificate the service ignored.
func (s *Service) parseCSR(req RegisterRequest) (*x509.CertificateRequest, error) {
	if req.Body.CSR == "" {
		return nil, nil
	}
	if !dpsapi.AllowsCSR(req.APIVersion) {
		return nil, badRequest(dpsapi.CodeInvalidCSR, "csr requires api-version=%s (or %s)", dpsapi.APIVersionIssuance, dpsapi.APIVersionIssuanceLegacy)
	}
	csr, err := issuance.ParseCSR(req.Body.CSR)
	if err != nil {
		return nil, badRequest(dpsapi.CodeInvalidCSR, "%v", err)
	}
	return csr, nil
}

func (s *Service) checkCSR(csr *x509.CertificateRequest, regID, deviceID string, res *attestation.Result) error {
	if s.cfg.Issuer == nil {
		return badRequest(dpsapi.CodeInvalidCSR, "%v: this service has no issuing CA", issuance.ErrNotAllowed)
	}
	if err := s.cfg.Issuer.Check(csr, regID, deviceID, res.Common().ClientCertificateIssuancePolicy); err != nil {
		return badRequest(dpsapi.CodeInvalidCSR, "%v", err)
	}
	return nil
}

// payloadOf keeps a device payload that is a JSON object (what Embedded C can
// read back); null and other values are dropped.
func payloadOf(p json.RawMessage) json.RawMessage {
	t := strings.TrimSpace(string(p))
	if !strings.HasPrefix(t, "{") {
		return nil
	}
	return json.RawMessage(t)
}

// enrollmentName labels metrics: the group ID, or "individual" (one label per
// device would explode the series count).
func enrollmentName(r *attestation.Result) string {
	if g := r.GroupID(); g != "" {
		return g
	}
	return "individual"
}

func assignedHub(r *store.Record) string {
	if r == nil {
		return ""
	}
	return r.AssignedHub
}

// newOperationID makes an ID shaped like DPS's (4.<16 hex>.<uuid>), from
// characters that are safe raw in URLs and MQTT topics.
func newOperationID() string {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return "4." + hex.EncodeToString(b[:8]) + "." + uuid(b[8:])
}

// newETag is base64 of a quoted GUID, as DPS writes registration etags.
func newETag() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString([]byte(`"` + uuid(b[:]) + `"`))
}

func uuid(b []byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
