// Package webhook is the hub driver for anything edgeprov has no driver for:
// it tells an HTTPS endpoint of the operator's about device identities, with a
// small JSON contract.
//
// Requests (paths relative to the configured URL; {deviceId} path-escaped):
//
//	POST   {url}/devices/{deviceId}   create or update the identity (an upsert:
//	                                   the same request twice must be harmless)
//	DELETE {url}/devices/{deviceId}   remove it (an unknown device is not an error)
//	GET    {url}/devices/{deviceId}   optional: the twin and capabilities, read
//	                                   when a device migrates away (404: unknown;
//	                                   405 or 501: not supported)
//
// The POST body (and the GET answer, which needs only twin and capabilities):
//
//	{
//	  "hubHostName": "broker-3.plant.example",
//	  "deviceId": "sensor-0042",
//	  "status": "enabled",                       // or "disabled": keep it, refuse its logins
//	  "authentication": {"type": "sas", "password": "…"},
//	  "capabilities": {"iotEdge": false},
//	  "twin": {"tags": {…}, "properties": {"desired": {…}}}   // only when the twin is to be replaced
//	}
//
// authentication is {"type": "sas", "password": P} for symmetric-key and TPM
// devices, where P = sas.MQTTPassword(deviceKey, deviceId) =
// base64(HMAC-SHA256(deviceKey, "edgeprov-mqtt-password:" + deviceId)), which
// the device derives too (the key itself is never sent); or {"type":
// "selfSigned" | "certificateAuthority", "commonName": CN, "x509Thumbprint":
// {"primaryThumbprint": SHA-256 hex}} (selfSigned) for X.509 devices.
//
// Every request is signed with the shared secret:
//
//	X-Edgeprov-Timestamp: <unix seconds>
//	X-Edgeprov-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + METHOD + "." + path + "." + body)>
//
// where path is the request's escaped path and body the exact bytes sent
// (empty for GET and DELETE). Receivers compare in constant time and refuse
// timestamps more than 5 minutes off, so a captured request cannot be replayed
// later or against another device.
//
// Answers: 2xx done; 400, 401, 403, 409, 422 refuse the device (no retry);
// 408, 429 and 5xx are retried.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/hub"
)

var (
	_ hub.Driver = (*Driver)(nil)
	_ hub.Reader = (*Driver)(nil)
)

// Signature headers.
const (
	HeaderTimestamp = "X-Edgeprov-Timestamp"
	HeaderSignature = "X-Edgeprov-Signature"
)

// Sign returns the X-Edgeprov-Signature value for a request.
func Sign(secret []byte, timestamp, method, escapedPath string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp + "." + method + "." + escapedPath + "."))
	m.Write(body)
	return "v1=" + hex.EncodeToString(m.Sum(nil))
}

// Body is the POST body (and, for twin and capabilities, the GET answer).
type Body struct {
	HubHostName    string          `json:"hubHostName"`
	DeviceID       string          `json:"deviceId"`
	Status         string          `json:"status"`
	Authentication *Authentication `json:"authentication,omitempty"`
	Capabilities   Capabilities    `json:"capabilities"`
	Twin           *hub.Twin       `json:"twin,omitempty"`
}

// Authentication says how the device logs in.
type Authentication struct {
	Type           string          `json:"type"`
	Password       string          `json:"password,omitempty"`
	CommonName     string          `json:"commonName,omitempty"`
	X509Thumbprint *X509Thumbprint `json:"x509Thumbprint,omitempty"`
}

// X509Thumbprint holds the device certificate's SHA-256 thumbprint
// (upper-case hex).
type X509Thumbprint struct {
	PrimaryThumbprint string `json:"primaryThumbprint,omitempty"`
}

// Capabilities are the device's capabilities.
type Capabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// Config configures the driver of one hub.
type Config struct {
	// URL is the https base URL of the endpoint.
	URL string
	// Secret signs every request.
	Secret []byte
	// HubHostName names the hub in the bodies.
	HubHostName string
	TLS         *tls.Config
	Calls       hub.Calls
	Logger      *slog.Logger
	Now         func() time.Time
}

// Driver calls one endpoint.
type Driver struct {
	cfg    Config
	base   *url.URL
	client *http.Client
}

