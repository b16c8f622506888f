// Package iothub is the hub driver for Azure IoT Hub: it creates device
// identities and sets their twins through the IoT Hub registry REST API
// (api-version 2021-04-12), authenticated with a SAS token made from the hub's
// connection string (a shared access policy with registry write rights).
//
//	PUT    /devices/{id}   create (no If-Match) or update (If-Match: etag)
//	GET    /devices/{id}   read the identity and its etag
//	DELETE /devices/{id}   remove (If-Match: *)
//	GET    /twins/{id}     read tags and desired properties (and the twin etag)
//	PATCH  /twins/{id}     set tags and desired properties (If-Match: twin etag)
//
// Symmetric-key and TPM devices are created with the key they proved
// themselves with as both primary and secondary key (what DPS registers);
// X.509 devices with their certificate thumbprints (selfSigned) or CA
// authentication. Every call is idempotent: an identity that already matches
// is not written again, concurrent writers are detected with etags.
package iothub

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/hub"
)

var (
	_ hub.Driver = (*Driver)(nil)
	_ hub.Reader = (*Driver)(nil)
)

// APIVersion is the registry API version used by default.
const APIVersion = "2021-04-12"

// tokenTTL is how long the SAS tokens made here are valid.
const tokenTTL = time.Hour

// ConnectionString is a parsed IoT Hub service connection string.
type ConnectionString struct {
	HostName, KeyName string
	Key               []byte
}

// LogValue keeps the key out of logs.
func (c ConnectionString) LogValue() slog.Value {
	return slog.GroupValue(slog.String("hostName", c.HostName), slog.String("keyName", c.KeyName))
}

// ParseConnectionString parses HostName=…;SharedAccessKeyName=…;SharedAccessKey=….
func ParseConnectionString(s string) (ConnectionString, error) {
	var c ConnectionString
	var key string
	for part := range strings.SplitSeq(strings.TrimSpace(s), ";") {
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return c, fmt.Errorf("connection string: %q is not key=value", redactPart(part))
		}
		switch strings.ToLower(k) {
		case "hostname":
			c.HostName = v
		case "sharedaccesskeyname":
			c.KeyName = v
		case "sharedaccesskey":
			key = v
		case "deviceid", "moduleid", "sharedaccesssignature":
			return c, fmt.Errorf("connection string: %s: a service connection string (shared access policy) is needed, not a device's", k)
		default:
			return c, fmt.Errorf("connection string: unknown key %q", k)
		}
	}
	if c.HostName == "" || c.KeyName == "" || key == "" {
		return c, errors.New("connection string: HostName, SharedAccessKeyName and SharedAccessKey are required")
	}
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil || len(k) == 0 {
		return c, errors.New("connection string: SharedAccessKey is not base64")
	}
	c.Key = k
	return c, nil
}

func redactPart(p string) string {
	if k, _, ok := strings.Cut(p, "="); ok {
		return k + "=…"
	}
	if len(p) > 8 {
		return p[:4] + "…"
	}
	return p
}

// Config configures the driver of one hub.
type Config struct {
	Connection ConnectionString
	// Endpoint overrides https://<HostName> (a private endpoint; tests).
	Endpoint   string
	APIVersion string
	// TLS for the HTTPS calls (RootCAs from the config's caFile).
	TLS    *tls.Config
	Calls  hub.Calls
	Logger *slog.Logger
	Now    func() time.Time
}

// Driver manages the identities of one IoT hub.
type Driver struct {
	cfg    Config
	base   string
	client *http.Client
	log    *slog.Logger

	mu       sync.Mutex
	token    string
	tokenExp time.Time
}

// New returns the driver.
func New(cfg Config) (*Driver, error) {
	if cfg.Connection.HostName == "" || len(cfg.Connection.Key) == 0 {
		return nil, errors.New("azure-iothub: a connection string is required")
	}
	base := cfg.Endpoint
	if base == "" {
		base = "https://" + cfg.Connection.HostName
	}
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("azure-iothub: endpoint %q is not an https URL", base)
	}
	if cfg.APIVersion == "" {
		cfg.APIVersion = APIVersion
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
	d := &Driver{cfg: cfg, base: strings.TrimRight(base, "/"), client: &http.Client{Transport: tr}, log: cfg.Logger}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	return d, nil
}

