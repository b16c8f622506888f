// Package metrics exposes edgeprov's Prometheus metrics and the /healthz and
// /readyz probes on a plain-HTTP listener (loopback by default).
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgeprov/edgeprov/daemon/registration"
)

var _ registration.Observer = (*Metrics)(nil)

// Metrics holds the collectors.
type Metrics struct {
	reg           *prometheus.Registry
	registrations *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	operations    prometheus.Counter
	hubErrors     *prometheus.CounterVec
	reloads       *prometheus.CounterVec
	lastReload    prometheus.Gauge
}

// New registers the collectors in a fresh registry.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.registrations = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgeprov_registrations_total",
		Help: "Device registrations by attestation, enrollment (group ID or individual), hub and result."},
		[]string{"attestation", "enrollment", "hub", "result"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "edgeprov_registration_duration_seconds",
		Help:    "Time to run a register call, durable record included.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}, []string{"attestation", "result"})
	m.operations = prometheus.NewCounter(prometheus.CounterOpts{Name: "edgeprov_operations_total",
		Help: "Billable operations (DPS's unit): registrations and re-registrations; polls are not counted."})
	m.hubErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgeprov_hub_driver_errors_total",
		Help: "Hub driver failures by hub."}, []string{"hub"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgeprov_catalog_reloads_total",
		Help: "Catalog reloads by outcome (ok, refused)."}, []string{"outcome"})
	m.lastReload = prometheus.NewGauge(prometheus.GaugeOpts{Name: "edgeprov_catalog_last_reload_success",
		Help: "1 if the last catalog reload succeeded, 0 if it was refused (the previous catalog keeps serving)."})
	m.reg.MustRegister(m.registrations, m.latency, m.operations, m.hubErrors, m.reloads, m.lastReload,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.lastReload.Set(1)
	return m
}

// Registered implements registration.Observer.
func (m *Metrics) Registered(att, enrollment, hub, result string, took time.Duration) {
	m.registrations.WithLabelValues(att, enrollment, hub, result).Inc()
	m.latency.WithLabelValues(att, result).Observe(took.Seconds())
	if result != "unauthorized" && result != "challenge" {
		m.operations.Inc()
	}
}

// HubError implements registration.Observer.
func (m *Metrics) HubError(hub string) { m.hubErrors.WithLabelValues(hub).Inc() }

// Reloaded records a catalog reload outcome.
func (m *Metrics) Reloaded(ok bool) {
	if ok {
		m.reloads.WithLabelValues("ok").Inc()
		m.lastReload.Set(1)
		return
	}
	m.reloads.WithLabelValues("refused").Inc()
	m.lastReload.Set(0)
}

// Handler serves /metrics, /healthz (the process answers) and /readyz (ready
// reports whether the daemon can serve: store reachable, listeners bound).
func (m *Metrics) Handler(ready func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}
