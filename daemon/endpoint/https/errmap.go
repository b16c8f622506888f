package https

import (
	"context"
	"log/slog"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/endpoint/deviceerr"
)

// errorFor maps a domain error to the HTTP status and DPS error body. Internal
// errors become an opaque 500; their details go to the log only.
func (h *Handler) errorFor(ctx context.Context, err error, trackingID string) (int, *dpsapi.ErrorDetails) {
	code, msg, internal := deviceerr.Describe(err)
	if internal {
		h.log.LogAttrs(ctx, slog.LevelError, "device request failed", slog.String("trackingId", trackingID), slog.Any("error", err))
	}
	return deviceerr.Status(code), &dpsapi.ErrorDetails{ErrorCode: code, TrackingID: trackingID, Message: msg}
}