// New returns the driver.
func New(cfg Config) (*Driver, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("webhook: url %q is not an https URL", cfg.URL)
	}
	if len(cfg.Secret) < 16 {
		return nil, errors.New("webhook: the shared secret must be at least 16 bytes")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLS != nil {
		tlsCfg = cfg.TLS.Clone()
	}
	tr.TLSClientConfig = tlsCfg
	tr.MaxIdleConnsPerHost = 32
	u.Path = strings.TrimRight(u.Path, "/")
	return &Driver{cfg: cfg, base: u, client: &http.Client{Transport: tr,
		// A redirect would send the signed body elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}, nil
}

// Close releases idle connections.
func (d *Driver) Close() error {
	d.client.CloseIdleConnections()
	return nil
}

// EnsureDevice implements hub.Driver.
func (d *Driver) EnsureDevice(ctx context.Context, dev hub.Device) error {
	b := Body{HubHostName: d.cfg.HubHostName, DeviceID: dev.DeviceID, Status: "enabled", Capabilities: Capabilities{IoTEdge: dev.IoTEdge}, Twin: dev.Twin}
	if dev.Disabled {
		b.Status = "disabled"
	}
	switch dev.AuthType {
	case hub.AuthSAS:
		if len(dev.Key) == 0 {
			return fmt.Errorf("webhook %s: device %s: %w: no device key", d.base.Host, dev.DeviceID, hub.ErrRefused)
		}
		b.Authentication = &Authentication{Type: dev.AuthType, Password: sas.MQTTPassword(dev.Key, dev.DeviceID)}
	case hub.AuthSelfSigned, hub.AuthCertificateAuthority:
		if dev.CommonName == "" {
			return fmt.Errorf("webhook %s: device %s: %w: no certificate details", d.base.Host, dev.DeviceID, hub.ErrRefused)
		}
		b.Authentication = &Authentication{Type: dev.AuthType, CommonName: dev.CommonName}
		if dev.Thumbprint != "" {
			b.Authentication.X509Thumbprint = &X509Thumbprint{PrimaryThumbprint: dev.Thumbprint}
		}
	default:
		return fmt.Errorf("webhook %s: device %s: %w: unknown auth type %q", d.base.Host, dev.DeviceID, hub.ErrRefused, dev.AuthType)
	}
	body, err := json.Marshal(b)
	if err != nil {
		return err
	}
	if _, err := d.call(ctx, http.MethodPost, dev.DeviceID, body); err != nil {
		return fmt.Errorf("webhook %s: ensure device %s: %w", d.base.Host, dev.DeviceID, err)
	}
	return nil
}

// DeleteDevice implements hub.Driver.
func (d *Driver) DeleteDevice(ctx context.Context, deviceID string) error {
	if _, err := d.call(ctx, http.MethodDelete, deviceID, nil); err != nil && !errors.Is(err, hub.ErrNotFound) {
		return fmt.Errorf("webhook %s: delete device %s: %w", d.base.Host, deviceID, err)
	}
	return nil
}

// errUnsupported: the endpoint does not implement GET.
var errUnsupported = errors.New("the endpoint does not read devices back (GET answered 405/501)")

// ReadDevice implements hub.Reader with the optional GET.
func (d *Driver) ReadDevice(ctx context.Context, deviceID string) (*hub.DeviceData, error) {
	data, err := d.call(ctx, http.MethodGet, deviceID, nil)
	if err != nil {
		return nil, fmt.Errorf("webhook %s: read device %s: %w", d.base.Host, deviceID, err)
	}
	var b Body
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("webhook %s: read device %s: %w", d.base.Host, deviceID, err)
	}
	out := &hub.DeviceData{IoTEdge: &b.Capabilities.IoTEdge}
	if b.Twin != nil {
		out.Twin = *b.Twin
	}
	return out, nil
}

func (d *Driver) call(ctx context.Context, method, deviceID string, body []byte) ([]byte, error) {
	u := *d.base
	u.Path = d.base.Path + "/devices/" + deviceID
	u.RawPath = d.base.EscapedPath() + "/devices/" + url.PathEscape(deviceID)
	var out []byte
	err := d.cfg.Calls.Do(ctx, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
		if err != nil {
			return hub.Permanent(err)
		}
		ts := strconv.FormatInt(d.cfg.Now().Unix(), 10)
		req.Header.Set(HeaderTimestamp, ts)
		req.Header.Set(HeaderSignature, Sign(d.cfg.Secret, ts, method, req.URL.EscapedPath(), body))
		req.Header.Set("Accept", "application/json")
		if body != nil {
			req.Header.Set("Content-Type", "application/json; charset=utf-8")
		}
		res, err := d.client.Do(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		if err != nil {
			return err
		}
		s := res.StatusCode
		switch {
		case s >= 200 && s < 300:
			out = data
			return nil
		case s == http.StatusNotFound && method != http.MethodPost:
			return hub.ErrNotFound
		case method == http.MethodGet && (s == http.StatusMethodNotAllowed || s == http.StatusNotImplemented):
			return hub.Permanent(errUnsupported)
		case s == http.StatusRequestTimeout || s == http.StatusTooManyRequests || s >= 500:
			return fmt.Errorf("answered HTTP %d", s)
		case s == http.StatusBadRequest || s == http.StatusUnauthorized || s == http.StatusForbidden || s == http.StatusConflict || s == http.StatusUnprocessableEntity:
			return hub.Permanent(fmt.Errorf("%w: answered HTTP %d %s", hub.ErrRefused, s, snippet(data)))
		}
		return hub.Permanent(fmt.Errorf("answered HTTP %d %s", s, snippet(data)))
	})
	return out, err
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
