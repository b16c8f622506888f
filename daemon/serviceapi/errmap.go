package serviceapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/edgeprov/edgeprov/daemon/directory"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
)

// Error codes of the service API beyond dpsapi's (six digits, the first three
// being the HTTP status, as DPS writes them).
const (
	CodeBadContinuation      = 400006
	CodeUnsupportedQuery     = 400007
	CodeBadHeader            = 400008
	CodeForbidden            = 403001
	CodeRouteNotFound        = 404001
	CodeRegistrationNotFound = 404201
	CodeEnrollmentNotFound   = 404202
	CodeReadOnly             = 409002 // the catalog file declares the entry
)

// apiError is a refusal with its DPS code and message.
type apiError struct {
	code int
	msg  string
}

func (e *apiError) Error() string { return e.msg }

func fail(code int, msg string) error { return &apiError{code, msg} }

// codeFor maps an error to its DPS code and message. Internal errors get an
// opaque message; the details go to the log only.
func (h *Handler) codeFor(ctx context.Context, err error, notFound int, trackingID string) (int, string) {
	var ae *apiError
	var ro *directory.ReadOnlyError
	var inv *directory.InvalidError
	switch {
	case errors.As(err, &ae):
		return ae.code, ae.msg
	case errors.Is(err, errUnauthorized):
		return dpsapi.CodeUnauthorized, "Unauthorized"
	case errors.Is(err, errForbidden):
		return CodeForbidden, err.Error()
	case errors.As(err, &ro):
		return CodeReadOnly, ro.Error()
	case errors.As(err, &inv):
		return dpsapi.CodeInvalidBody, inv.Error()
	case errors.Is(err, directory.ErrNotFound):
		return notFound, err.Error()
	case errors.Is(err, directory.ErrExists):
		return dpsapi.CodeConflict, err.Error()
	case errors.Is(err, directory.ErrPrecondition):
		return dpsapi.CodePreconditionFailed, err.Error()
	case errors.Is(err, errBadToken):
		return CodeBadContinuation, err.Error()
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return dpsapi.CodeInternal, "The request was cancelled."
	}
	h.log.LogAttrs(ctx, slog.LevelError, "service API request failed", slog.String("trackingId", trackingID), slog.Any("error", err))
	return dpsapi.CodeInternal, "An internal error occurred."
}

func (h *Handler) writeErr(w http.ResponseWriter, r *http.Request, err error, notFound int) {
	trackingID := w.Header().Get("x-ms-request-id")
	code, msg := h.codeFor(r.Context(), err, notFound, trackingID)
	w.Header().Set("x-ms-error-code", strconv.Itoa(code))
	status := dpsapi.HTTPStatus(code)
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	writeJSON(w, status, &dpsapi.ErrorDetails{ErrorCode: code, TrackingID: trackingID, Message: msg, TimestampUTC: dpsapi.Time{Time: h.now()}})
}
