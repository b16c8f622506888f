// Package throttle limits how often one device may call (a sliding window per
// key) and how many registrations run at once (admission control).
//
// The per-device windows live in each replica's memory: behind a load balancer
// a device that spreads its calls over n replicas gets up to n times the limit.
// That bounds a misbehaving device well enough; what must be shared between
// replicas (operations, records, challenges) lives in the store.
package throttle

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Window allows at most Limit events per key in any Period.
type Window struct {
	limit  int
	period time.Duration
	max    int

	mu   sync.Mutex
	keys map[string][]time.Time
}

// NewWindow returns a limiter; maxKeys bounds memory (oldest keys are swept
// first when it is reached).
func NewWindow(limit int, period time.Duration, maxKeys int) *Window {
	return &Window{limit: limit, period: period, max: maxKeys, keys: map[string][]time.Time{}}
}

// Allow records an event for key at now, or refuses it and says when the next
// one will be allowed.
func (w *Window) Allow(key string, now time.Time) (bool, time.Duration) {
	if w == nil || w.limit <= 0 {
		return true, 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	ts := w.keys[key]
	cut := now.Add(-w.period)
	i := 0
	for i < len(ts) && !ts[i].After(cut) {
		i++
	}
	ts = ts[i:]
	if len(ts) >= w.limit {
		w.keys[key] = ts
		return false, ts[0].Add(w.period).Sub(now)
	}
	if len(ts) == 0 && len(w.keys) >= w.max {
		w.sweep(cut)
	}
	w.keys[key] = append(ts, now)
	return true, 0
}

// sweep drops keys with no event in the window; if that frees nothing, the
// whole table is dropped (a flood of distinct keys must not grow memory).
func (w *Window) sweep(cut time.Time) {
	for k, ts := range w.keys {
		if len(ts) == 0 || !ts[len(ts)-1].After(cut) {
			delete(w.keys, k)
		}
	}
	if len(w.keys) >= w.max {
		clear(w.keys)
	}
}

// ErrBusy is returned by Admission.Acquire when no slot frees in time.
var ErrBusy = errors.New("too many registrations in progress")

// Admission bounds the registrations in progress; callers wait up to a
// deadline for a slot, so a burst is queued rather than refused.
type Admission struct {
	slots chan struct{}
	wait  time.Duration
}

// NewAdmission allows n concurrent holders; Acquire waits at most wait.
func NewAdmission(n int, wait time.Duration) *Admission {
	if n <= 0 {
		return nil
	}
	return &Admission{slots: make(chan struct{}, n), wait: wait}
}

// Acquire takes a slot; release it with the returned function.
func (a *Admission) Acquire(ctx context.Context) (func(), error) {
	if a == nil {
		return func() {}, nil
	}
	select {
	case a.slots <- struct{}{}:
		return func() { <-a.slots }, nil
	default:
	}
	t := time.NewTimer(a.wait)
	defer t.Stop()
	select {
	case a.slots <- struct{}{}:
		return func() { <-a.slots }, nil
	case <-t.C:
		return nil, ErrBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
