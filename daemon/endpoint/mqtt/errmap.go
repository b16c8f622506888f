package mqtt

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/registration"
)

// errorFor maps a domain error to the status in the response topic and the DPS
// error body, as HTTPS does. Internal errors become an opaque 500; their
// details go to the log only.
func (h *hook) errorFor(ctx context.Context, err error, trackingID string) (int, *dpsapi.ErrorDetails) {
	var bad *registration.BadRequestError
	var thr *registration.ThrottledError
	code, msg := dpsapi.CodeInternal, "An internal error occurred."
	switch {
	case errors.As(err, &thr):
		code, msg = dpsapi.CodeThrottled, "Too many requests: "+thr.Reason+"."
	case errors.As(err, &bad):
		code, msg = bad.Code, bad.Msg
	case errors.As(err, new(*registration.TPMChallengeError)):
		code, msg = dpsapi.CodeUnauthorized, "TPM attestation: import the authenticationKey into the TPM and sign the next request with it."
	case errors.Is(err, registration.ErrUnauthorized):
		code, msg = dpsapi.CodeUnauthorized, "Unauthorized"
	case errors.Is(err, registration.ErrNotFound):
		code, msg = dpsapi.CodeNotFound, "Not found"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code, msg = dpsapi.CodeInternal, "The request was cancelled."
	default:
		h.srv.log.LogAttrs(ctx, slog.LevelError, "device request failed", slog.String("trackingId", trackingID), slog.Any("error", err))
	}
	status := dpsapi.HTTPStatus(code)
	if status < 400 || status > 599 {
		status = 500
	}
	return status, &dpsapi.ErrorDetails{ErrorCode: code, TrackingID: trackingID, Message: msg}
}

// retryAfterOf is the retry-after (whole seconds, at least 1) for a throttled
// request, or 0. Node and C retry on 429 after it.
func retryAfterOf(err error) int {
	var thr *registration.ThrottledError
	if !errors.As(err, &thr) {
		return 0
	}
	return max(1, int((thr.RetryAfter+time.Second-1)/time.Second))
}

// challengeBody is the 401 that starts TPM attestation (protocol.md §5.4.1),
// as HTTPS sends it: the error fields plus the blob. No SDK does TPM over
// MQTT; the edgeprov agent does, reconnecting with the token the challenge
// key signs.
type challengeBody struct {
	*dpsapi.ErrorDetails
	dpsapi.TPMChallenge
}

// challengeFor is the body answering a *registration.TPMChallengeError (with
// the error fields errorFor chose), or nil for any other error.
func challengeFor(err error, details *dpsapi.ErrorDetails) any {
	var ch *registration.TPMChallengeError
	if !errors.As(err, &ch) {
		return nil
	}
	return &challengeBody{ErrorDetails: details, TPMChallenge: dpsapi.TPMChallenge{
		AuthenticationKey: base64.StdEncoding.EncodeToString(ch.AuthenticationKey), KeyName: sas.DeviceKeyName}}
}

func newTrackingID() string {
	var b [16]byte
	rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
