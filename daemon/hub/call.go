package hub

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Calls says how a driver calls its hub: each attempt is bounded by Timeout,
// and a failed attempt is retried Retries times (after Backoff, doubling)
// unless the error is permanent or the caller's context ended.
type Calls struct {
	Timeout time.Duration
	Retries int
	Backoff time.Duration
}

// permanent marks an error that another attempt cannot fix.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks err as not worth retrying (a 4xx answer, a refusal).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// IsPermanent reports whether err was marked Permanent, or is ErrRefused or
// ErrNotFound.
func IsPermanent(err error) bool {
	var p permanent
	return errors.As(err, &p) || errors.Is(err, ErrRefused) || errors.Is(err, ErrNotFound)
}

// Do runs fn under the policy. The error of the last attempt is returned,
// annotated with the number of attempts when there was more than one.
func (c Calls) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	backoff := c.Backoff
	if backoff <= 0 {
		backoff = 100 * time.Millisecond
	}
	var err error
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, timeout)
		err = fn(actx)
		cancel()
		if err == nil || IsPermanent(err) || attempt >= c.Retries || ctx.Err() != nil {
			if err != nil && attempt > 0 {
				err = fmt.Errorf("after %d attempts: %w", attempt+1, err)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %d attempts: %w", attempt+1, err)
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}
