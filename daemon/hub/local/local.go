// Package local is the embedded hub driver: device identities are kept in
// edgeprov's own store, readable through the service API. Device keys are
// sealed (daemon/secrets) before they reach the store.
package local

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/daemon/secrets"
	"github.com/edgeprov/edgeprov/daemon/store"
)

var (
	_ hub.Driver = (*Driver)(nil)
	_ hub.Reader = (*Driver)(nil)
)

// Identity statuses.
const (
	StatusEnabled  = "enabled"
	StatusDisabled = "disabled"
)

// Driver keeps identities for one hub host name.
type Driver struct {
	hub    string
	store  store.Store
	sealer secrets.Sealer
	now    func() time.Time
}

// New returns the driver of the hub named hostName. sealer encrypts device
// keys; with a nil sealer, keys are not kept at all.
func New(hostName string, s store.Store, sealer secrets.Sealer) *Driver {
	return &Driver{hub: hostName, store: s, sealer: sealer, now: time.Now}
}

// EnsureDevice creates the identity or updates it in place; an unchanged
// identity is left as it is, so retries are harmless.
func (d *Driver) EnsureDevice(ctx context.Context, dev hub.Device) error {
	now := d.now().UTC()
	if err := d.store.Update(ctx, func(tx store.Tx) error { return d.EnsureDeviceTx(tx, dev, now) }); err != nil {
		return fmt.Errorf("local hub %s: ensure device %s: %w", d.hub, dev.DeviceID, err)
	}
	return nil
}

// keyContext binds a sealed key to its identity.
func (d *Driver) keyContext(deviceID string) []byte {
	return []byte("local-hub-identity\x00" + d.hub + "\x00" + deviceID)
}

// EnsureDeviceTx is EnsureDevice inside the caller's transaction, so that the
// registration record, the identity and the operation share one commit.
func (d *Driver) EnsureDeviceTx(tx store.Tx, dev hub.Device, now time.Time) error {
	status := StatusEnabled
	if dev.Disabled {
		status = StatusDisabled
	}
	cur, err := tx.Identity(d.hub, dev.DeviceID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		cur = &store.Identity{Hub: d.hub, DeviceID: dev.DeviceID, CreatedAt: now}
	case err != nil:
		return err
	}
	twin := cur.InitialTwin
	if dev.Twin != nil {
		if twin, err = json.Marshal(dev.Twin); err != nil {
			return fmt.Errorf("twin: %w", err)
		}
	}
	if cur.ETag != "" && cur.AuthType == dev.AuthType && cur.KeyRef == dev.KeyRef && cur.Thumbprint == dev.Thumbprint &&
		cur.IoTEdge == dev.IoTEdge && bytes.Equal(cur.InitialTwin, twin) && cur.Status == status && d.sameKey(cur, dev) {
		return nil
	}
	sealed, err := d.seal(dev)
	if err != nil {
		return err
	}
	cur.AuthType, cur.KeyRef, cur.Thumbprint, cur.IoTEdge, cur.InitialTwin = dev.AuthType, dev.KeyRef, dev.Thumbprint, dev.IoTEdge, twin
	cur.SealedKey = sealed
	cur.Status, cur.UpdatedAt = status, now
	cur.ETag = fmt.Sprintf("%d", now.UnixNano())
	return tx.PutIdentity(cur)
}

func (d *Driver) seal(dev hub.Device) ([]byte, error) {
	if len(dev.Key) == 0 || d.sealer == nil {
		return nil, nil
	}
	sealed, err := d.sealer.Seal(dev.Key, d.keyContext(dev.DeviceID))
	if err != nil {
		return nil, fmt.Errorf("seal key of %s: %w", dev.DeviceID, err)
	}
	return sealed, nil
}

// sameKey reports whether the stored identity holds dev's key (sealing is
// randomised, so the sealed bytes never compare equal).
func (d *Driver) sameKey(cur *store.Identity, dev hub.Device) bool {
	if d.sealer == nil || (len(cur.SealedKey) == 0 && len(dev.Key) == 0) {
		return true
	}
	if len(cur.SealedKey) == 0 || len(dev.Key) == 0 {
		return false
	}
	k, err := d.sealer.Open(cur.SealedKey, d.keyContext(dev.DeviceID))
	if err != nil {
		return false
	}
	defer clear(k)
	return subtle.ConstantTimeCompare(k, dev.Key) == 1
}

// DeviceKey returns the symmetric key kept for a device (what a hub needs to
// check the device's SAS tokens). ErrNotFound when there is none.
func (d *Driver) DeviceKey(ctx context.Context, deviceID string) ([]byte, error) {
	var sealed []byte
	err := d.store.View(ctx, func(tx store.Tx) error {
		id, err := tx.Identity(d.hub, deviceID)
		if err != nil {
			return err
		}
		sealed = id.SealedKey
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("local hub %s: key of %s: %w", d.hub, deviceID, err)
	}
	if len(sealed) == 0 || d.sealer == nil {
		return nil, fmt.Errorf("local hub %s: key of %s: %w", d.hub, deviceID, store.ErrNotFound)
	}
	k, err := d.sealer.Open(sealed, d.keyContext(deviceID))
	if err != nil {
		return nil, fmt.Errorf("local hub %s: key of %s: %w", d.hub, deviceID, err)
	}
	return k, nil
}

// DeleteDevice removes the identity; a missing one is not an error.
func (d *Driver) DeleteDevice(ctx context.Context, deviceID string) error {
	err := d.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.DeleteIdentity(d.hub, deviceID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("local hub %s: delete device %s: %w", d.hub, deviceID, err)
	}
	return nil
}

// ReadDevice implements hub.Reader.
func (d *Driver) ReadDevice(ctx context.Context, deviceID string) (*hub.DeviceData, error) {
	var id *store.Identity
	err := d.store.View(ctx, func(tx store.Tx) error {
		var err error
		id, err = tx.Identity(d.hub, deviceID)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("local hub %s: device %s: %w", d.hub, deviceID, hub.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("local hub %s: read device %s: %w", d.hub, deviceID, err)
	}
	out := &hub.DeviceData{IoTEdge: &id.IoTEdge}
	if len(id.InitialTwin) > 0 {
		if err := json.Unmarshal(id.InitialTwin, &out.Twin); err != nil {
			return nil, fmt.Errorf("local hub %s: twin of %s: %w", d.hub, deviceID, err)
		}
	}
	return out, nil
}