// Close releases idle connections.
func (d *Driver) Close() error {
	d.client.CloseIdleConnections()
	return nil
}

// Device is IoT Hub's device identity, as far as provisioning sets it.
type Device struct {
	DeviceID       string          `json:"deviceId"`
	ETag           string          `json:"etag,omitempty"`
	Status         string          `json:"status"`
	Authentication *Authentication `json:"authentication"`
	Capabilities   *Capabilities   `json:"capabilities,omitempty"`
}

// Authentication is a device's authentication mechanism.
type Authentication struct {
	Type           string          `json:"type"`
	SymmetricKey   *SymmetricKey   `json:"symmetricKey,omitempty"`
	X509Thumbprint *X509Thumbprint `json:"x509Thumbprint,omitempty"`
}

// SymmetricKey holds base64 keys.
type SymmetricKey struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

// X509Thumbprint holds hex certificate thumbprints.
type X509Thumbprint struct {
	PrimaryThumbprint   string `json:"primaryThumbprint"`
	SecondaryThumbprint string `json:"secondaryThumbprint,omitempty"`
}

// Capabilities are the device's capabilities.
type Capabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// twin is the part of a twin the driver reads and writes.
type twin struct {
	ETag       string         `json:"etag,omitempty"`
	Tags       map[string]any `json:"tags"`
	Properties struct {
		Desired map[string]any `json:"desired"`
	} `json:"properties"`
}

// apiError is an answer other than 2xx.
type apiError struct {
	Status int
	Msg    string
}

func (e *apiError) Error() string {
	if e.Msg == "" {
		return fmt.Sprintf("IoT Hub answered HTTP %d", e.Status)
	}
	return fmt.Sprintf("IoT Hub answered HTTP %d: %s", e.Status, e.Msg)
}

