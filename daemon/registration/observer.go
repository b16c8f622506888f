package registration

import "time"

// Observer is told the outcome of every registration, for metrics. Calls are
// made on the request path and must not block.
type Observer interface {
	// Registered reports a register call that reached the enrollment stage:
	// result is the operation status (assigned, failed), "unauthorized", or
	// "challenge" (a TPM's first call, answered with its challenge: no
	// operation yet).
	Registered(attestation, enrollment, hub, result string, took time.Duration)
	// HubError reports a hub driver failure.
	HubError(hub string)
}

type nopObserver struct{}

func (nopObserver) Registered(string, string, string, string, time.Duration) {}
func (nopObserver) HubError(string)                                          {}
