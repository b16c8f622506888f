package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeprov/edgeprov/daemon/allocation"
	"github.com/edgeprov/edgeprov/daemon/config"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/daemon/hub/iothub"
	"github.com/edgeprov/edgeprov/daemon/hub/local"
	"github.com/edgeprov/edgeprov/daemon/hub/mosquitto"
	"github.com/edgeprov/edgeprov/daemon/hub/webhook"
	"github.com/edgeprov/edgeprov/daemon/registration"
	"github.com/edgeprov/edgeprov/daemon/secrets"
	"github.com/edgeprov/edgeprov/daemon/store"
)

// closeGrace is how long a driver replaced by a reload stays open, for the
// registrations that picked it before the swap.
const closeGrace = 30 * time.Second

// hubSet is the linked hubs built from the config, with the allocation
// policies that need state (the latency prober, the webhook client). A
// config reload builds a new set of hubs, reusing the drivers of hubs whose
// driver settings (and secret files) did not change, and swaps it in.
type hubSet struct {
	st     store.Store
	sealer secrets.Sealer
	log    *slog.Logger

	linked atomic.Pointer[[]*hub.Linked]
	mu     sync.Mutex // serializes reloads; guards built
	built  map[string]*builtHub

	prober  *allocation.Prober
	webhook *allocation.Webhook
	latency config.LatencyAllocation
}

// builtHub is a driver and what it was built from.
type builtHub struct {
	fingerprint string
	drv         hub.Driver
}

func newHubSet(cfg *config.Config, st store.Store, sealer secrets.Sealer, log *slog.Logger) (*hubSet, error) {
	hs := &hubSet{st: st, sealer: sealer, log: log, built: map[string]*builtHub{}, latency: cfg.Allocation.Latency}
	linked, _, err := hs.build(cfg)
	if err != nil {
		return nil, err
	}
	hs.linked.Store(&linked)
	roots, err := rootCAs(cfg.Path(cfg.Allocation.Webhook.CAFile))
	if err != nil {
		hs.closeAll()
		return nil, fmt.Errorf("allocation.webhook.caFile: %w", err)
	}
	hs.webhook = allocation.NewWebhook(allocation.WebhookConfig{Timeout: cfg.Allocation.Webhook.Timeout.Duration,
		Retries: *cfg.Allocation.Webhook.Retries, RootCAs: roots, Logger: log})
	hs.prober = allocation.NewProber(allocation.ProberConfig{Hubs: hs.Linked, Interval: cfg.Allocation.Latency.ProbeInterval.Duration,
		Timeout: cfg.Allocation.Latency.ProbeTimeout.Duration, Logger: log})
	return hs, nil
}

// Linked implements registration.Hubs.
func (hs *hubSet) Linked() []*hub.Linked { return *hs.linked.Load() }

// policies are the four DPS allocation policies.
func (hs *hubSet) policies() map[string]allocation.Policy {
	return map[string]allocation.Policy{
		enrollment.AllocationHashed:     allocation.Hashed{},
		enrollment.AllocationStatic:     allocation.Static{},
		enrollment.AllocationGeoLatency: allocation.Latency{RTTs: hs.prober, Tolerance: hs.latency.Tolerance.Duration},
		enrollment.AllocationCustom:     hs.webhook,
	}
}

// build makes the linked hubs of cfg, reusing unchanged drivers. It returns
// the drivers the new set no longer uses. On error nothing changes.
func (hs *hubSet) build(cfg *config.Config) ([]*hub.Linked, []hub.Driver, error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	next := map[string]*builtHub{}
	var fresh []hub.Driver
	var linked []*hub.Linked
	var errs []error
	for i, h := range cfg.LinkedHubs {
		fp, err := hubFingerprint(cfg, h)
		if err != nil {
			errs = append(errs, fmt.Errorf("linkedHubs[%d] (%s): %w", i, h.Name, err))
			continue
		}
		b := hs.built[h.Name]
		if b == nil || b.fingerprint != fp {
			drv, err := buildDriver(cfg, h, hs.st, hs.sealer, hs.log)
			if err != nil {
				errs = append(errs, fmt.Errorf("linkedHubs[%d] (%s): %w", i, h.Name, err))
				continue
			}
			b = &builtHub{fingerprint: fp, drv: drv}
			fresh = append(fresh, drv)
		}
		next[h.Name] = b
		linked = append(linked, &hub.Linked{Name: h.Name, HostName: h.HostName, Weight: *h.AllocationWeight,
			ApplyAllocationPolicy: *h.ApplyAllocationPolicy, LatencyProbe: h.LatencyProbe, Driver: b.drv})
	}
	if err := errors.Join(errs...); err != nil {
		for _, d := range fresh {
			closeDriver(d)
		}
		return nil, nil, err
	}
	var unused []hub.Driver
	for name, b := range hs.built {
		if n := next[name]; n == nil || n.drv != b.drv {
			unused = append(unused, b.drv)
		}
	}
	hs.built = next
	return linked, unused, nil
}

