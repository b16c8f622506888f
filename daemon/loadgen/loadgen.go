// Package loadgen simulates a factory's devices registering against a device
// endpoint, each over a fresh TLS connection as real devices do, and measures
// throughput and latency. The devices attest with a symmetric-key group or an
// X.509 group (certificates it generates) and speak HTTPS or MQTT. A ceiling
// run puts the same client against a bare Go TLS server that answers one
// request per connection: the physical ceiling of the box, measured in the
// same run, so a result is reported as a fraction of it.
package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Transports a run can use.
const (
	HTTPS = "https"
	MQTT  = "mqtt"
)

// Config describes a run.
type Config struct {
	// Addrs are host:port of the device endpoints; device i uses
	// Addrs[i%len(Addrs)] (replicas behind a round-robin balancer).
	Addrs []string
	// Transport is HTTPS (default) or MQTT.
	Transport string
	// TLS is the client configuration shared by all devices (roots, server
	// name, key exchanges offered); each device adds its own certificate.
	TLS     *tls.Config
	IDScope string
	// GroupKey derives each device's key (symmetric-key group); nil with
	// Certs.
	GroupKey []byte
	// Certs, when set, are the devices' X.509 certificates (Certs[i] for
	// device i, its common name the registration ID).
	Certs []tls.Certificate
	// IDPrefix names devices IDPrefix + number.
	IDPrefix    string
	Devices     int
	Concurrency int
	// Rate, when positive, starts devices at this many per second (an open
	// loop: latency counts from the scheduled start, so a backlog shows);
	// otherwise Concurrency devices run back to back as fast as they can.
	Rate float64
	// PollWait is how long a device waits before polling; negative means
	// honour the server's retry-after as a real device does.
	PollWait time.Duration
	// Progress, if set, is called about every 250 ms with the devices done.
	Progress func(done, failed int)
}

// Summary is a run's outcome.
type Summary struct {
	Devices     int     `json:"devices"`
	Succeeded   int     `json:"succeeded"`
	Failed      int     `json:"failed"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"registrationsPerSecond"`
	OfferedRate float64 `json:"offeredPerSecond,omitempty"`
	P50ms       float64 `json:"p50Ms"`
	P90ms       float64 `json:"p90Ms"`
	P99ms       float64 `json:"p99Ms"`
	MaxMs       float64 `json:"maxMs"`
	// ClientCPUms is the load generator's own CPU time (user + system) per
	// device: what the simulated devices cost the box.
	ClientCPUms    float64        `json:"clientCpuMsPerDevice"`
	Errors         map[string]int `json:"errorsByCode,omitempty"`
	CeilingPerSec  float64        `json:"ceilingPerSecond,omitempty"`
	FractionOfCeil float64        `json:"fractionOfCeiling,omitempty"`
}

// Device is what one simulated device does over its own fresh connection; it
// returns an error code label on failure. Register and Bare are the two in
// use.
type Device func(ctx context.Context, cfg *Config, i int) (code string, err error)

// Run runs cfg.Devices devices and returns the summary.
func Run(ctx context.Context, cfg Config, dev Device) (*Summary, error) {
	if cfg.Devices <= 0 || cfg.Concurrency <= 0 {
		return nil, errors.New("devices and concurrency must be positive")
	}
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("no device endpoint address")
	}
	if cfg.Certs != nil && len(cfg.Certs) < cfg.Devices {
		return nil, errors.New("fewer certificates than devices")
	}
	var done, failed atomic.Int64
	lat := make([]time.Duration, cfg.Devices)
	errs := map[string]int{}
	var mu sync.Mutex
	stop := make(chan struct{})
	if cfg.Progress != nil {
		cfg.Progress(0, 0) // the clock starts now
		go func() {
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					cfg.Progress(int(done.Load()), int(failed.Load()))
				}
			}
		}()
	}
	one := func(i int, t0 time.Time) {
		code, err := dev(ctx, &cfg, i)
		lat[i] = time.Since(t0)
		if err != nil {
			failed.Add(1)
			mu.Lock()
			errs[code]++
			mu.Unlock()
		}
		done.Add(1)
	}
	start, cpu0 := time.Now(), cpuTime()
	var wg sync.WaitGroup
	if cfg.Rate > 0 {
		// Open loop: device i is due at start + i/Rate whether or not the
		// ones before it have finished; Concurrency bounds the goroutines.
		type job struct {
			i   int
			due time.Time
		}
		jobs := make(chan job)
		for range cfg.Concurrency {
			wg.Go(func() {
				for j := range jobs {
					one(j.i, j.due)
				}
			})
		}
		interval := time.Duration(float64(time.Second) / cfg.Rate)
	dispatch:
		for i := range cfg.Devices {
			due := start.Add(time.Duration(i) * interval)
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
					break dispatch
				case <-time.After(d):
				}
			}
			select {
			case <-ctx.Done():
				break dispatch
			case jobs <- job{i, due}:
			}
		}
		close(jobs)
	} else {
		var next atomic.Int64
		for range cfg.Concurrency {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= cfg.Devices || ctx.Err() != nil {
						return
					}
					one(i, time.Now())
				}
			})
		}
	}
	wg.Wait()
	close(stop)
	elapsed := time.Since(start)
	if cfg.Progress != nil {
		cfg.Progress(int(done.Load()), int(failed.Load()))
	}
	n := int(done.Load())
	s := &Summary{Devices: n, Failed: int(failed.Load()), Succeeded: n - int(failed.Load()), Seconds: elapsed.Seconds(), OfferedRate: cfg.Rate}
	if len(errs) > 0 {
		s.Errors = errs
	}
	s.PerSecond = float64(s.Succeeded) / elapsed.Seconds()
	if n > 0 {
		s.ClientCPUms = float64((cpuTime() - cpu0).Microseconds()) / 1000 / float64(n)
	}
	s.P50ms, s.P90ms, s.P99ms, s.MaxMs = percentiles(lat[:n])
	return s, ctx.Err()
}

// percentiles returns p50, p90, p99 and the maximum in milliseconds (nearest
// rank).
func percentiles(lat []time.Duration) (p50, p90, p99, maxMs float64) {
	if len(lat) == 0 {
		return 0, 0, 0, 0
	}
	l := slices.Clone(lat)
	slices.Sort(l)
	at := func(p float64) float64 {
		return float64(l[min(len(l)-1, int(p*float64(len(l))))].Microseconds()) / 1000
	}
	return at(0.50), at(0.90), at(0.99), float64(l[len(l)-1].Microseconds()) / 1000
}

// cpuTime is the process's CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
