package https

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/registration"
)

// errorFor maps a domain error to the HTTP status and DPS error body. Internal
// errors become an opaque 500; their details go to the log only.
func (h *Handler) errorFor(ctx context.Context, err error, trackingID string) (int, *dpsapi.ErrorDetails) {
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
		h.log.LogAttrs(ctx, slog.LevelError, "device request failed", slog.String("trackingId", trackingID), slog.Any("error", err))
	}
	return dpsapi.HTTPStatus(code), &dpsapi.ErrorDetails{ErrorCode: code, TrackingID: trackingID, Message: msg}
}

// retryAfterOf is the retry-after (whole seconds, at least 1) for a throttled
// request, or 0.
func retryAfterOf(err error) int {
	var thr *registration.ThrottledError
	if !errors.As(err, &thr) {
		return 0
	}
	return max(1, int((thr.RetryAfter+time.Second-1)/time.Second))
}

// challengeBody is the 401 that starts TPM attestation (protocol.md §5.4.1):
// the usual error fields plus the blob. Node reads authenticationKey from
// the 401's body, the C SDK needs keyName too (and no status but
// unassigned), aziot needs authenticationKey.
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

func statusOf(code int) int {
	if s := dpsapi.HTTPStatus(code); s >= 400 && s < 600 {
		return s
	}
	return http.StatusInternalServerError
}
