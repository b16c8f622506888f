// Package config loads edgeprovd's YAML configuration: strict parse, defaults,
// then Validate, every problem reported with its file, line and field.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/strictyaml"
	"github.com/edgeprov/edgeprov/hsm"
)

// Version is the config format this build reads.
const Version = 1

// Config is edgeprovd.yaml.
type Config struct {
	Version int `yaml:"version"`
	// StateDir holds the store, the TLS material and the policy keys made by
	// edgeprovd init. Relative paths are relative to the config file.
	StateDir string `yaml:"stateDir"`
	// Catalog is the YAML enrollment catalog (optional).
	Catalog string `yaml:"catalog,omitempty"`
	// CatalogReload says how the catalog follows edits of its file.
	CatalogReload CatalogReload `yaml:"catalogReload,omitempty"`
	Store         Store         `yaml:"store,omitempty"`
	Device        Device        `yaml:"device"`
	// Service is the service operations endpoint (DPS service REST API); it
	// listens only when this section is present ("service: {}" for defaults).
	Service *Service `yaml:"service,omitempty"`
	// MQTT serves devices over MQTT as well; absent: HTTPS only.
	MQTT       *MQTT      `yaml:"mqtt,omitempty"`
	Allocation Allocation `yaml:"allocation,omitempty"`
	LinkedHubs []Hub      `yaml:"linkedHubs"`
	Operations Operations `yaml:"operations,omitempty"`
	Metrics    Metrics    `yaml:"metrics,omitempty"`
	Throttling Throttling `yaml:"throttling,omitempty"`
	Log        Log        `yaml:"log,omitempty"`
	// IssuingCA certifies device CSRs (optional).
	IssuingCA *IssuingCA `yaml:"issuingCA,omitempty"`
	// Secrets says where the data key sealing secrets in the store comes
	// from; default: a key file in stateDir that init creates.
	Secrets Secrets `yaml:"secrets,omitempty"`

	dir, file string
}

// Store selects the storage backend.
type Store struct {
	// Type is bolt (embedded, one file in stateDir; the default) or postgres
	// (several replicas share one database).
	Type     string    `yaml:"type,omitempty"`
	Postgres *Postgres `yaml:"postgres,omitempty"`
}

// Postgres configures the PostgreSQL store.
type Postgres struct {
	// DSN is a libpq connection string or URL; use DSNFile when it holds a
	// password, so the secret stays out of the config.
	DSN      string `yaml:"dsn,omitempty"`
	DSNFile  string `yaml:"dsnFile,omitempty"`
	MaxConns int32  `yaml:"maxConns,omitempty"`
}

// Device is the device provisioning endpoint.
type Device struct {
	// Listen is the HTTPS address, default ":8443".
	Listen string `yaml:"listen,omitempty"`
	// HostNames go into the server certificate's SANs at init (DNS names or IPs).
	HostNames []string `yaml:"hostNames,omitempty"`
	// RetryAfterSeconds is told to polling devices; default 1.
	RetryAfterSeconds int `yaml:"retryAfterSeconds,omitempty"`
	// SASClockSkew is how far past its expiry a device token is still accepted.
	SASClockSkew Duration `yaml:"sasClockSkew,omitempty"`
}

// CatalogReload tunes the catalog's live reload.
type CatalogReload struct {
	// PollInterval is how often the catalog file (and its key files) are
	// checked for changes; default 2s, 0s turns polling off (SIGHUP still reloads).
	PollInterval Duration `yaml:"pollInterval,omitempty"`
}

// MQTT is the device provisioning endpoint over MQTT 3.1.1 (protocol.md §3):
// on its own TLS listener, and over WebSockets on the HTTPS device listener.
type MQTT struct {
	// Listen is the MQTT over TLS address, default ":8883" (the port the SDKs use).
	Listen string `yaml:"listen,omitempty"`
	// WebSocket also serves MQTT over WebSockets at /$iothub/websocket on the
	// device listener (the SDKs dial it on port 443). Default true.
	WebSocket *bool `yaml:"webSocket,omitempty"`
	// MaxConnections caps connected MQTT clients; the next one is told
	// "server unavailable". Default 10000.
	MaxConnections int `yaml:"maxConnections,omitempty"`
	// ConnectTimeout bounds the TLS handshake and the CONNECT packet. Default 10s.
	ConnectTimeout Duration `yaml:"connectTimeout,omitempty"`
	// MaxKeepAlive replaces a client's keep-alive of 0 or above it. Default 5m.
	MaxKeepAlive Duration `yaml:"maxKeepAlive,omitempty"`
	// PacketRate (per second) and PacketBurst bound what one connection may
	// send; a client over the limit is disconnected. Defaults 10 and 40.
	PacketRate  float64 `yaml:"packetRate,omitempty"`
	PacketBurst int     `yaml:"packetBurst,omitempty"`
}

