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
