package app

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/edgeprov/edgeprov/daemon/attestation"
	"github.com/edgeprov/edgeprov/daemon/attestation/symkey"
	tpmattest "github.com/edgeprov/edgeprov/daemon/attestation/tpm"
	"github.com/edgeprov/edgeprov/daemon/attestation/x509chain"
	"github.com/edgeprov/edgeprov/daemon/cacert"
	"github.com/edgeprov/edgeprov/daemon/catalog"
	"github.com/edgeprov/edgeprov/daemon/config"
	"github.com/edgeprov/edgeprov/daemon/directory"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/endpoint/https"
	mqttep "github.com/edgeprov/edgeprov/daemon/endpoint/mqtt"
	"github.com/edgeprov/edgeprov/daemon/localadmin"
	"github.com/edgeprov/edgeprov/daemon/metrics"
	"github.com/edgeprov/edgeprov/daemon/pki"
	"github.com/edgeprov/edgeprov/daemon/registration"
	"github.com/edgeprov/edgeprov/daemon/serviceapi"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/daemon/systemd"
	"github.com/edgeprov/edgeprov/daemon/throttle"
)

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	cfgPath := configFlag(fs)
	stateDir := stateDirFlag(fs)
	readyFile := fs.String("ready-file", "", "write the bound listener addresses (JSON) here once serving")
	listen := fs.String("listen", "", "override device.listen (host:port; port 0 picks a free one)")
	metricsListen := fs.String("metrics-listen", "", "override metrics.listen")
	serviceListen := fs.String("service-listen", "", "override service.listen (needs a service: section)")
	mqttListen := fs.String("mqtt-listen", "", "override mqtt.listen (needs an mqtt: section; port 0 picks a free one)")
	if err := parse(fs, args); err != nil {
		return err
	}
	// Taken first, whatever happens next: LISTEN_* must not leak to children
	// and the sockets must not stay open unserved.
	inherited, err := systemd.InheritedListeners()
	if err != nil {
		return err
	}
	defer inherited.Close()
	cfg, err := loadConfig(*cfgPath, *stateDir)
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Device.Listen = *listen
	}
	if *metricsListen != "" {
		cfg.Metrics.Listen = *metricsListen
	}
	if *serviceListen != "" {
		if cfg.Service == nil {
			return &ExitError{ExitUsage, fmt.Errorf("--service-listen: %s has no service: section", *cfgPath)}
		}
		cfg.Service.Listen = *serviceListen
	}
	if *mqttListen != "" {
		if cfg.MQTT == nil {
			return &ExitError{ExitUsage, fmt.Errorf("--mqtt-listen: %s has no mqtt: section", *cfgPath)}
		}
		cfg.MQTT.Listen = *mqttListen
	}
	log := newLogger(stderr, cfg.Log.Level, cfg.Log.Format)
	d, err := BuildWith(ctx, cfg, log, Options{Listeners: inherited, Notifier: systemd.NotifierFromEnv()})
	if err != nil {
		return err
	}
	defer d.Close()

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				d.Reload()
			}
		}
	}()
	return d.Serve(ctx, *readyFile)
}

// Options are what a daemon gets from its process rather than its config.
type Options struct {
	// Listeners are the sockets systemd passed; nil or empty binds the
	// configured addresses.
	Listeners *systemd.Listeners
	// Notifier reports to systemd; nil reports nothing.
	Notifier *systemd.Notifier
	// WatchdogInterval overrides WATCHDOG_USEC (tests); 0 reads the environment.
	WatchdogInterval time.Duration
}

// Daemon is a built edgeprovd.
type Daemon struct {
	cfg       *config.Config
	log       *slog.Logger
	store     store.Store
	scope     string
	catalog   *catalog.Source
	dir       *directory.Directory
	hubs      *hubSet
	cas       *cacert.Registry
	reg       *registration.Service
	registrar *countingRegistrar
	tls       *tls.Config
	device    net.Listener
	activated bool                // the device listener came from systemd
	service   *serviceapi.Handler // nil when the service endpoint is not configured
	serviceLn net.Listener
	metrics   *metrics.Metrics
	mln       net.Listener
	closers   closers
	reload    reloader
	started   time.Time
	admin     net.Listener
	notify    *systemd.Notifier
	watchdog  time.Duration
	// mqtt is the MQTT endpoint (nil when the config has no mqtt section),
	// serving on mqttLn and, if enabled, over WebSockets on device.
	mqtt   *mqttep.Server
	mqttLn net.Listener

	mu     sync.Mutex
	health error // last health check result
}