func statusOf(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// EnsureDevice creates or updates the identity and, when dev.Twin is set,
// replaces the twin's tags and desired properties.
func (d *Driver) EnsureDevice(ctx context.Context, dev hub.Device) error {
	want, err := identityOf(dev)
	if err != nil {
		return fmt.Errorf("azure-iothub %s: device %s: %w", d.cfg.Connection.HostName, dev.DeviceID, err)
	}
	created := false
	// A concurrent writer shows as 409 (created meanwhile) or 412 (changed
	// meanwhile): read again and redo.
	for attempt := 0; ; attempt++ {
		created, err = d.putDevice(ctx, want)
		if s := statusOf(err); (s == http.StatusConflict || s == http.StatusPreconditionFailed) && attempt < 3 {
			continue
		}
		break
	}
	if err != nil {
		return fmt.Errorf("azure-iothub %s: ensure device %s: %w", d.cfg.Connection.HostName, dev.DeviceID, err)
	}
	if dev.Twin == nil {
		return nil
	}
	for attempt := 0; ; attempt++ {
		err = d.setTwin(ctx, dev.DeviceID, dev.Twin, created)
		if statusOf(err) == http.StatusPreconditionFailed && attempt < 3 {
			created = false
			continue
		}
		break
	}
	if err != nil {
		return fmt.Errorf("azure-iothub %s: twin of %s: %w", d.cfg.Connection.HostName, dev.DeviceID, err)
	}
	return nil
}

func identityOf(dev hub.Device) (*Device, error) {
	out := &Device{DeviceID: dev.DeviceID, Status: "enabled", Capabilities: &Capabilities{IoTEdge: dev.IoTEdge}}
	if dev.Disabled {
		out.Status = "disabled"
	}
	switch dev.AuthType {
	case hub.AuthSAS:
		if len(dev.Key) == 0 {
			return nil, fmt.Errorf("%w: no device key", hub.ErrRefused)
		}
		k := base64.StdEncoding.EncodeToString(dev.Key)
		out.Authentication = &Authentication{Type: "sas", SymmetricKey: &SymmetricKey{PrimaryKey: k, SecondaryKey: k}}
	case hub.AuthSelfSigned:
		if dev.Thumbprint == "" {
			return nil, fmt.Errorf("%w: a self-signed X.509 device needs its certificate thumbprint", hub.ErrRefused)
		}
		out.Authentication = &Authentication{Type: "selfSigned", X509Thumbprint: &X509Thumbprint{PrimaryThumbprint: dev.Thumbprint}}
	case hub.AuthCertificateAuthority:
		out.Authentication = &Authentication{Type: "certificateAuthority"}
	default:
		return nil, fmt.Errorf("%w: unknown auth type %q", hub.ErrRefused, dev.AuthType)
	}
	return out, nil
}

// putDevice creates the identity, or updates it when it differs from want.
func (d *Driver) putDevice(ctx context.Context, want *Device) (created bool, err error) {
	var cur Device
	err = d.call(ctx, http.MethodGet, "/devices/"+url.PathEscape(want.DeviceID), nil, "", &cur)
	switch {
	case statusOf(err) == http.StatusNotFound:
		body := *want
		body.ETag = ""
		return true, d.call(ctx, http.MethodPut, "/devices/"+url.PathEscape(want.DeviceID), &body, "", nil)
	case err != nil:
		return false, err
	}
	if sameIdentity(&cur, want) {
		return false, nil
	}
	body := *want
	body.ETag = cur.ETag
	return false, d.call(ctx, http.MethodPut, "/devices/"+url.PathEscape(want.DeviceID), &body, quoteETag(cur.ETag), nil)
}

func sameIdentity(a, b *Device) bool {
	capA, capB := a.Capabilities != nil && a.Capabilities.IoTEdge, b.Capabilities != nil && b.Capabilities.IoTEdge
	return strings.EqualFold(a.Status, b.Status) && capA == capB && reflect.DeepEqual(canonical(a.Authentication), canonical(b.Authentication))
}

// canonical drops the empty members IoT Hub returns for the mechanisms a
// device does not use ("x509Thumbprint":{"primaryThumbprint":null,…}).
func canonical(a *Authentication) Authentication {
	if a == nil {
		return Authentication{}
	}
	out := Authentication{Type: a.Type}
	if k := a.SymmetricKey; k != nil && (k.PrimaryKey != "" || k.SecondaryKey != "") {
		out.SymmetricKey = k
	}
	if t := a.X509Thumbprint; t != nil && (t.PrimaryThumbprint != "" || t.SecondaryThumbprint != "") {
		out.X509Thumbprint = t
	}
	return out
}

// quoteETag makes an If-Match value; IoT Hub's device etags come unquoted in
// the body.
func quoteETag(e string) string {
	if strings.HasPrefix(e, `"`) {
		return e
	}
	return `"` + e + `"`
}

// setTwin makes the twin's tags and desired properties equal to t: one PATCH
// that sets t's members and removes (null) the others.
func (d *Driver) setTwin(ctx context.Context, deviceID string, t *hub.Twin, fresh bool) error {
	path := "/twins/" + url.PathEscape(deviceID)
	var cur twin
	ifMatch := "*"
	if !fresh {
		if err := d.call(ctx, http.MethodGet, path, nil, "", &cur); err != nil {
			return err
		}
		ifMatch = quoteETag(cur.ETag)
	}
	var patch twin
	patch.Tags = mergePatch(cur.Tags, t.Tags)
	patch.Properties.Desired = mergePatch(withoutMeta(cur.Properties.Desired), t.Desired)
	if len(patch.Tags) == 0 && len(patch.Properties.Desired) == 0 {
		return nil
	}
	return d.call(ctx, http.MethodPatch, path, &patch, ifMatch, nil)
}

// mergePatch returns the JSON merge patch (RFC 7386, as IoT Hub applies twin
// patches) that turns cur into want; nil when they are equal.
func mergePatch(cur, want map[string]any) map[string]any {
	out := map[string]any{}
	for k, w := range want {
		c, ok := cur[k]
		wm, wIsMap := w.(map[string]any)
		cm, cIsMap := c.(map[string]any)
		switch {
		case ok && wIsMap && cIsMap:
			if p := mergePatch(cm, wm); len(p) > 0 {
				out[k] = p
			}
		case ok && reflect.DeepEqual(normalize(c), normalize(w)):
		default:
			out[k] = w
		}
	}
	for k := range cur {
		if _, ok := want[k]; !ok {
			out[k] = nil
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// normalize passes v through JSON so that numbers compare equal whatever
// their Go type.
func normalize(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

func withoutMeta(m map[string]any) map[string]any {
	out := maps.Clone(m)
	for k := range out {
		if strings.HasPrefix(k, "$") {
			delete(out, k)
		}
	}
	return out
}

// DeleteDevice removes the identity; an unknown device is not an error.
func (d *Driver) DeleteDevice(ctx context.Context, deviceID string) error {
	err := d.call(ctx, http.MethodDelete, "/devices/"+url.PathEscape(deviceID), nil, "*", nil)
	if err != nil && statusOf(err) != http.StatusNotFound {
		return fmt.Errorf("azure-iothub %s: delete device %s: %w", d.cfg.Connection.HostName, deviceID, err)
	}
	return nil
}

// ReadDevice implements hub.Reader.
func (d *Driver) ReadDevice(ctx context.Context, deviceID string) (*hub.DeviceData, error) {
	var dev Device
	err := d.call(ctx, http.MethodGet, "/devices/"+url.PathEscape(deviceID), nil, "", &dev)
	if statusOf(err) == http.StatusNotFound {
		return nil, fmt.Errorf("azure-iothub %s: device %s: %w", d.cfg.Connection.HostName, deviceID, hub.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("azure-iothub %s: read device %s: %w", d.cfg.Connection.HostName, deviceID, err)
	}
	var t twin
	if err := d.call(ctx, http.MethodGet, "/twins/"+url.PathEscape(deviceID), nil, "", &t); err != nil {
		return nil, fmt.Errorf("azure-iothub %s: read twin of %s: %w", d.cfg.Connection.HostName, deviceID, err)
	}
	edge := dev.Capabilities != nil && dev.Capabilities.IoTEdge
	return &hub.DeviceData{Twin: hub.Twin{Tags: t.Tags, Desired: withoutMeta(t.Properties.Desired)}, IoTEdge: &edge}, nil
}

// call makes one REST call under the retry policy. 401/403 and other 4xx are
// permanent (401/403 and 400 as hub.ErrRefused); 404, 409 and 412 are
// returned for the caller to handle; 429, 5xx and transport errors are
// retried.
func (d *Driver) call(ctx context.Context, method, path string, in any, ifMatch string, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return hub.Permanent(err)
		}
	}
	return d.cfg.Calls.Do(ctx, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, method, d.base+path+"?api-version="+url.QueryEscape(d.cfg.APIVersion), bytes.NewReader(body))
		if err != nil {
			return hub.Permanent(err)
		}
		req.Header.Set("Authorization", d.sasToken())
		req.Header.Set("Accept", "application/json")
		if in != nil {
			req.Header.Set("Content-Type", "application/json; charset=utf-8")
		}
		if ifMatch != "" {
			req.Header.Set("If-Match", ifMatch)
		}
		res, err := d.client.Do(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		data, err := io.ReadAll(io.LimitReader(res.Body, 4<<20))
		if err != nil {
			return err
		}
		if res.StatusCode >= 200 && res.StatusCode < 300 {
			if out != nil && len(data) > 0 {
				if err := json.Unmarshal(data, out); err != nil {
					return hub.Permanent(fmt.Errorf("IoT Hub answer to %s %s: %w", method, path, err))
				}
			}
			return nil
		}
		ae := &apiError{Status: res.StatusCode, Msg: errorMessage(data)}
		switch {
		case res.StatusCode == http.StatusUnauthorized, res.StatusCode == http.StatusForbidden, res.StatusCode == http.StatusBadRequest:
			return hub.Permanent(fmt.Errorf("%w: %w", hub.ErrRefused, ae))
		case res.StatusCode == http.StatusTooManyRequests, res.StatusCode >= 500:
			return ae
		}
		return hub.Permanent(ae)
	})
}

// errorMessage extracts IoT Hub's error message ({"Message": "ErrorCode:…"}).
func errorMessage(b []byte) string {
	var e struct{ Message, ExceptionMessage string }
	if json.Unmarshal(b, &e) == nil && e.Message != "" {
		return e.Message
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// sasToken returns a service SAS token for the hub, renewed 5 minutes before
// it expires.
func (d *Driver) sasToken() string {
	now := d.cfg.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.token != "" && now.Add(5*time.Minute).Before(d.tokenExp) {
		return d.token
	}
	c := d.cfg.Connection
	d.tokenExp = now.Add(tokenTTL)
	d.token = sas.Build(c.Key, url.QueryEscape(c.HostName), d.tokenExp, c.KeyName)
	return d.token
}
