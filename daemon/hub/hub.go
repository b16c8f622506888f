// Package hub defines linked hubs and the Driver interface that creates device
// identities on them. Concrete drivers live in sub-packages; only daemon/app
// imports them.
package hub

import (
	"context"
	"encoding/json"
	"errors"
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
	// KeyRef says where the device key comes from, never the key itself.
	KeyRef      string
	IoTEdge     bool
	InitialTwin json.RawMessage
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