// Build assembles the daemon from its config; the listeners are bound here so
// that errors (port in use) surface before Serve.
func Build(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Daemon, error) {
	return BuildWith(ctx, cfg, log, Options{})
}

// BuildWith is Build with sockets and a notifier from the service manager.
func BuildWith(ctx context.Context, cfg *config.Config, log *slog.Logger, opts Options) (*Daemon, error) {
	st, where, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: log, store: st, started: time.Now().UTC(), notify: opts.Notifier, watchdog: opts.WatchdogInterval}
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	if d.watchdog == 0 {
		if d.watchdog, err = systemd.WatchdogInterval(); err != nil {
			return nil, err
		}
	}
	inst, err := st.Instance(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("no instance in %s: run 'edgeprovd init --config %s' first", where, cfg.File())
	} else if err != nil {
		return nil, err
	}
	d.scope = inst.IDScope

	var cat *catalog.File
	if cfg.Catalog != "" {
		if cat, err = catalog.Load(cfg.Path(cfg.Catalog)); err != nil {
			return nil, &ExitError{ExitConfig, err}
		}
	}
	d.catalog = catalog.NewSource(d.scope, cat)
	d.reload.last = &ReloadResult{Time: d.started, Trigger: "startup", OK: true}
	if cat != nil {
		d.reload.last.Individuals, d.reload.last.Groups = len(cat.Individuals), len(cat.Groups)
	}
	sealer, err := openSecrets(ctx, cfg, false, log, &d.closers)
	if err != nil {
		return nil, err
	}
	if d.hubs, err = newHubSet(cfg, st, sealer, log); err != nil {
		return nil, &ExitError{ExitConfig, err}
	}
	if d.dir, err = directory.New(ctx, directory.Config{Scope: d.scope, Catalog: d.catalog, Store: st, Sealer: sealer, Logger: log}); err != nil {
		return nil, err
	}
	if sh, err := d.dir.Shadowed(ctx, cat); err == nil && len(sh) > 0 {
		d.reload.last.Shadowed = sh
		log.Warn("catalog entries hide entries made through the service API; delete one of each pair", "count", len(sh), "first", sh[0])
	}
	pool, err := d.loadCAs(ctx, cat)
	if err != nil {
		return nil, err
	}
	d.cas = cacert.NewRegistry(d.scope, pool)
	issuer, err := buildIssuer(ctx, cfg, log, &d.closers)
	if err != nil {
		return nil, &ExitError{ExitConfig, err}
	}
	var certIssuer registration.CertIssuer
	if issuer != nil {
		certIssuer = issuer
	}

	d.metrics = metrics.New()
	d.reg = registration.New(registration.Config{
		Store:       st,
		Enrollments: d.dir,
		Hubs:        d.hubs,
		Issuer:      certIssuer,
		Verifier: &attestation.Verifier{
			Symkey: &symkey.Verifier{Skew: cfg.Device.SASClockSkew.Duration},
			X509:   &x509chain.Verifier{CAs: d.cas},
			TPM:    &tpmattest.Verifier{Store: st, Sealer: sealer, Skew: cfg.Device.SASClockSkew.Duration},
		},
		Policies:      d.hubs.policies(),
		DefaultPolicy: cfg.Allocation.DefaultPolicy,
		Scopes:        []string{d.scope},
		Logger:        log,
		Observer:      d.metrics,
		RegisterLimit: window(cfg.Throttling.RegistrationsPerDevice, cfg.Throttling.RegistrationWindow.Duration),
		PollLimit:     window(cfg.Throttling.PollsPerDevice, cfg.Throttling.PollWindow.Duration),
		Admission:     throttle.NewAdmission(cfg.Throttling.MaxInFlight, cfg.Throttling.AdmissionWait.Duration),
	})
	d.registrar = &countingRegistrar{Service: d.reg}

	cert, err := tls.LoadX509KeyPair(cfg.ServerCertPath(), cfg.ServerKeyPath())
	if err != nil {
		return nil, fmt.Errorf("load device endpoint certificate: %w", err)
	}
	d.tls = &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// Request, not require: symmetric-key and TPM devices send no certificate.
		ClientAuth: tls.RequestClientCert,
	}
	if d.device, d.activated, err = listen(opts.Listeners, ListenerDevice, cfg.Device.Listen); err != nil {
		return nil, fmt.Errorf("device endpoint: %w", err)
	}
	if d.mln, err = listenOptional(opts.Listeners, ListenerMetrics, cfg.Metrics.Listen); err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	if cfg.Service != nil {
		if err := d.buildService(opts.Listeners); err != nil {
			return nil, err
		}
	}
	if cfg.MQTT == nil && opts.Listeners != nil {
		if ls := opts.Listeners.Take(ListenerMQTT); len(ls) > 0 {
			merge(ls).Close()
			return nil, &ExitError{ExitConfig, fmt.Errorf("socket activation: a %s socket was passed but %s has no mqtt: section", ListenerMQTT, cfg.File())}
		}
	}
	if m := cfg.MQTT; m != nil {
		if d.mqttLn, _, err = listen(opts.Listeners, ListenerMQTT, m.Listen); err != nil {
			return nil, fmt.Errorf("mqtt endpoint: %w", err)
		}
		d.mqtt, err = mqttep.New(mqttep.Config{Registrar: d.registrar, TLS: d.tls.Clone(), RetryAfter: cfg.Device.RetryAfterSeconds, Logger: log.With("endpoint", "mqtt"),
			Limits: mqttep.Limits{MaxConnections: m.MaxConnections, ConnectTimeout: m.ConnectTimeout.Duration, MaxKeepAlive: m.MaxKeepAlive.Duration,
				PacketRate: m.PacketRate, PacketBurst: m.PacketBurst}})
		if err != nil {
			return nil, err
		}
	}
	if opts.Listeners != nil {
		if err := opts.Listeners.CheckAllTaken(knownListeners); err != nil {
			return nil, &ExitError{ExitConfig, err}
		}
	}
	if d.admin, err = localadmin.Listen(cfg.AdminSocketPath()); err != nil {
		return nil, err
	}
	ok = true
	return d, nil
}

