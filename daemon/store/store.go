// Package store is edgeprov's storage contract: the instance, device operations,
// registration records, the enrollments made through the service API and the
// identities of the embedded hub. Every record is
// keyed by ID scope so that one daemon can serve several instances.
//
// Implementations: bolt (embedded default) and, later, PostgreSQL. Both pass
// storetest.Run.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
)

var (
	// ErrNotFound is returned when the requested record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned when a create finds the record already there, or a
	// conditional write finds another etag.
	ErrConflict = errors.New("conflict")
)

// SchemaVersion is the layout version this build reads and writes; Open refuses
// a store written by a newer version and migrates older ones explicitly.
//
// 2: CA certificates (bolt: a new bucket; postgres: migration 2).
// 3: enrollments made through the service API (bolt: two buckets; postgres: migration 3).
// 4: TPM challenges (bolt: a new bucket; postgres: migration 4).
const SchemaVersion = 4

// Store is the storage contract.
type Store interface {
	// Instance returns the instance created by edgeprovd init, or ErrNotFound.
	Instance(ctx context.Context) (*Instance, error)
	// CreateInstance stores the instance once; ErrConflict if one exists.
	CreateInstance(ctx context.Context, inst *Instance) error
	// Update runs fn in a read-write transaction that is durable when Update
	// returns nil. Concurrent Updates may be committed together (group commit),
	// so fn may run more than once and must not have side effects outside tx.
	Update(ctx context.Context, fn func(tx Tx) error) error
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(tx Tx) error) error
	// PruneOperations deletes operations last updated before t and returns how many.
	PruneOperations(ctx context.Context, before time.Time) (int, error)
	Close() error
}

// Pinger is an optional capability of a Store: Ping proves the store takes a
// write now (the daemon's health check, which feeds systemd's watchdog). It
// returns when ctx ends even if the write is stuck.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Tx is what a transaction can do. Methods return ErrNotFound for missing records.
type Tx interface {
	Operation(scope, id string) (*Operation, error)
	PutOperation(op *Operation) error

	Record(scope, registrationID string) (*Record, error)
	PutRecord(r *Record) error
	// DeleteRecord removes a record; with a non-empty etag it deletes only if the
	// etag matches (ErrConflict otherwise).
	DeleteRecord(scope, registrationID, etag string) error
	// Records lists records of a scope in registration ID order, starting after
	// the given ID, at most limit (0: no limit).
	Records(scope, after string, limit int) ([]*Record, error)

	// Enrollment returns an enrollment made through the service API; id is the
	// normalized (lower-case) registration ID or enrollment group ID.
	Enrollment(scope string, kind EnrollmentKind, id string) (*Enrollment, error)
	// PutEnrollment creates or replaces an enrollment (conditions on etags are
	// the caller's, inside the same transaction).
	PutEnrollment(e *Enrollment) error
	// DeleteEnrollment removes an enrollment; ErrNotFound if there is none.
	DeleteEnrollment(scope string, kind EnrollmentKind, id string) error
	// Enrollments lists a scope's enrollments of one kind in ID order, starting
	// after the given ID, at most limit (0: no limit).
	Enrollments(scope string, kind EnrollmentKind, after string, limit int) ([]*Enrollment, error)

	// Challenge returns the TPM challenge pending for a device; ErrNotFound
	// if there is none or it expired before now. In an Update it also locks
	// the challenge until commit: of two transactions that read it and write
	// it back (answering it), the second sees the first's write.
	Challenge(scope, registrationID string, now time.Time) (*Challenge, error)
	// PutChallenge creates or replaces the device's challenge.
	PutChallenge(c *Challenge) error
	// DeleteChallenge removes the device's challenge; ErrNotFound if there is none.
	DeleteChallenge(scope, registrationID string) error

	Identity(hub, deviceID string) (*Identity, error)
	PutIdentity(id *Identity) error
	DeleteIdentity(hub, deviceID string) error
	Identities(hub, after string, limit int) ([]*Identity, error)

	// CA certificates of a scope; names compare case-insensitively.
	CACertificate(scope, name string) (*CACertificate, error)
	PutCACertificate(c *CACertificate) error
	DeleteCACertificate(scope, name string) error
	// CACertificates lists a scope's CA certificates in name order.
	CACertificates(scope string) ([]*CACertificate, error)
}

// Instance is what edgeprovd init creates.
type Instance struct {
	IDScope   string    `json:"idScope"`
	CreatedAt time.Time `json:"createdAt"`
}

// Operation is a device registration operation, pollable until pruned.
type Operation struct {
	Scope          string    `json:"scope"`
	ID             string    `json:"id"`
	RegistrationID string    `json:"registrationId"`
	Status         string    `json:"status"`
	CreatedAt      time.Time `json:"createdAt"`
	UpdatedAt      time.Time `json:"updatedAt"`
	// Attestation and EnrollmentGroupID say how the device proved itself, so a
	// poll is authenticated the same way.
	Attestation       string                           `json:"attestation"`
	EnrollmentGroupID string                           `json:"enrollmentGroupId,omitempty"`
	Result            *dpsapi.DeviceRegistrationResult `json:"result,omitempty"`
}