// WebSocketEnabled says whether MQTT over WebSockets is served.
func (m *MQTT) WebSocketEnabled() bool { return m != nil && (m.WebSocket == nil || *m.WebSocket) }

// Service is the service operations endpoint.
type Service struct {
	// Listen is the HTTPS address, default ":9443". The server certificate is
	// the instance's (made at init for device.hostNames).
	Listen string `yaml:"listen,omitempty"`
	// HostNames are accepted as the host of a token's sr, besides
	// device.hostNames and the host the request was sent to.
	HostNames []string `yaml:"hostNames,omitempty"`
	// Policies are shared access policies besides provisioningserviceowner
	// (made by init, every right).
	Policies []Policy `yaml:"policies,omitempty"`
	// MaxBulkItems bounds one bulk enrollment operation; default 10000.
	MaxBulkItems int `yaml:"maxBulkItems,omitempty"`
	// SASClockSkew is how far past its expiry a service token is accepted.
	SASClockSkew Duration `yaml:"sasClockSkew,omitempty"`
}

// Policy is a shared access policy.
type Policy struct {
	Name string `yaml:"name"`
	// KeyFile holds the base64 primary key on its first line and, optionally,
	// a secondary key on its second. Relative to this file.
	KeyFile string `yaml:"keyFile"`
	// Rights: ServiceConfig, EnrollmentRead, EnrollmentWrite,
	// RegistrationStatusRead, RegistrationStatusWrite.
	Rights []string `yaml:"rights"`
}

// OwnerPolicy is the policy init creates, with every right.
const OwnerPolicy = "provisioningserviceowner"

// Rights are the shared access policy rights the service API checks.
var Rights = []string{"ServiceConfig", "EnrollmentRead", "EnrollmentWrite", "RegistrationStatusRead", "RegistrationStatusWrite"}

// Metrics is the plain-HTTP listener for /metrics, /healthz and /readyz.
type Metrics struct {
	// Listen is host:port; empty turns the listener off. Keep it on loopback
	// or a management network: it is not authenticated.
	Listen string `yaml:"listen,omitempty"`
}

// Throttling limits what one device may do, and the daemon's load. A limit of
// -1 turns that limit off.
type Throttling struct {
	// PollsPerDevice polls in any PollWindow (DPS: 5 per 10 s).
	PollsPerDevice int      `yaml:"pollsPerDevice,omitempty"`
	PollWindow     Duration `yaml:"pollWindow,omitempty"`
	// RegistrationsPerDevice register calls in any RegistrationWindow.
	RegistrationsPerDevice int      `yaml:"registrationsPerDevice,omitempty"`
	RegistrationWindow     Duration `yaml:"registrationWindow,omitempty"`
	// MaxInFlight registrations run at once; more wait up to AdmissionWait,
	// then get 429 with retry-after.
	MaxInFlight   int      `yaml:"maxInFlight,omitempty"`
	AdmissionWait Duration `yaml:"admissionWait,omitempty"`
}

// IssuingCA is the CA that certifies devices' CSRs at registration.
type IssuingCA struct {
	// Name is what enrollments' clientCertificateIssuancePolicy
	// certificateAuthorityName may name; default "edgeprov".
	Name string `yaml:"name,omitempty"`
	// CertFile holds the CA certificate (PEM), then its issuers up to the
	// root; devices receive them after their own certificate.
	CertFile string `yaml:"certFile"`
	// KeyFile is the CA key (PKCS#8, PKCS#1 or SEC 1 PEM), or KeyURI names it
	// in a PKCS#11 token (RFC 7512).
	KeyFile string `yaml:"keyFile,omitempty"`
	KeyURI  string `yaml:"keyURI,omitempty"`
}

// Secrets locates the data key of daemon/secrets: a key file, or an HMAC
// (generic secret) key in a PKCS#11 token from which it is derived.
type Secrets struct {
	KeyFile string `yaml:"keyFile,omitempty"`
	KeyURI  string `yaml:"keyURI,omitempty"`
}

