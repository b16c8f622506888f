// Package local is the embedded hub driver: device identities are kept in
// edgeprov's own store, readable through the service API.
package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/daemon/store"
)

var _ hub.Driver = (*Driver)(nil)

// Driver keeps identities for one hub host name.
type Driver struct {
	hub   string
	store store.Store
	now   func() time.Time
}

// New returns the driver of the hub named hostName.
func New(hostName string, s store.Store) *Driver {
	return &Driver{hub: hostName, store: s, now: time.Now}
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

// EnsureDeviceTx is EnsureDevice inside the caller's transaction, so that the
// registration record, the identity and the operation share one commit.
func (d *Driver) EnsureDeviceTx(tx store.Tx, dev hub.Device, now time.Time) error {
	cur, err := tx.Identity(d.hub, dev.DeviceID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		cur = &store.Identity{Hub: d.hub, DeviceID: dev.DeviceID, CreatedAt: now}
	case err != nil:
		return err
	case cur.AuthType == dev.AuthType && cur.KeyRef == dev.KeyRef && cur.IoTEdge == dev.IoTEdge &&
		bytes.Equal(cur.InitialTwin, dev.InitialTwin) && cur.Status == "enabled":
		return nil
	}
	cur.AuthType, cur.KeyRef, cur.IoTEdge, cur.InitialTwin = dev.AuthType, dev.KeyRef, dev.IoTEdge, dev.InitialTwin
	cur.Status, cur.UpdatedAt = "enabled", now
	cur.ETag = fmt.Sprintf("%d", now.UnixNano())
	return tx.PutIdentity(cur)
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