// Record is a registration record: written when a device is assigned, deleted
// by an operator, never edited (a re-registration writes a new version).
type Record struct {
	Scope             string          `json:"scope"`
	RegistrationID    string          `json:"registrationId"`
	DeviceID          string          `json:"deviceId"`
	AssignedHub       string          `json:"assignedHub"`
	InitialHub        string          `json:"initialHub"`
	Status            string          `json:"status"`
	Substatus         string          `json:"substatus,omitempty"`
	Attestation       string          `json:"attestation"`
	EnrollmentGroupID string          `json:"enrollmentGroupId,omitempty"`
	CreatedAt         time.Time       `json:"createdAt"`
	UpdatedAt         time.Time       `json:"updatedAt"`
	ETag              string          `json:"etag"`
	Payload           json.RawMessage `json:"payload,omitempty"`
	// CertificateInfo describes the certificate of an individual X.509
	// enrollment's device.
	CertificateInfo *dpsapi.X509CertificateInfo `json:"certificateInfo,omitempty"`
}

// EnrollmentKind says whether an Enrollment is individual or a group.
type EnrollmentKind string

// Enrollment kinds.
const (
	KindIndividual EnrollmentKind = "individual"
	KindGroup      EnrollmentKind = "group"
)

// Enrollment is an individual enrollment or enrollment group made through the
// service API. The store keeps the model's JSON opaque (Data), so its shape can
// grow without a schema change here.
type Enrollment struct {
	Scope string         `json:"scope"`
	Kind  EnrollmentKind `json:"kind"`
	// ID is the normalized registration ID or enrollment group ID (lower case).
	ID   string          `json:"id"`
	ETag string          `json:"etag"`
	Data json.RawMessage `json:"data"`
}

// Challenge is a TPM challenge (protocol.md §5.4): the key wrapped to the
// device's TPM in the 401 answer, kept in the store so that whichever replica
// receives the device's answer can verify it.
type Challenge struct {
	Scope          string `json:"scope"`
	RegistrationID string `json:"registrationId"` // normalized
	// SealedKey is the challenge key, sealed (daemon/secrets): a token signed
	// with it proves the TPM that owns EndorsementKey imported it.
	SealedKey []byte `json:"sealedKey"`
	// EndorsementKey and StorageRootKey are the TPM2B_PUBLIC the device sent;
	// the final authenticationKey is built for the same pair.
	EndorsementKey []byte `json:"endorsementKey"`
	StorageRootKey []byte `json:"storageRootKey"`
	// EKCertificate (DER) and EnrollmentGroupID are set when the device
	// matched a TPM group by its EK certificate.
	EKCertificate     []byte    `json:"ekCertificate,omitempty"`
	EnrollmentGroupID string    `json:"enrollmentGroupId,omitempty"`
	CreatedAt         time.Time `json:"createdAt"`
	ExpiresAt         time.Time `json:"expiresAt"`
	// OperationID is set by the register call that answered the challenge:
	// from then on the key only authenticates polls of that operation, so a
	// replayed answer registers nothing.
	OperationID string `json:"operationId,omitempty"`
}

// Identity is a device identity in the embedded (local) hub's registry.
type Identity struct {
	Hub      string `json:"hub"`
	DeviceID string `json:"deviceId"`
	// AuthType is sas, selfSigned (X.509 thumbprint) or certificateAuthority.
	AuthType string `json:"authType"`
	// KeyRef names where the device's key comes from (e.g. "group:line-7#derived").
	KeyRef string `json:"keyRef,omitempty"`
	// SealedKey is the device's symmetric key (SAS devices), encrypted by
	// daemon/secrets: never stored in the clear.
	SealedKey []byte `json:"sealedKey,omitempty"`
	// Thumbprint is the SHA-256 thumbprint (upper-case hex) of a
	// selfSigned device's certificate.
	Thumbprint  string          `json:"thumbprint,omitempty"`
	IoTEdge     bool            `json:"iotEdge,omitempty"`
	Status      string          `json:"status"`
	InitialTwin json.RawMessage `json:"initialTwin,omitempty"`
	ETag        string          `json:"etag"`
	CreatedAt   time.Time       `json:"createdAt"`
	UpdatedAt   time.Time       `json:"updatedAt"`
}

// CACertificate is a CA certificate uploaded to an instance. Enrollment groups'
// caReferences may use it only once Verified: its uploader proved possession
// of the CA key by signing a certificate whose subject CN is VerificationCode.
type CACertificate struct {
	Scope string `json:"scope"`
	Name  string `json:"name"`
	// Certificate is the DER certificate.
	Certificate []byte `json:"certificate"`
	Verified    bool   `json:"verified"`
	// VerificationCode is the outstanding proof-of-possession challenge
	// (empty when none), valid until VerificationCodeExpiry.
	VerificationCode       string    `json:"verificationCode,omitempty"`
	VerificationCodeExpiry time.Time `json:"verificationCodeExpiry,omitzero"`
	ETag                   string    `json:"etag"`
	CreatedAt              time.Time `json:"createdAt"`
	UpdatedAt              time.Time `json:"updatedAt"`
}