// buildService makes the service operations endpoint and binds its listener
// (or takes the socket systemd passed as service-https).
func (d *Daemon) buildService(inherited *systemd.Listeners) error {
	policies, err := loadPolicies(d.cfg)
	if err != nil {
		return err
	}
	ckey, err := continuationKey(d.cfg)
	if err != nil {
		return fmt.Errorf("service endpoint: %w", err)
	}
	var local []string
	for _, h := range d.cfg.LinkedHubs {
		if h.Driver == "local" {
			local = append(local, h.HostName)
		}
	}
	d.service = serviceapi.New(serviceapi.Config{
		Directory: d.dir, Store: d.store, Hubs: local, Policies: policies,
		HostNames:       append(append([]string{}, d.cfg.Device.HostNames...), d.cfg.Service.HostNames...),
		ContinuationKey: ckey, Status: d.status, Skew: d.cfg.Service.SASClockSkew.Duration,
		DeleteRegistration: d.deleteRegistration,
		MaxBulkItems:       d.cfg.Service.MaxBulkItems, Logger: d.log.With("endpoint", "service"),
	})
	if d.serviceLn, _, err = listen(inherited, ListenerService, d.cfg.Service.Listen); err != nil {
		return fmt.Errorf("service endpoint: %w", err)
	}
	return nil
}

// MQTTAddr is the MQTT listener's address, or nil.
func (d *Daemon) MQTTAddr() net.Addr {
	if d.mqttLn == nil {
		return nil
	}
	return d.mqttLn.Addr()
}

// DeviceAddr is the HTTPS device listener's address.
func (d *Daemon) DeviceAddr() net.Addr { return d.device.Addr() }

// Service exposes the registration service (for in-process benchmarks and tests).
func (d *Daemon) Service() *registration.Service { return d.reg }

// IDScope is the instance's ID scope.
func (d *Daemon) IDScope() string { return d.scope }

// Close releases the store, listeners and PKCS#11 modules.
func (d *Daemon) Close() error {
	if d.device != nil {
		d.device.Close()
	}
	if d.mln != nil {
		d.mln.Close()
	}
	if d.serviceLn != nil {
		d.serviceLn.Close()
	}
	if d.admin != nil {
		d.admin.Close()
	}
	if d.hubs != nil {
		d.hubs.Close()
	}
	if d.mqtt != nil {
		d.mqtt.Close()
	}
	if d.mqttLn != nil {
		d.mqttLn.Close()
	}
	err := d.closers.Close()
	if d.store != nil {
		err = errors.Join(err, d.store.Close())
	}
	return err
}

