// Package hub defines linked hubs and the Driver interface that creates device
// identities on them. Concrete drivers live in sub-packages; only daemon/app
// imports them.
package hub

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
)

// Auth types of a device identity, as IoT Hub names them.
const (
	AuthSAS                  = "sas"
	AuthSelfSigned           = "selfSigned"
	AuthCertificateAuthority = "certificateAuthority"
)

// ErrRefused is returned (wrapped) when a hub refuses the device; the
// registration fails with DPS's "hub unauthorized" code.
var ErrRefused = errors.New("hub refused the device")

// Device is the identity a driver creates or updates.
type Device struct {
	DeviceID string
	AuthType string
	// KeyRef says where the device key comes from.
	KeyRef string
	// Key is the device's symmetric key (AuthSAS): the hub authenticates
	// the device with it. Drivers that persist it must encrypt it.
	Key []byte
	// Thumbprint is the SHA-256 thumbprint (upper-case hex) of the device's
	// certificate (AuthSelfSigned).
	Thumbprint  string
	IoTEdge     bool
	InitialTwin json.RawMessage
}

// LogValue keeps the key out of logs.
func (d Device) LogValue() slog.Value {
	return slog.GroupValue(slog.String("deviceId", d.DeviceID), slog.String("authType", d.AuthType), slog.String("keyRef", d.KeyRef))
}

// Driver manages device identities on one hub. Every call is idempotent: a
// retried registration never creates a second identity.
type Driver interface {
	EnsureDevice(ctx context.Context, d Device) error
	DeleteDevice(ctx context.Context, deviceID string) error
}

// Linked is a hub linked to the provisioning service.
type Linked struct {
	// Name is the operator's short name; HostName is what devices are told.
	Name                  string
	HostName              string
	Weight                int
	ApplyAllocationPolicy bool
	Driver                Driver
}
