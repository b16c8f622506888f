package config

import (
	"time"

	"github.com/edgeprov/edgeprov/daemon/enrollment"
)

// Allocation holds the service-level allocation settings.
type Allocation struct {
	// DefaultPolicy applies to enrollments that name none: hashed (evenly
	// weighted), geoLatency (lowest latency) or static. Custom allocation is
	// per enrollment, as in DPS.
	DefaultPolicy string            `yaml:"defaultPolicy,omitempty"`
	Latency       LatencyAllocation `yaml:"latency,omitempty"`
	Webhook       WebhookAllocation `yaml:"webhook,omitempty"`
}

// LatencyAllocation tunes the lowest-latency policy's prober.
type LatencyAllocation struct {
	// ProbeInterval between measurements of every hub (default 10s).
	ProbeInterval Duration `yaml:"probeInterval,omitempty"`
	// ProbeTimeout of one measurement; a hub that does not connect within it
	// is skipped until it does (default 2s).
	ProbeTimeout Duration `yaml:"probeTimeout,omitempty"`
	// Tolerance: hubs this close to the fastest tie and share the devices
	// (default 5ms).
	Tolerance Duration `yaml:"tolerance,omitempty"`
}

// WebhookAllocation configures calls to custom allocation webhooks.
type WebhookAllocation struct {
	// Timeout of one attempt (default 5s).
	Timeout Duration `yaml:"timeout,omitempty"`
	// Retries after an attempt that got no answer (default 1).
	Retries *int `yaml:"retries,omitempty"`
	// CAFile holds PEM certificates trusted for webhooks, besides the
	// system's.
	CAFile string `yaml:"caFile,omitempty"`
}

// maxCallBudget bounds timeout × attempts of a call a device's register
// request waits for, so that it ends well within the device endpoint's write
// timeout (30s).
const maxCallBudget = 20 * time.Second

func (a *Allocation) defaults() {
	if a.DefaultPolicy == "" {
		a.DefaultPolicy = enrollment.AllocationHashed
	}
	setDefault(&a.Latency.ProbeInterval, 10*time.Second)
	setDefault(&a.Latency.ProbeTimeout, 2*time.Second)
	setDefault(&a.Latency.Tolerance, 5*time.Millisecond)
	setDefault(&a.Webhook.Timeout, 5*time.Second)
	if a.Webhook.Retries == nil {
		one := 1
		a.Webhook.Retries = &one
	}
}

func setDefault(d *Duration, v time.Duration) {
	if !d.set {
		d.Duration = v
	}
}

func (a *Allocation) validate(bad func(path, format string, args ...any)) {
	switch a.DefaultPolicy {
	case enrollment.AllocationHashed, enrollment.AllocationGeoLatency, enrollment.AllocationStatic:
	case enrollment.AllocationCustom:
		bad("allocation.defaultPolicy", "custom allocation is set per enrollment (customAllocationDefinition), not as the default")
	default:
		bad("allocation.defaultPolicy", "%q is not available (hashed, geoLatency or static)", a.DefaultPolicy)
	}
	l := a.Latency
	if l.ProbeInterval.Duration < 100*time.Millisecond || l.ProbeInterval.Duration > time.Hour {
		bad("allocation.latency.probeInterval", "must be between 100ms and 1h")
	}
	if l.ProbeTimeout.Duration < 10*time.Millisecond || l.ProbeTimeout.Duration > 30*time.Second {
		bad("allocation.latency.probeTimeout", "must be between 10ms and 30s")
	} else if l.ProbeTimeout.Duration > l.ProbeInterval.Duration {
		bad("allocation.latency.probeTimeout", "must not exceed probeInterval")
	}
	if l.Tolerance.Duration < 0 || l.Tolerance.Duration > 10*time.Second {
		bad("allocation.latency.tolerance", "must be between 0 and 10s")
	}
	validateCalls("allocation.webhook", a.Webhook.Timeout, a.Webhook.Retries, 5, bad)
}

// validateCalls checks a call's timeout and retries, and that a device does
// not wait for them longer than maxCallBudget.
func validateCalls(path string, timeout Duration, retries *int, maxRetries int, bad func(path, format string, args ...any)) {
	if timeout.Duration < 100*time.Millisecond || timeout.Duration > maxCallBudget {
		bad(path+".timeout", "must be between 100ms and %v", maxCallBudget)
		return
	}
	if *retries < 0 || *retries > maxRetries {
		bad(path+".retries", "must be 0 to %d", maxRetries)
		return
	}
	if total := timeout.Duration * time.Duration(*retries+1); total > maxCallBudget {
		bad(path, "timeout × attempts is %v; a registering device would wait longer than %v", total, maxCallBudget)
	}
}