// hubFingerprint identifies what a hub's driver is built from: the driver, host
// name, settings block and the contents of the files it names (a rotated
// secret rebuilds the driver).
func hubFingerprint(cfg *config.Config, h config.Hub) (string, error) {
	var files []string
	switch {
	case h.Mosquitto != nil:
		files = []string{h.Mosquitto.PasswordFile, h.Mosquitto.CAFile}
	case h.AzureIoTHub != nil:
		files = []string{h.AzureIoTHub.ConnectionStringFile, h.AzureIoTHub.CAFile}
	case h.Webhook != nil:
		files = []string{h.Webhook.SecretFile, h.Webhook.CAFile}
	}
	sum := sha256.New()
	settings, err := json.Marshal([]any{h.Driver, h.HostName, h.Mosquitto, h.AzureIoTHub, h.Webhook})
	if err != nil {
		return "", err
	}
	sum.Write(settings)
	for _, f := range files {
		if f == "" {
			continue
		}
		data, err := os.ReadFile(cfg.Path(f))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(sum, "\x00%d\x00", len(data))
		sum.Write(data)
	}
	return string(sum.Sum(nil)), nil
}

// buildDriver makes a hub's driver from its settings.
func buildDriver(cfg *config.Config, h config.Hub, st store.Store, sealer secrets.Sealer, log *slog.Logger) (hub.Driver, error) {
	log = log.With("hub", h.HostName)
	calls := func(c config.HubCalls) hub.Calls {
		return hub.Calls{Timeout: c.Timeout.Duration, Retries: *c.Retries, Backoff: 100 * time.Millisecond}
	}
	switch h.Driver {
	case config.DriverLocal:
		return local.New(h.HostName, st, sealer), nil
	case config.DriverMosquitto:
		m := h.Mosquitto
		pw, err := firstLine(cfg.Path(m.PasswordFile))
		if err != nil {
			return nil, fmt.Errorf("mosquitto.passwordFile: %w", err)
		}
		var tlsCfg *tls.Config
		if strings.HasPrefix(m.URL, "mqtts:") {
			roots, err := rootCAs(cfg.Path(m.CAFile))
			if err != nil {
				return nil, fmt.Errorf("mosquitto.caFile: %w", err)
			}
			tlsCfg = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		}
		return mosquitto.New(mosquitto.Config{URL: m.URL, Username: m.Username, Password: pw, TLS: tlsCfg,
			Calls: calls(m.HubCalls), Hub: h.HostName, Logger: log})
	case config.DriverAzureIoTHub:
		a := h.AzureIoTHub
		s, err := firstLine(cfg.Path(a.ConnectionStringFile))
		if err != nil {
			return nil, fmt.Errorf("azureIotHub.connectionStringFile: %w", err)
		}
		cs, err := iothub.ParseConnectionString(s)
		if err != nil {
			return nil, fmt.Errorf("azureIotHub.connectionStringFile: %w", err)
		}
		roots, err := rootCAs(cfg.Path(a.CAFile))
		if err != nil {
			return nil, fmt.Errorf("azureIotHub.caFile: %w", err)
		}
		return iothub.New(iothub.Config{Connection: cs, Endpoint: a.Endpoint, TLS: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			Calls: calls(a.HubCalls), Logger: log})
	case config.DriverWebhook:
		w := h.Webhook
		secret, err := firstLine(cfg.Path(w.SecretFile))
		if err != nil {
			return nil, fmt.Errorf("webhook.secretFile: %w", err)
		}
		roots, err := rootCAs(cfg.Path(w.CAFile))
		if err != nil {
			return nil, fmt.Errorf("webhook.caFile: %w", err)
		}
		return webhook.New(webhook.Config{URL: w.URL, Secret: []byte(secret), HubHostName: h.HostName,
			TLS: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, Calls: calls(w.HubCalls), Logger: log})
	}
	return nil, fmt.Errorf("unknown hub driver %q", h.Driver)
}