// Operations tunes how long device operations stay pollable.
type Operations struct {
	Retention Duration `yaml:"retention,omitempty"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level,omitempty"`
	Format string `yaml:"format,omitempty"`
}

// Duration is a time.Duration written as "30s", "5m".
type Duration struct {
	time.Duration
	set bool // given in the file (even as 0s): no default replaces it
}

// UnmarshalText implements encoding.TextUnmarshaler (yaml.v3 uses it for scalars).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use e.g. 30s, 5m, 24h)", b)
	}
	d.Duration, d.set = v, true
	return nil
}

// UnmarshalYAML implements yaml.Unmarshaler. yaml.v3 reports an UnmarshalText
// error without its line and stops decoding; a TypeError keeps the line and
// joins the other decoding errors.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: a duration must be a scalar such as 30s, 5m, 24h", n.Line)}}
	}
	if err := d.UnmarshalText([]byte(n.Value)); err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Load reads, defaults and validates a config file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load on bytes already read; path places errors and relative paths.
func Parse(path string, data []byte) (*Config, error) {
	var c Config
	doc, err := strictyaml.Decode(path, data, &c, Version)
	if err != nil {
		return nil, err
	}
	c.dir, c.file = filepath.Dir(path), path
	c.defaults()
	if err := doc.Annotate(c.Validate()); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) defaults() {
	if c.Store.Type == "" {
		c.Store.Type = "bolt"
	}
	if p := c.Store.Postgres; p != nil && p.MaxConns == 0 {
		p.MaxConns = 32
	}
	if c.Device.Listen == "" {
		c.Device.Listen = ":8443"
	}
	if len(c.Device.HostNames) == 0 {
		c.Device.HostNames = []string{"localhost", "127.0.0.1", "::1"}
	}
	if m := c.MQTT; m != nil {
		if m.Listen == "" {
			m.Listen = ":8883"
		}
		if m.WebSocket == nil {
			on := true
			m.WebSocket = &on
		}
		if m.MaxConnections == 0 {
			m.MaxConnections = 10000
		}
		if !m.ConnectTimeout.set {
			m.ConnectTimeout.Duration = 10 * time.Second
		}
		if !m.MaxKeepAlive.set {
			m.MaxKeepAlive.Duration = 5 * time.Minute
		}
		if m.PacketRate == 0 {
			m.PacketRate = 10
		}
		if m.PacketBurst == 0 {
			m.PacketBurst = 40
		}
	}
	if c.Device.RetryAfterSeconds == 0 {
		c.Device.RetryAfterSeconds = 1
	}
	if !c.Device.SASClockSkew.set {
		c.Device.SASClockSkew.Duration = 5 * time.Minute
	}
	c.Allocation.defaults()
	if !c.Operations.Retention.set {
		c.Operations.Retention.Duration = 24 * time.Hour
	}
	th := &c.Throttling
	if th.PollsPerDevice == 0 {
		th.PollsPerDevice = 5
	}
	if !th.PollWindow.set {
		th.PollWindow.Duration = 10 * time.Second
	}
	if th.RegistrationsPerDevice == 0 {
		th.RegistrationsPerDevice = 10
	}
	if !th.RegistrationWindow.set {
		th.RegistrationWindow.Duration = time.Minute
	}
	if th.MaxInFlight == 0 {
		th.MaxInFlight = 512
	}
	if !th.AdmissionWait.set {
		th.AdmissionWait.Duration = 10 * time.Second
	}
	if !c.CatalogReload.PollInterval.set {
		c.CatalogReload.PollInterval.Duration = 2 * time.Second
	}
	if c.Service != nil {
		if c.Service.Listen == "" {
			c.Service.Listen = ":9443"
		}
		if c.Service.MaxBulkItems == 0 {
			c.Service.MaxBulkItems = 10000
		}
		if !c.Service.SASClockSkew.set {
			c.Service.SASClockSkew.Duration = 5 * time.Minute
		}
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	for i := range c.LinkedHubs {
		c.LinkedHubs[i].defaults()
	}
}

// Validate returns every problem, each with its field path.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) { errs = append(errs, strictyaml.Errorf(path, format, args...)) }
	if c.StateDir == "" {
		bad("stateDir", "required")
	}
	switch c.Store.Type {
	case "bolt":
		if c.Store.Postgres != nil {
			bad("store.postgres", "only used with type: postgres")
		}
	case "postgres":
		p := c.Store.Postgres
		if p == nil || (p.DSN == "") == (p.DSNFile == "") {
			bad("store.postgres", "give exactly one of dsn or dsnFile")
		}
		if p != nil && (p.MaxConns < 1 || p.MaxConns > 1000) {
			bad("store.postgres.maxConns", "must be 1 to 1000")
		}
	default:
		bad("store.type", "%q is not bolt or postgres", c.Store.Type)
	}
	if _, _, err := net.SplitHostPort(c.Device.Listen); err != nil {
		bad("device.listen", "%q is not a host:port address", c.Device.Listen)
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "%q is not a host:port address", c.Metrics.Listen)
		}
	}
	if c.Device.RetryAfterSeconds < 1 || c.Device.RetryAfterSeconds > 300 {
		bad("device.retryAfterSeconds", "must be 1 to 300 (the C SDK ignores other values)")
	}
	if c.Device.SASClockSkew.Duration < 0 || c.Device.SASClockSkew.Duration > time.Hour {
		bad("device.sasClockSkew", "must be between 0 and 1h")
	}
	if d := c.CatalogReload.PollInterval.Duration; d < 0 || (d > 0 && d < 100*time.Millisecond) {
		bad("catalogReload.pollInterval", "must be 0s (off) or at least 100ms")
	}
	if s := c.Service; s != nil {
		if _, _, err := net.SplitHostPort(s.Listen); err != nil {
			bad("service.listen", "%q is not a host:port address", s.Listen)
		}
		if s.MaxBulkItems < 1 || s.MaxBulkItems > 100000 {
			bad("service.maxBulkItems", "must be 1 to 100000")
		}
		if s.SASClockSkew.Duration < 0 || s.SASClockSkew.Duration > time.Hour {
			bad("service.sasClockSkew", "must be between 0 and 1h")
		}
		seen := map[string]bool{strings.ToLower(OwnerPolicy): true}
		for i, p := range s.Policies {
			path := fmt.Sprintf("service.policies[%d]", i)
			switch {
			case p.Name == "":
				bad(path+".name", "required")
			case strings.EqualFold(p.Name, OwnerPolicy):
				bad(path+".name", "%s is made by edgeprovd init (state/policies/%s.key); choose another name", OwnerPolicy, OwnerPolicy)
			case seen[strings.ToLower(p.Name)]:
				bad(path+".name", "policy %q is declared twice", p.Name)
			}
			seen[strings.ToLower(p.Name)] = true
			if p.KeyFile == "" {
				bad(path+".keyFile", "required (keys are never written in the config)")
			}
			if len(p.Rights) == 0 {
				bad(path+".rights", "at least one right is required (%s)", strings.Join(Rights, ", "))
			}
			for j, r := range p.Rights {
				ok := false
				for _, known := range Rights {
					ok = ok || strings.EqualFold(r, known)
				}
				if !ok {
					bad(fmt.Sprintf("%s.rights[%d]", path, j), "unknown right %q (%s)", r, strings.Join(Rights, ", "))
				}
			}
		}
	}
	if m := c.MQTT; m != nil {
		if _, _, err := net.SplitHostPort(m.Listen); err != nil {
			bad("mqtt.listen", "%q is not a host:port address", m.Listen)
		}
		if m.MaxConnections < 1 || m.MaxConnections > 1000000 {
			bad("mqtt.maxConnections", "must be 1 to 1000000")
		}
		if m.ConnectTimeout.Duration < time.Second || m.ConnectTimeout.Duration > 5*time.Minute {
			bad("mqtt.connectTimeout", "must be between 1s and 5m")
		}
		if m.MaxKeepAlive.Duration < 10*time.Second || m.MaxKeepAlive.Duration > 65535*time.Second {
			bad("mqtt.maxKeepAlive", "must be between 10s and 65535s (MQTT's limit)")
		}
		if m.PacketRate <= 0 || m.PacketRate > 10000 {
			bad("mqtt.packetRate", "must be above 0 and at most 10000 per second")
		}
		if m.PacketBurst < 1 || m.PacketBurst > 10000 {
			bad("mqtt.packetBurst", "must be 1 to 10000")
		}
	}
	c.Allocation.validate(bad)
	th := c.Throttling
	for _, v := range []struct {
		path string
		n    int
	}{{"throttling.pollsPerDevice", th.PollsPerDevice}, {"throttling.registrationsPerDevice", th.RegistrationsPerDevice}, {"throttling.maxInFlight", th.MaxInFlight}} {
		if v.n < -1 || v.n == 0 {
			bad(v.path, "must be positive, or -1 for no limit")
		}
	}
	for _, v := range []struct {
		path string
		d    time.Duration
	}{{"throttling.pollWindow", th.PollWindow.Duration}, {"throttling.registrationWindow", th.RegistrationWindow.Duration}, {"throttling.admissionWait", th.AdmissionWait.Duration}} {
		if v.d <= 0 || v.d > time.Hour {
			bad(v.path, "must be between 0 and 1h")
		}
	}
	if c.Operations.Retention.Duration < time.Minute {
		bad("operations.retention", "must be at least 1m")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not text or json", c.Log.Format)
	}
	if len(c.LinkedHubs) == 0 {
		bad("linkedHubs", "at least one linked hub is required")
	}
	names, hosts := map[string]bool{}, map[string]bool{}
	for i, h := range c.LinkedHubs {
		p := fmt.Sprintf("linkedHubs[%d]", i)
		if h.Name == "" {
			bad(p+".name", "required")
		} else if names[strings.ToLower(h.Name)] {
			bad(p+".name", "hub name %q is used twice", h.Name)
		}
		names[strings.ToLower(h.Name)] = true
		if h.HostName == "" {
			bad(p+".hostName", "required")
		} else if hosts[strings.ToLower(h.HostName)] {
			bad(p+".hostName", "host name %q is used twice", h.HostName)
		}
		hosts[strings.ToLower(h.HostName)] = true
		h.validate(p, bad)
	}
	if ca := c.IssuingCA; ca != nil {
		if ca.CertFile == "" {
			bad("issuingCA.certFile", "required")
		}
		if (ca.KeyFile == "") == (ca.KeyURI == "") {
			bad("issuingCA", "give exactly one of keyFile or keyURI")
		}
		if ca.KeyURI != "" {
			if err := checkKeyURI(ca.KeyURI); err != nil {
				bad("issuingCA.keyURI", "%v", err)
			}
		}
		if ca.Name != "" {
			if err := enrollment.ValidateCAName(ca.Name); err != nil {
				bad("issuingCA.name", "%v", err)
			}
		}
	}
	if c.Secrets.KeyFile != "" && c.Secrets.KeyURI != "" {
		bad("secrets", "give keyFile or keyURI, not both")
	}
	if c.Secrets.KeyURI != "" {
		if err := checkKeyURI(c.Secrets.KeyURI); err != nil {
			bad("secrets.keyURI", "%v", err)
		}
	}
	return errors.Join(errs...)
}