// loadCAs builds the pool of usable CA certificates: the catalog's and the
// verified ones in the store.
func (d *Daemon) loadCAs(ctx context.Context, cat *catalog.File) (*cacert.Pool, error) {
	var named []cacert.Named
	if cat != nil {
		for _, ca := range cat.CertificateAuthorities {
			named = append(named, cacert.Named{Name: ca.Name, Cert: ca.Cert})
		}
	}
	pool, shadowed, err := cacert.Load(ctx, d.store, d.scope, named)
	if err != nil {
		return nil, err
	}
	for _, n := range shadowed {
		d.log.Warn("a stored CA certificate is shadowed by the catalog's of the same name", "name", n)
	}
	return pool, nil
}

// Serve serves until ctx ends, then drains in-flight requests.
func (d *Daemon) Serve(ctx context.Context, readyFile string) error {
	newServer := func(h http.Handler, timeout time.Duration) *http.Server {
		return &http.Server{
			Handler:           h,
			TLSConfig:         d.tls,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       timeout,
			WriteTimeout:      timeout,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
		}
	}
	type served struct {
		name string
		srv  *http.Server
	}
	var servers []served
	errc := make(chan error, 3)
	start := func(name string, srv *http.Server, ln net.Listener) {
		servers = append(servers, served{name, srv})
		go func() {
			if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s endpoint: %w", name, err)
			}
		}()
	}
	var device http.Handler = https.NewHandler(d.registrar, d.cfg.Device.RetryAfterSeconds, d.log)
	if d.cfg.MQTT.WebSocketEnabled() {
		device = withWebSocket(device, d.mqtt.WebSocket())
	}
	start("device", newServer(device, 30*time.Second), d.device)
	addrs := map[string]string{"device": d.device.Addr().String(), "idScope": d.scope}
	if d.mqtt != nil {
		if err := d.mqtt.Start(d.mqttLn); err != nil {
			return err
		}
		addrs["mqtt"] = d.mqttLn.Addr().String()
	}
	if d.service != nil {
		// Bulk imports of thousands of enrollments take longer than a device call.
		start("service", newServer(d.service, 5*time.Minute), d.serviceLn)
		addrs["service"] = d.serviceLn.Addr().String()
	}

	admin := localadmin.NewServer(d, d.log)
	go func() {
		if err := admin.Serve(d.admin); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin socket: %w", err)
		}
	}()
	d.hubs.check(ctx)
	var msrv *http.Server
	if d.mln != nil {
		msrv = &http.Server{Handler: d.metrics.Handler(d.ready), ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
		go msrv.Serve(d.mln)
		addrs["metrics"] = d.mln.Addr().String()
	}
	closeAll := func() {
		for _, s := range servers {
			s.srv.Close()
		}
		admin.Close()
		if msrv != nil {
			msrv.Close()
		}
	}

	// The health checks once before READY: they prove each TLS socket
	// completes a handshake and the store takes a write.
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	herr := d.Health(hctx)
	cancel()
	if herr != nil {
		closeAll()
		return fmt.Errorf("start-up health check: %w", herr)
	}
	if readyFile != "" {
		data, _ := json.Marshal(addrs)
		if err := pki.WriteFileAtomic(readyFile, data, 0o644); err != nil {
			closeAll()
			return fmt.Errorf("write ready file: %w", err)
		}
	}

	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); d.pruneLoop(ctx) }()
	go func() { defer wg.Done(); d.watchCatalog(ctx) }()
	go func() { defer wg.Done(); d.superviseLoop(ctx) }()

	d.log.Info("edgeprovd ready", "idScope", d.scope, "device", addrs["device"], "service", addrs["service"],
		"mqtt", addrs["mqtt"], "mqttWebSocket", d.cfg.MQTT.WebSocketEnabled(),
		"socketActivated", d.activated, "linkedHubs", len(d.hubs.Linked()), "watchdog", d.watchdog, "version", Version)
	// READY only now: the store is open, the listeners are bound and served.
	d.sdNotify(d.notify.Ready(d.Status()))

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	d.log.Info("edgeprovd stopping: draining in-flight requests")
	d.sdNotify(d.notify.Stopping("stopping: draining in-flight requests"))
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if d.mqtt != nil {
		// MQTT sessions are long-lived: they are closed, not drained; a device
		// reconnects and re-sends its request.
		d.mqtt.Close()
	}
	for _, s := range servers {
		if serr := s.srv.Shutdown(sctx); serr != nil {
			d.log.Warn("shutdown", "endpoint", s.name, "error", serr)
		}
	}
	if msrv != nil {
		msrv.Shutdown(sctx)
	}
	admin.Close()
	wg.Wait()
	return err
}