// firstLine reads a secret file's first line.
func firstLine(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	s := strings.TrimSpace(string(line))
	if s == "" {
		return "", fmt.Errorf("%s: empty", path)
	}
	return s, nil
}

// rootCAs is the system pool plus the PEM certificates in file; nil (the
// system pool) when file is empty.
func rootCAs(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM certificate", file)
	}
	return pool, nil
}

func closeDriver(d hub.Driver) {
	if c, ok := d.(interface{ Close() error }); ok {
		_ = c.Close()
	}
}

func (hs *hubSet) closeAll() {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	for _, b := range hs.built {
		closeDriver(b.drv)
	}
	hs.built = map[string]*builtHub{}
}

// Close stops the prober and closes every driver.
func (hs *hubSet) Close() {
	if hs.prober != nil {
		hs.prober.Close()
	}
	if hs.webhook != nil {
		hs.webhook.Close()
	}
	hs.closeAll()
}

// check connects the drivers that keep a connection, so that a hub that
// cannot be reached is in the log at start rather than at the first device.
func (hs *hubSet) check(ctx context.Context) {
	for _, h := range hs.Linked() {
		c, ok := h.Driver.(interface{ Check(context.Context) error })
		if !ok {
			continue
		}
		go func() {
			if err := c.Check(ctx); err != nil && ctx.Err() == nil {
				hs.log.Warn("linked hub not reachable; devices allocated to it fail until it is", "hub", h.HostName, "error", err)
			}
		}()
	}
}

// ReloadConfig parses and validates the whole config file, builds the linked
// hubs it declares (adding hubs, changing weights, draining with
// applyAllocationPolicy: false, changing driver settings) and swaps them in.
// Other sections take effect at the next start; a change there is logged.
func (d *Daemon) ReloadConfig() error {
	cfg, err := config.Load(d.cfg.File())
	if err != nil {
		d.log.Error("config reload refused; the current linked hubs keep serving", "error", err)
		return err
	}
	linked, unused, err := d.hubs.build(cfg)
	if err != nil {
		d.log.Error("config reload refused; the current linked hubs keep serving", "error", err)
		return err
	}
	d.hubs.linked.Store(&linked)
	for _, drv := range unused {
		time.AfterFunc(closeGrace, func() { closeDriver(drv) })
	}
	var hubs []string
	for _, h := range linked {
		state := fmt.Sprintf("%s weight=%d", h.Name, h.Weight)
		if !h.ApplyAllocationPolicy {
			state += " drained"
		}
		hubs = append(hubs, state)
	}
	d.log.Info("linked hubs reloaded", "file", d.cfg.File(), "hubs", strings.Join(hubs, ", "))
	for name, same := range map[string]bool{
		"allocation": reflect.DeepEqual(cfg.Allocation, d.cfg.Allocation),
		"operations": reflect.DeepEqual(cfg.Operations, d.cfg.Operations),
		"log":        reflect.DeepEqual(cfg.Log, d.cfg.Log),
		"catalog":    cfg.Catalog == d.cfg.Catalog,
	} {
		if !same {
			d.log.Warn("config section changed; it takes effect at the next start", "section", name)
		}
	}
	return nil
}

// deleteRegistration is the service API's DELETE of a registration: the record
// and the device's identity on its hub go together (store errors as the
// service API expects them).
func (d *Daemon) deleteRegistration(ctx context.Context, registrationID, etag string) error {
	err := d.reg.DeleteRegistration(ctx, d.scope, registrationID, etag)
	if errors.Is(err, registration.ErrNotFound) {
		return fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	return err
}