// checkKeyURI requires a pkcs11: URI that names a key (object or id).
func checkKeyURI(s string) error {
	u, err := hsm.ParseURI(s)
	if err != nil {
		return err
	}
	if _, err := u.KeyRef(); err != nil {
		return err
	}
	return nil
}

// SecretsKeyPath is the data key file: secrets.keyFile, or the one init
// creates in stateDir.
func (c *Config) SecretsKeyPath() string {
	if c.Secrets.KeyFile != "" {
		return c.Path(c.Secrets.KeyFile)
	}
	return filepath.Join(c.Path(c.StateDir), "secrets.key")
}

// File is the config file's path.
func (c *Config) File() string { return c.file }

// Path resolves p relative to the config file.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// State layout under StateDir.
func (c *Config) StorePath() string      { return filepath.Join(c.Path(c.StateDir), "edgeprov.db") }
func (c *Config) TLSDir() string         { return filepath.Join(c.Path(c.StateDir), "tls") }
func (c *Config) CACertPath() string     { return filepath.Join(c.TLSDir(), "ca.pem") }
func (c *Config) CAKeyPath() string      { return filepath.Join(c.TLSDir(), "ca.key") }
func (c *Config) ServerCertPath() string { return filepath.Join(c.TLSDir(), "server.pem") }
func (c *Config) ServerKeyPath() string  { return filepath.Join(c.TLSDir(), "server.key") }
func (c *Config) PolicyDir() string      { return filepath.Join(c.Path(c.StateDir), "policies") }

// AdminSocketPath is the running daemon's local admin socket (online backup,
// health), inside the state directory so only its owner reaches it.
func (c *Config) AdminSocketPath() string { return filepath.Join(c.Path(c.StateDir), "admin.sock") }
