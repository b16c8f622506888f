package deviceerr

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/registration"
)

func TestStatus(t *testing.T) {
	for code, want := range map[int]int{401002: 401, 429001: 429, 400208: 400, 500000: 500, 200: 500, 999999: 500} {
		if got := Status(code); got != want {
			t.Errorf("Status(%d) = %d, want %d", code, got, want)
		}
	}
}

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		code     int
		internal bool
		retry    int
	}{
		{"throttled, rounded up", fmt.Errorf("poll: %w", &registration.ThrottledError{RetryAfter: 1500 * time.Millisecond, Reason: "polling too often"}), dpsapi.CodeThrottled, false, 2},
		{"throttled, at least a second", &registration.ThrottledError{RetryAfter: time.Millisecond}, dpsapi.CodeThrottled, false, 1},
		{"bad request", &registration.BadRequestError{Code: dpsapi.CodeIDMismatch, Msg: "x"}, dpsapi.CodeIDMismatch, false, 0},
		{"TPM challenge", &registration.TPMChallengeError{AuthenticationKey: []byte{1}}, dpsapi.CodeUnauthorized, false, 0},
		{"unauthorized", fmt.Errorf("attest: %w", registration.ErrUnauthorized), dpsapi.CodeUnauthorized, false, 0},
		{"not found", registration.ErrNotFound, dpsapi.CodeNotFound, false, 0},
		{"cancelled", context.Canceled, dpsapi.CodeInternal, false, 0},
		{"anything else", errors.New("disk on fire"), dpsapi.CodeInternal, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, msg, internal := Describe(tc.err)
			if code != tc.code || internal != tc.internal || msg == "" {
				t.Errorf("Describe = %d %q internal=%v, want %d internal=%v", code, msg, internal, tc.code, tc.internal)
			}
			if st := Status(code); st < 400 || st > 599 {
				t.Errorf("Status(%d) = %d", code, st)
			}
			if internal && msg != "An internal error occurred." {
				t.Errorf("internal error leaks %q", msg)
			}
			if got := RetryAfter(tc.err); got != tc.retry {
				t.Errorf("RetryAfter = %d, want %d", got, tc.retry)
			}
			_, isChallenge := tc.err.(*registration.TPMChallengeError)
			if got := Challenge(tc.err, &dpsapi.ErrorDetails{}); (got != nil) != isChallenge {
				t.Errorf("Challenge = %v", got)
			}
		})
	}
}
