// Package deviceerr says what a device is told when its request fails, the
// same over HTTPS and MQTT: the DPS error code and message, the retry-after of
// a throttled call, and the body of a TPM challenge.
package deviceerr

import (
	"context"
	"encoding/base64"
	"errors"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/registration"
)

// Describe maps a registration error to the DPS error code and message a
// device sees. internal reports an unexpected error: the device gets an opaque
// message and the caller logs the detail.
func Describe(err error) (code int, msg string, internal bool) {
	var bad *registration.BadRequestError
	var thr *registration.ThrottledError
	switch {
	case errors.As(err, &thr):
		return dpsapi.CodeThrottled, "Too many requests: " + thr.Reason + ".", false
	case errors.As(err, &bad):
		return bad.Code, bad.Msg, false
	case errors.As(err, new(*registration.TPMChallengeError)):
		return dpsapi.CodeUnauthorized, "TPM attestation: import the authenticationKey into the TPM and sign the next request with it.", false
	case errors.Is(err, registration.ErrUnauthorized):
		// An unknown device and a bad signature read the same.
		return dpsapi.CodeUnauthorized, "Unauthorized", false
	case errors.Is(err, registration.ErrNotFound):
		return dpsapi.CodeNotFound, "Not found", false
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return dpsapi.CodeInternal, "The request was cancelled.", false
	default:
		return dpsapi.CodeInternal, "An internal error occurred.", true
	}
}

// Status is the HTTP status (or the status in an MQTT response topic) for a
// DPS error code: its first three digits, or 500 for a code outside 4xx–5xx.
func Status(code int) int {
	if s := dpsapi.HTTPStatus(code); s >= 400 && s < 600 {
		return s
	}
	return 500
}

// RetryAfter is the retry-after (whole seconds, at least 1) for a throttled
// request, or 0. The C SDK, Python and Node's MQTT transport retry a 429
// after it.
func RetryAfter(err error) int {
	var thr *registration.ThrottledError
	if !errors.As(err, &thr) {
		return 0
	}
	return max(1, int((thr.RetryAfter+time.Second-1)/time.Second))
}

// ChallengeBody is the 401 that starts TPM attestation (protocol.md §5.4.1):
// the usual error fields plus the blob. Node reads authenticationKey from the
// 401's body, the C SDK needs keyName too, aziot needs authenticationKey.
type ChallengeBody struct {
	*dpsapi.ErrorDetails
	dpsapi.TPMChallenge
}

// Challenge is the body answering a *registration.TPMChallengeError (with
// the error fields chosen for it), or nil for any other error.
func Challenge(err error, details *dpsapi.ErrorDetails) any {
	var ch *registration.TPMChallengeError
	if !errors.As(err, &ch) {
		return nil
	}
	return &ChallengeBody{ErrorDetails: details, TPMChallenge: dpsapi.TPMChallenge{
		AuthenticationKey: base64.StdEncoding.EncodeToString(ch.AuthenticationKey), KeyName: sas.DeviceKeyName}}
}
