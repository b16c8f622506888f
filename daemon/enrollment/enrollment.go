// Package enrollment is edgeprov's enrollment model, shaped like the DPS service
// API's JSON (protocol.md §6.6) so that a catalog entry converts to an API body
// and back without loss, and its validation.
package enrollment

import (
	"crypto/x509"
	"log/slog"
	"time"

	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

// Attestation types.
const (
	AttestationSymmetricKey = "symmetricKey"
	AttestationX509         = "x509"
	AttestationTPM          = "tpm"
)

// Provisioning statuses.
const (
	StatusEnabled  = "enabled"
	StatusDisabled = "disabled"
)

// Allocation policies, as DPS names them.
const (
	AllocationHashed     = "hashed"
	AllocationGeoLatency = "geoLatency"
	AllocationStatic     = "static"
	AllocationCustom     = "custom"
)

// Individual is an individual enrollment.
type Individual struct {
	RegistrationID string `json:"registrationId" yaml:"registrationId"`
	DeviceID       string `json:"deviceId,omitempty" yaml:"deviceId,omitempty"`
	Common         `yaml:",inline"`
}

// Group is an enrollment group.
type Group struct {
	EnrollmentGroupID string `json:"enrollmentGroupId" yaml:"enrollmentGroupId"`
	// RegistrationIDPrefixes is an edgeprov extension: when set, only devices whose
	// registration ID starts with one of them are tried against this group, so a
	// first registration does not cost a key derivation per group (see Set).
	RegistrationIDPrefixes []string `json:"registrationIdPrefixes,omitempty" yaml:"registrationIdPrefixes,omitempty"`
	Common                 `yaml:",inline"`
}

// Common holds the fields individual enrollments and groups share.
type Common struct {
	Attestation                Attestation                 `json:"attestation" yaml:"attestation"`
	Capabilities               *Capabilities               `json:"capabilities,omitempty" yaml:"capabilities,omitempty"`
	IoTHubHostName             string                      `json:"iotHubHostName,omitempty" yaml:"iotHubHostName,omitempty"`
	InitialTwin                *InitialTwin                `json:"initialTwin,omitempty" yaml:"initialTwin,omitempty"`
	ETag                       string                      `json:"etag,omitempty" yaml:"-"`
	ProvisioningStatus         string                      `json:"provisioningStatus,omitempty" yaml:"provisioningStatus,omitempty"`
	ReprovisionPolicy          *ReprovisionPolicy          `json:"reprovisionPolicy,omitempty" yaml:"reprovisionPolicy,omitempty"`
	CreatedDateTimeUTC         *time.Time                  `json:"createdDateTimeUtc,omitempty" yaml:"-"`
	LastUpdatedDateTimeUTC     *time.Time                  `json:"lastUpdatedDateTimeUtc,omitempty" yaml:"-"`
	AllocationPolicy           string                      `json:"allocationPolicy,omitempty" yaml:"allocationPolicy,omitempty"`
	IoTHubs                    []string                    `json:"iotHubs,omitempty" yaml:"iotHubs,omitempty"`
	CustomAllocationDefinition *CustomAllocationDefinition `json:"customAllocationDefinition,omitempty" yaml:"customAllocationDefinition,omitempty"`
	// ClientCertificateIssuancePolicy lets devices of this entry obtain a
	// certificate by sending a CSR at registration.
	ClientCertificateIssuancePolicy *ClientCertificateIssuancePolicy `json:"clientCertificateIssuancePolicy,omitempty" yaml:"clientCertificateIssuancePolicy,omitempty"`
}

// Attestation is DPS's AttestationMechanism.
type Attestation struct {
	Type         string                   `json:"type" yaml:"type"`
	SymmetricKey *SymmetricKeyAttestation `json:"symmetricKey,omitempty" yaml:"symmetricKey,omitempty"`
	X509         *X509Attestation         `json:"x509,omitempty" yaml:"x509,omitempty"`
	TPM          *TPMAttestation          `json:"tpm,omitempty" yaml:"tpm,omitempty"`
}

// SymmetricKeyAttestation holds base64 keys, inline or read from KeyFile.
type SymmetricKeyAttestation struct {
	PrimaryKey   string `json:"primaryKey,omitempty" yaml:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty" yaml:"secondaryKey,omitempty"`
	// KeyFile (catalog only) names a file holding the primary key on its first
	// line and, optionally, the secondary key on its second; relative to the catalog.
	KeyFile string `json:"-" yaml:"keyFile,omitempty"`

	primary, secondary []byte
}

// LogValue keeps keys out of logs.
func (s *SymmetricKeyAttestation) LogValue() slog.Value {
	return slog.StringValue("[symmetric keys redacted]")
}

// Keys returns the decoded primary and secondary keys (either may be nil). They
// are set by Validate.
func (s *SymmetricKeyAttestation) Keys() (primary, secondary []byte) {
	return s.primary, s.secondary
}

// TPMAttestation is TPM attestation. An individual enrollment holds the
// device's EK (and may pin its SRK), base64 TPM2B_PUBLIC as the device sends
// them, like DPS. A group holds TPM manufacturer CA certificates instead: an
// edgeprov extension (DPS has no TPM groups) where a device proves membership
// with an EK certificate issued under one of them.
type TPMAttestation struct {
	EndorsementKey string `json:"endorsementKey,omitempty" yaml:"endorsementKey,omitempty"`
	StorageRootKey string `json:"storageRootKey,omitempty" yaml:"storageRootKey,omitempty"`
	// EKCACertificates (groups only) are PEM texts of the trusted TPM
	// manufacturer CA certificates, roots or intermediates; each text may hold
	// several certificates.
	EKCACertificates []string `json:"ekCACertificates,omitempty" yaml:"ekCACertificates,omitempty"`
	// EKCACertificateFiles (catalog only) name PEM files, relative to the
	// catalog, whose contents the catalog adds to EKCACertificates.
	EKCACertificateFiles []string `json:"-" yaml:"ekCACertificateFiles,omitempty"`

	ek   *dpsauth.EK
	srk  *dpsauth.SRK
	cas  []*x509.Certificate
	pool *x509.CertPool
}

// EK returns the parsed enrolled EK of an individual enrollment (set by Validate).
func (t *TPMAttestation) EK() *dpsauth.EK { return t.ek }

// SRK returns the parsed pinned SRK of an individual enrollment, or nil when
// any SRK is accepted (set by Validate).
func (t *TPMAttestation) SRK() *dpsauth.SRK { return t.srk }

// EKCAPool returns a group's trusted EK CA certificates as a pool (set by Validate).
func (t *TPMAttestation) EKCAPool() *x509.CertPool { return t.pool }

// EKCACerts returns a group's parsed EK CA certificates (set by Validate).
func (t *TPMAttestation) EKCACerts() []*x509.Certificate { return t.cas }

// Capabilities are the device's hub capabilities.
type Capabilities struct {
	IoTEdge bool `json:"iotEdge" yaml:"iotEdge"`
}

// InitialTwin is applied to the device's twin on the hub.
type InitialTwin struct {
	Tags       map[string]any         `json:"tags,omitempty" yaml:"tags,omitempty"`
	Properties *InitialTwinProperties `json:"properties,omitempty" yaml:"properties,omitempty"`
}

// InitialTwinProperties holds the desired properties.
type InitialTwinProperties struct {
	Desired map[string]any `json:"desired,omitempty" yaml:"desired,omitempty"`
}

// ReprovisionPolicy says what happens when a registered device registers again.
type ReprovisionPolicy struct {
	UpdateHubAssignment *bool `json:"updateHubAssignment,omitempty" yaml:"updateHubAssignment,omitempty"`
	MigrateDeviceData   *bool `json:"migrateDeviceData,omitempty" yaml:"migrateDeviceData,omitempty"`
}

// CustomAllocationDefinition points at an allocation webhook.
type CustomAllocationDefinition struct {
	WebhookURL string `json:"webhookUrl" yaml:"webhookUrl"`
	APIVersion string `json:"apiVersion" yaml:"apiVersion"`
}

// Enabled reports whether the entry may provision devices.
func (c *Common) Enabled() bool { return c.ProvisioningStatus != StatusDisabled }

// TargetDeviceID is the hub device ID an individual enrollment provisions.
func (e *Individual) TargetDeviceID() string {
	if e.DeviceID != "" {
		return e.DeviceID
	}
	return e.RegistrationID
}
