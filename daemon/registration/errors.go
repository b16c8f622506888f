package registration

import (
	"errors"
	"fmt"
	"time"
)

// Domain errors; each transport maps them in its errmap.go.
var (
	// ErrUnauthorized: unknown device, bad proof, wrong scope. One error for all,
	// so callers cannot probe which devices exist.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNotFound: unknown operation, an operation of another device, or no
	// registration record.
	ErrNotFound = errors.New("not found")
)

// ThrottledError refuses a call made too often or under overload; the
// transport tells the device to retry after RetryAfter.
type ThrottledError struct {
	RetryAfter time.Duration
	Reason     string
}

func (e *ThrottledError) Error() string { return "throttled: " + e.Reason }

// TPMChallengeError is the answer to a TPM device's first, unauthenticated
// register call with an enrolled endorsement key (protocol.md §5.4.1): the
// device imports AuthenticationKey into its TPM and signs its next call with
// the key inside. Transports answer it like DPS: HTTP 401 with the blob.
type TPMChallengeError struct {
	AuthenticationKey []byte
}

func (e *TPMChallengeError) Error() string {
	return "TPM challenge: the device must prove it holds its TPM"
}

// BadRequestError is a request the service refuses as malformed; Code is the DPS
// error code to report.
type BadRequestError struct {
	Code int
	Msg  string
}

func (e *BadRequestError) Error() string { return e.Msg }

func badRequest(code int, format string, args ...any) error {
	return &BadRequestError{Code: code, Msg: fmt.Sprintf(format, args...)}
}
