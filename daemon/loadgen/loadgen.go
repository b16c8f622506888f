// Package loadgen simulates a factory's devices registering against a device
// endpoint, each over a fresh TLS connection as real devices do, and measures
// throughput and latency. Ceiling runs the same client against a bare Go TLS
// server that answers one request per connection: the physical ceiling of the
// box, measured in the same run, so a result is reported as a fraction of it.
package loadgen

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
)

// Config describes a run.
type Config struct {
	// Addr is host:port of the device endpoint.
	Addr string
	// ServerName is checked against the server certificate.
	ServerName string
	TLS        *tls.Config
	IDScope    string
	// GroupKey derives each device's key (symmetric-key group).
	GroupKey []byte
	// IDPrefix names devices IDPrefix + number.
	IDPrefix    string
	Devices     int
	Concurrency int
	// PollWait is how long a device waits before polling; negative means
	// honour the server's retry-after as a real device does.
	PollWait time.Duration
	// Progress, if set, is called about every 250 ms with the devices done.
	Progress func(done, failed int)
}

// Summary is a run's outcome.
type Summary struct {
	Devices        int            `json:"devices"`
	Succeeded      int            `json:"succeeded"`
	Failed         int            `json:"failed"`
	Seconds        float64        `json:"seconds"`
	PerSecond      float64        `json:"registrationsPerSecond"`
	P50ms          float64        `json:"p50Ms"`
	P90ms          float64        `json:"p90Ms"`
	P99ms          float64        `json:"p99Ms"`
	Errors         map[string]int `json:"errorsByCode,omitempty"`
	CeilingPerSec  float64        `json:"ceilingPerSecond,omitempty"`
	FractionOfCeil float64        `json:"fractionOfCeiling,omitempty"`
}

// Device is what one simulated device does; it returns an error code label on
// failure. Register and Bare are the two in use.
type Device func(ctx context.Context, c *http.Client, cfg Config, i int) (code string, err error)

// Run runs cfg.Devices devices, cfg.Concurrency at a time, each with a fresh
// connection, and returns the summary.
func Run(ctx context.Context, cfg Config, dev Device) (*Summary, error) {
	if cfg.Devices <= 0 || cfg.Concurrency <= 0 {
		return nil, errors.New("devices and concurrency must be positive")
	}
	var next, done, failed atomic.Int64
	lat := make([]time.Duration, cfg.Devices)
	errs := map[string]int{}
	var mu sync.Mutex
	stop := make(chan struct{})
	if cfg.Progress != nil {
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
	start := time.Now()
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= cfg.Devices || ctx.Err() != nil {
					return
				}
				// A fresh connection (and TLS handshake) per device.
				tr := &http.Transport{TLSClientConfig: cfg.TLS.Clone(), MaxIdleConnsPerHost: 1, ForceAttemptHTTP2: false,
					DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext}
				c := &http.Client{Transport: tr, Timeout: 60 * time.Second}
				t0 := time.Now()
				code, err := dev(ctx, c, cfg, i)
				lat[i] = time.Since(t0)
				tr.CloseIdleConnections()
				if err != nil {
					failed.Add(1)
					mu.Lock()
					errs[code]++
					mu.Unlock()
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	elapsed := time.Since(start)
	if cfg.Progress != nil {
		cfg.Progress(int(done.Load()), int(failed.Load()))
	}
	n := int(done.Load())
	s := &Summary{Devices: n, Failed: int(failed.Load()), Succeeded: n - int(failed.Load()), Seconds: elapsed.Seconds()}
	if len(errs) > 0 {
		s.Errors = errs
	}
	s.PerSecond = float64(s.Succeeded) / elapsed.Seconds()
	l := slices.Clone(lat[:n])
	slices.Sort(l)
	pct := func(p float64) float64 {
		if len(l) == 0 {
			return 0
		}
		return float64(l[min(len(l)-1, int(p*float64(len(l))))].Microseconds()) / 1000
	}
	s.P50ms, s.P90ms, s.P99ms = pct(0.50), pct(0.90), pct(0.99)
	return s, ctx.Err()
}

// Register is a symmetric-key group device: PUT register, then poll until final.
func Register(ctx context.Context, c *http.Client, cfg Config, i int) (string, error) {
	id := cfg.IDPrefix + strconv.Itoa(i)
	key := sas.DeriveDeviceKey(cfg.GroupKey, id)
	tok := sas.Build(key, sas.DeviceResource(cfg.IDScope, id), time.Now().Add(time.Hour), sas.DeviceKeyName)
	base := "https://" + cfg.Addr + "/" + cfg.IDScope + "/registrations/" + url.PathEscape(id)
	op, retry, code, err := call(ctx, c, http.MethodPut, base+"/register?api-version=2021-06-01", tok, `{"registrationId":"`+id+`"}`)
	if err != nil {
		return code, err
	}
	for range 30 {
		if op.Status == dpsapi.StatusAssigned {
			return "", nil
		}
		if op.Status != dpsapi.StatusAssigning {
			code := "failed"
			if op.RegistrationState != nil {
				code = strconv.Itoa(op.RegistrationState.ErrorCode)
			}
			return code, fmt.Errorf("registration %s", op.Status)
		}
		wait := cfg.PollWait
		if wait < 0 {
			wait = retry
		}
		select {
		case <-ctx.Done():
			return "cancelled", ctx.Err()
		case <-time.After(wait):
		}
		op, retry, code, err = call(ctx, c, http.MethodGet, base+"/operations/"+op.OperationID+"?api-version=2021-06-01", tok, "")
		if err != nil {
			return code, err
		}
	}
	return "timeout", errors.New("still assigning after 30 polls")
}

func call(ctx context.Context, c *http.Client, method, u, tok, body string) (*dpsapi.RegistrationOperationStatus, time.Duration, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if err != nil {
		return nil, 0, "request", err
	}
	req.Header.Set("Authorization", tok)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := c.Do(req)
	if err != nil {
		return nil, 0, "transport", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, dpsapi.MaxMessageSize))
	if err != nil {
		return nil, 0, "transport", err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		var e dpsapi.ErrorDetails
		json.Unmarshal(data, &e)
		code := strconv.Itoa(resp.StatusCode)
		if e.ErrorCode != 0 {
			code = strconv.Itoa(e.ErrorCode)
		}
		return nil, 0, code, fmt.Errorf("%s: HTTP %d", method, resp.StatusCode)
	}
	var op dpsapi.RegistrationOperationStatus
	if err := json.Unmarshal(data, &op); err != nil {
		return nil, 0, "decode", err
	}
	secs, err := strconv.Atoi(resp.Header.Get("retry-after"))
	if err != nil || secs < 1 {
		secs = 2
	}
	return &op, time.Duration(secs) * time.Second, "", nil
}

// Bare is the ceiling's device: connect, handshake, one request, as cheap as
// a registration can possibly be on this box.
func Bare(ctx context.Context, c *http.Client, cfg Config, i int) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "https://"+cfg.Addr+"/ceiling", strings.NewReader(`{"registrationId":"x"}`))
	if err != nil {
		return "request", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "transport", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return "", nil
}

// ListenCeiling opens the ceiling server's TLS listener on a loopback port.
func ListenCeiling(cert tls.Certificate) (net.Listener, error) {
	return tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
}

// ServeCeiling answers every request with a small JSON body.
func ServeCeiling(ln net.Listener) error {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Write([]byte(`{"ok":true}`))
	}), ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}
