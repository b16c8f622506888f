package dpsapi

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"
)

// Registration statuses, lower case and exact: several SDKs compare with strcmp.
const (
	StatusUnassigned = "unassigned"
	StatusAssigning  = "assigning"
	StatusAssigned   = "assigned"
	StatusFailed     = "failed"
	StatusDisabled   = "disabled"
)

// Substatus values of an assigned registration (protocol.md §6.7).
const (
	SubstatusInitialAssignment                = "initialAssignment"
	SubstatusDeviceDataMigrated               = "deviceDataMigrated"
	SubstatusDeviceDataReset                  = "deviceDataReset"
	SubstatusReprovisionedToInitialAssignment = "reprovisionedToInitialAssignment"
)

// API versions with certificate issuance: a device may send a csr only with
// one of these (protocol.md §1, §2.3).
const (
	APIVersionIssuance       = "2025-07-01-preview"
	APIVersionIssuanceLegacy = "2021-11-01-preview"
)

// AllowsCSR reports whether a device API version carries certificate
// issuance (the csr request field, issuedCertificateChain in the result).
func AllowsCSR(apiVersion string) bool {
	return apiVersion == APIVersionIssuance || apiVersion == APIVersionIssuanceLegacy
}

// MaxMessageSize is DPS's maximum message size (96 KB); larger bodies are refused.
const MaxMessageSize = 96 * 1024

// DeviceRegistration is the body of a register request.
type DeviceRegistration struct {
	RegistrationID string          `json:"registrationId,omitempty"`
	TPM            *TPMAttestation `json:"tpm,omitempty"`
	Payload        json.RawMessage `json:"payload,omitempty"`
	CSR            string          `json:"csr,omitempty"`
}

// TPMAttestation carries the base64 TPM2B_PUBLIC of the EK and SRK.
type TPMAttestation struct {
	EndorsementKey string `json:"endorsementKey"`
	StorageRootKey string `json:"storageRootKey,omitempty"`
	// EndorsementKeyCertificate is an edgeprov extension: the base64 DER EK
	// certificate from the TPM's NV index 0x01c00002, by which a device proves
	// membership of a TPM enrollment group. DPS has no such field.
	EndorsementKeyCertificate string `json:"endorsementKeyCertificate,omitempty"`
}

// RegistrationOperationStatus answers register and operation polls.
type RegistrationOperationStatus struct {
	OperationID       string                    `json:"operationId"`
	Status            string                    `json:"status"`
	RegistrationState *DeviceRegistrationResult `json:"registrationState,omitempty"`
}

// DeviceRegistrationResult is the registration state a device receives.
type DeviceRegistrationResult struct {
	X509                   *X509RegistrationResult         `json:"x509,omitempty"`
	SymmetricKey           *SymmetricKeyRegistrationResult `json:"symmetricKey,omitempty"`
	TPM                    *TPMRegistrationResult          `json:"tpm,omitempty"`
	RegistrationID         string                          `json:"registrationId"`
	CreatedDateTimeUTC     *Time                           `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string                          `json:"assignedHub,omitempty"`
	DeviceID               string                          `json:"deviceId,omitempty"`
	Status                 string                          `json:"status"`
	Substatus              string                          `json:"substatus,omitempty"`
	ErrorCode              int                             `json:"errorCode,omitempty"`
	ErrorMessage           string                          `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUTC *Time                           `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag                   string                          `json:"etag,omitempty"`
	Payload                json.RawMessage                 `json:"payload,omitempty"`
	IssuedCertificateChain []string                        `json:"issuedCertificateChain,omitempty"`
}

// X509RegistrationResult names the group or certificate an X.509 device matched.
type X509RegistrationResult struct {
	CertificateInfo        *X509CertificateInfo `json:"certificateInfo,omitempty"`
	EnrollmentGroupID      string               `json:"enrollmentGroupId,omitempty"`
	SigningCertificateInfo *X509CertificateInfo `json:"signingCertificateInfo,omitempty"`
}

// X509CertificateInfo describes a certificate as DPS does (every field is
// required in its schema).
type X509CertificateInfo struct {
	SubjectName      string `json:"subjectName"`
	SHA1Thumbprint   string `json:"sha1Thumbprint"`
	SHA256Thumbprint string `json:"sha256Thumbprint"`
	IssuerName       string `json:"issuerName"`
	NotBeforeUTC     Time   `json:"notBeforeUtc"`
	NotAfterUTC      Time   `json:"notAfterUtc"`
	SerialNumber     string `json:"serialNumber"`
	Version          int    `json:"version"`
}

// NewX509CertificateInfo describes c: names in RFC 2253 form, thumbprints and
// serial number in upper-case hex, as DPS writes them.
func NewX509CertificateInfo(c *x509.Certificate) *X509CertificateInfo {
	s1, s256 := Thumbprints(c)
	return &X509CertificateInfo{
		SubjectName:      c.Subject.String(),
		SHA1Thumbprint:   s1,
		SHA256Thumbprint: s256,
		IssuerName:       c.Issuer.String(),
		NotBeforeUTC:     Time{c.NotBefore.UTC()},
		NotAfterUTC:      Time{c.NotAfter.UTC()},
		SerialNumber:     strings.ToUpper(hex.EncodeToString(c.SerialNumber.Bytes())),
		Version:          c.Version,
	}
}

// Thumbprints returns the SHA-1 and SHA-256 thumbprints of c's DER, upper-case
// hex (IoT Hub's spelling).
func Thumbprints(c *x509.Certificate) (sha1Hex, sha256Hex string) {
	s1 := sha1.Sum(c.Raw)
	s256 := sha256.Sum256(c.Raw)
	return strings.ToUpper(hex.EncodeToString(s1[:])), strings.ToUpper(hex.EncodeToString(s256[:]))
}

// SymmetricKeyRegistrationResult names the group a symmetric-key device matched.
type SymmetricKeyRegistrationResult struct {
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
}

// TPMRegistrationResult carries the blob wrapping the device's hub key.
type TPMRegistrationResult struct {
	AuthenticationKey string `json:"authenticationKey"`
}

// TPMChallenge is what the 401 that starts TPM attestation adds to the error
// body; keyName becomes the skn of the C SDK's token.
type TPMChallenge struct {
	AuthenticationKey string `json:"authenticationKey"`
	KeyName           string `json:"keyName"`
}

// ErrorDetails is DPS's ProvisioningServiceErrorDetails.
type ErrorDetails struct {
	ErrorCode    int               `json:"errorCode"`
	TrackingID   string            `json:"trackingId"`
	Message      string            `json:"message"`
	Info         map[string]string `json:"info,omitempty"`
	TimestampUTC Time              `json:"timestampUtc"`
}

// Time marshals like DPS: UTC with seven fractional digits.
type Time struct{ time.Time }

// TimeLayout is DPS's timestamp layout.
const TimeLayout = "2006-01-02T15:04:05.0000000Z"

// NewTime returns t as a *Time, in UTC.
func NewTime(t time.Time) *Time { return &Time{t.UTC()} }

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.UTC().Format(TimeLayout) + `"`), nil
}

// UnmarshalJSON accepts any RFC 3339 time.
func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return err
	}
	t.Time = v
	return nil
}
