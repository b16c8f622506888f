package mqtt

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/endpoint/deviceerr"
)

// errorFor maps a domain error to the status in the response topic and the DPS
// error body, as HTTPS does. Internal errors become an opaque 500; their
// details go to the log only.
func (h *hook) errorFor(ctx context.Context, err error, trackingID string) (int, *dpsapi.ErrorDetails) {
	code, msg, internal := deviceerr.Describe(err)
	if internal {
		h.srv.log.LogAttrs(ctx, slog.LevelError, "device request failed", slog.String("trackingId", trackingID), slog.Any("error", err))
	}
	return deviceerr.Status(code), &dpsapi.ErrorDetails{ErrorCode: code, TrackingID: trackingID, Message: msg}
}

func newTrackingID() string {
	var b [16]byte
	rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
