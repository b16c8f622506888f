// Package hub defines linked hubs and the Driver interface that creates device
// identities on them. Concrete drivers live in sub-packages; only daemon/app
// imports them.
package hub

import (
	"context"
	"errors"
	"log/slog"
)

// Auth types of a device identity, as IoT Hub names them.
const (
	AuthSAS                  = "sas"
	AuthSelfSigned           = "selfSigned"
	AuthCertificateAuthority = "certificateAuthority"
)

var (
	// ErrRefused is returned (wrapped) when a hub refuses the device; the
	// registration fails with DPS's "hub unauthorized" code. Drivers do not
	// retry it.
	ErrRefused = errors.New("hub refused the device")
	// ErrNotFound is returned (wrapped) by Reader when the hub has no such
	// device.
	ErrNotFound = errors.New("device not found on the hub")
)

// Device is the identity a driver creates or updates.
type Device struct {
	DeviceID string
	// AuthType is AuthSAS (symmetric-key and TPM devices), AuthSelfSigned or
	// AuthCertificateAuthority (X.509 devices).
	AuthType string
	// KeyRef says where the device key comes from (e.g. "group:line-7#derived");
	// drivers that keep identities in edgeprov's store record it.
	KeyRef string
	// Key is the device's symmetric key (AuthSAS). A hub that authenticates
	// devices with the key itself (IoT Hub, the local hub) is given it, and
	// drivers that persist it must encrypt it; the others derive a password
	// from it (sas.MQTTPassword), so the key never travels there.
	Key SecretKey
	// Thumbprint is the SHA-256 thumbprint (upper-case hex) of the device's
	// certificate (AuthSelfSigned).
	Thumbprint string
	// CommonName is an X.509 device's certificate subject CN (which DPS
	// makes the registration ID); brokers that map certificates to users
	// (use_identity_as_username) see it as the username.
	CommonName string
	IoTEdge    bool
	// Twin, when not nil, replaces the twin's tags and desired properties
	// (initial assignment, reset, migration). Nil leaves the twin on the hub
	// as it is; a hub creating the identity then starts it empty.
	Twin *Twin
	// Disabled keeps the identity but stops the device from connecting.
	Disabled bool
}

// LogValue keeps the key out of logs whatever the handler.
func (d Device) LogValue() slog.Value {
	return slog.GroupValue(slog.String("deviceId", d.DeviceID), slog.String("authType", d.AuthType),
		slog.String("keyRef", d.KeyRef), slog.Bool("iotEdge", d.IoTEdge), slog.Bool("disabled", d.Disabled))
}

// SecretKey is key material that formats and logs as a placeholder.
type SecretKey []byte

// String implements fmt.Stringer.
func (SecretKey) String() string { return "[key redacted]" }

// GoString implements fmt.GoStringer (%#v).
func (SecretKey) GoString() string { return "[key redacted]" }

// LogValue implements slog.LogValuer.
func (SecretKey) LogValue() slog.Value { return slog.StringValue("[key redacted]") }

// Driver manages device identities on one hub. Every call is idempotent: a
// retried registration never creates a second identity.
type Driver interface {
	EnsureDevice(ctx context.Context, d Device) error
	DeleteDevice(ctx context.Context, deviceID string) error
}

// DeviceData is what a hub holds about a device that a migration carries to
// another hub.
type DeviceData struct {
	Twin Twin
	// IoTEdge is nil when the hub does not record capabilities.
	IoTEdge *bool
}

// Reader is an optional Driver capability: reading a device's twin and
// capabilities back, so that reprovisioning with migrateDeviceData can copy
// them to the device's new hub. It returns ErrNotFound for an unknown device.
type Reader interface {
	ReadDevice(ctx context.Context, deviceID string) (*DeviceData, error)
}

// Linked is a hub linked to the provisioning service.
type Linked struct {
	// Name is the operator's short name; HostName is what devices are told.
	Name                  string
	HostName              string
	Weight                int
	ApplyAllocationPolicy bool
	// LatencyProbe is the host:port the lowest-latency policy measures.
	LatencyProbe string
	Driver       Driver
}
