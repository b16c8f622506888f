package registration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/store"
)

// DeleteRegistration deletes a device's registration record and removes the
// device's identity from the hub it is assigned to, so that it can no longer
// connect there (DPS leaves the hub identity; edgeprov manages brokers whose
// only notion of a device is the one it created, so it takes access away).
//
// etag, when not empty, must match the record's: store.ErrConflict otherwise.
// ErrNotFound when there is no record. When the hub cannot be reached the
// record is kept and the error returned, so that the deletion can be retried;
// a hub that is no longer linked is skipped.
func (s *Service) DeleteRegistration(ctx context.Context, scope, registrationID, etag string) error {
	scope = dpsapi.NormalizeIDScope(scope)
	key := dpsapi.NormalizeRegistrationID(registrationID)
	rec, err := s.previousRecord(ctx, scope, key)
	if err != nil {
		return err
	}
	if rec == nil {
		return fmt.Errorf("registration of %s: %w", key, ErrNotFound)
	}
	if etag != "" && etag != "*" && etag != rec.ETag {
		return fmt.Errorf("registration of %s: etag %q does not match: %w", key, etag, store.ErrConflict)
	}
	if h := findLinked(s.cfg.Hubs.Linked(), rec.AssignedHub); h != nil {
		if err := h.Driver.DeleteDevice(ctx, rec.DeviceID); err != nil {
			return fmt.Errorf("remove %s from hub %s: %w", rec.DeviceID, h.HostName, err)
		}
	} else {
		s.log.LogAttrs(ctx, slog.LevelWarn, "registration deleted; its hub is no longer linked, so the identity there was not removed",
			slog.String("hub", rec.AssignedHub), slog.String("deviceId", rec.DeviceID))
	}
	err = s.cfg.Store.Update(ctx, func(tx store.Tx) error { return tx.DeleteRecord(scope, key, rec.ETag) })
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("registration of %s: %w", key, ErrNotFound)
	case err != nil:
		return fmt.Errorf("delete registration of %s: %w", key, err)
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "registration deleted", slog.String("scope", scope), slog.String("registrationId", key),
		slog.String("hub", rec.AssignedHub), slog.String("deviceId", rec.DeviceID))
	return nil
}