// sdNotify logs a failed notification: the service manager will act on the
// missing message (a start timeout), the log says why.
func (d *Daemon) sdNotify(err error) {
	if err != nil {
		d.log.Warn("systemd notification failed", "error", err)
	}
}

// Status is the one-line status systemd shows: what is served, since when,
// and the health check's verdict when it fails.
func (d *Daemon) Status() string {
	ind, groups := 0, 0
	if f := d.catalog.Current(); f != nil {
		ind, groups = len(f.Individuals), len(f.Groups)
	}
	s := fmt.Sprintf("serving %d enrollments and %d enrollment groups (ID scope %s); %d registrations since start, %d refused",
		ind, groups, d.scope, d.registrar.registrations.Load(), d.registrar.refused.Load())
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.health != nil {
		s = "UNHEALTHY: " + d.health.Error() + "; " + s
	}
	return s
}

// Reload re-reads the config (linked hubs) and the catalog between
// RELOADING=1 and READY=1, as systemctl reload expects; whatever fails to load
// or validate is refused and the current one keeps serving.
func (d *Daemon) Reload() error {
	d.sdNotify(d.notify.Reloading())
	cfgErr, catErr := d.ReloadConfig(), d.ReloadCatalog()
	status := d.Status()
	if catErr != nil {
		status = "catalog reload refused, the previous catalog keeps serving; " + status
	}
	if cfgErr != nil {
		status = "config reload refused, the previous linked hubs keep serving; " + status
	}
	err := errors.Join(cfgErr, catErr)
	d.sdNotify(d.notify.Ready(status))
	return err
}

// superviseLoop runs the health checks every half watchdog interval (every
// 15 s without a watchdog, for the status line), pings the watchdog only
// while they pass, and keeps the status line current.
func (d *Daemon) superviseLoop(ctx context.Context) {
	interval := 15 * time.Second
	if d.watchdog > 0 {
		interval = d.watchdog / 2
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	last := d.Status()
	for {
		hctx, cancel := context.WithTimeout(ctx, interval/2)
		err := d.Health(hctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		d.mu.Lock()
		was := d.health
		d.health = err
		d.mu.Unlock()
		switch {
		case err != nil && was == nil:
			d.log.Error("health check failed; watchdog pings stop until it passes", "error", err)
		case err == nil && was != nil:
			d.log.Info("health check passes again")
		}
		if err == nil && d.watchdog > 0 {
			d.sdNotify(d.notify.Watchdog())
		}
		if s := d.Status(); s != last {
			d.sdNotify(d.notify.Status(s))
			last = s
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// withWebSocket routes DPS's WebSocket path to the MQTT endpoint and
// everything else to the HTTPS device API. Query strings do not matter; the
// path is matched exactly, as the SDKs send it.
func withWebSocket(api, ws http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == mqttep.WebSocketPath {
			ws.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}

// window builds a per-device limiter; -1 means none.
func window(limit int, period time.Duration) *throttle.Window {
	if limit < 0 {
		return nil
	}
	// A million devices' windows at most, a few tens of MB.
	return throttle.NewWindow(limit, period, 1<<20)
}

// ready is the readiness check: the store answers a read.
func (d *Daemon) ready(ctx context.Context) error {
	return d.store.View(ctx, func(store.Tx) error { return nil })
}

func (d *Daemon) pruneLoop(ctx context.Context) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := d.store.PruneOperations(ctx, time.Now().Add(-d.cfg.Operations.Retention.Duration))
			if err != nil {
				d.log.Warn("prune operations", "error", err)
			} else if n > 0 {
				d.log.Debug("pruned operations", "count", n)
			}
		}
	}
}

// countingRegistrar counts registrations for the status line: those that
// made an operation (attested; assigned, or failed as DPS fails them) and
// those refused outright (unknown device, bad proof, bad request).
type countingRegistrar struct {
	*registration.Service
	registrations, refused atomic.Int64
}

func (c *countingRegistrar) Register(ctx context.Context, req registration.RegisterRequest) (*dpsapi.RegistrationOperationStatus, error) {
	st, err := c.Service.Register(ctx, req)
	if err == nil {
		c.registrations.Add(1)
	} else {
		c.refused.Add(1)
	}
	return st, err
}
