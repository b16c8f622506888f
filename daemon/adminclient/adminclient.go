// Package adminclient is a Go client of edgeprovd's service API (the DPS
// service REST API plus edgeprov's /edgeprov/ additions). edgeprovctl talks
// to the daemon only through it.
package adminclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/serviceapi"
	"github.com/edgeprov/edgeprov/daemon/store"
)

// APIVersion is the service API version sent.
const APIVersion = "2021-10-01"

// ConnectionString is "HostName=<host[:port]>;SharedAccessKeyName=<policy>;SharedAccessKey=<base64>".
type ConnectionString struct {
	HostName, KeyName string
	Key               []byte
}

// LogValue keeps the key out of logs.
func (c *ConnectionString) LogValue() slog.Value {
	return slog.GroupValue(slog.String("hostName", c.HostName), slog.String("keyName", c.KeyName))
}

// ParseConnectionString parses a service connection string.
func ParseConnectionString(s string) (*ConnectionString, error) {
	c := &ConnectionString{}
	var key string
	for _, part := range strings.Split(strings.TrimSpace(s), ";") {
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, errors.New("connection string: every part must be Name=value")
		}
		switch strings.ToLower(k) {
		case "hostname":
			c.HostName = v
		case "sharedaccesskeyname":
			c.KeyName = v
		case "sharedaccesskey":
			key = v
		}
	}
	if c.HostName == "" || c.KeyName == "" || key == "" {
		return nil, errors.New("connection string: HostName, SharedAccessKeyName and SharedAccessKey are required")
	}
	var err error
	if c.Key, err = sas.DecodeKey(key); err != nil {
		return nil, fmt.Errorf("connection string: SharedAccessKey: %w", err)
	}
	return c, nil
}

// Options tune a Client.
type Options struct {
	// CAFile is a PEM bundle to trust (the daemon's CA); empty: system roots.
	CAFile string
	// Address, if set, is dialed instead of HostName (host:port).
	Address string
	// TokenTTL is the lifetime of the SAS tokens made per request (default 1h, as the SDKs).
	TokenTTL time.Duration
	// Timeout bounds one request (default 5m: a large bulk operation).
	Timeout   time.Duration
	Transport http.RoundTripper
}

// Client calls the service API.
type Client struct {
	cs   *ConnectionString
	base string
	http *http.Client
	ttl  time.Duration
	now  func() time.Time
}

// New returns a client for the connection string.
func New(connectionString string, opts Options) (*Client, error) {
	cs, err := ParseConnectionString(connectionString)
	if err != nil {
		return nil, err
	}
	host := cs.HostName
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(strings.Trim(host, "[]"), "443") // DPS's port
	}
	if opts.Address != "" {
		host = opts.Address
	}
	c := &Client{cs: cs, base: "https://" + host, ttl: opts.TokenTTL, now: time.Now}
	if c.ttl == 0 {
		c.ttl = time.Hour
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	rt := opts.Transport
	if rt == nil {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: hostOnly(cs.HostName)}
		if opts.CAFile != "" {
			pem, err := os.ReadFile(opts.CAFile)
			if err != nil {
				return nil, fmt.Errorf("CA file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("CA file %s holds no PEM certificate", opts.CAFile)
			}
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tc
		tr.MaxIdleConnsPerHost = 16
		rt = tr
	}
	c.http = &http.Client{Transport: rt, Timeout: opts.Timeout}
	return c, nil
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// HostName is the connection string's host.
func (c *Client) HostName() string { return c.cs.HostName }

// Error is a refusal from the service, with DPS's error body.
type Error struct {
	StatusCode int
	ErrorCode  int    `json:"errorCode"`
	TrackingID string `json:"trackingId"`
	Message    string `json:"message"`
}

func (e *Error) Error() string {
	if e.ErrorCode != 0 {
		return fmt.Sprintf("%s (HTTP %d, error %d)", e.Message, e.StatusCode, e.ErrorCode)
	}
	return fmt.Sprintf("HTTP %d: %s", e.StatusCode, e.Message)
}

// IsStatus reports whether err is an *Error with that HTTP status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == status
}

type call struct {
	method, path string
	body         any
	hdr          map[string]string
	out          any
}

func (c *Client) do(ctx context.Context, cl call) (*http.Response, error) {
	var body io.Reader
	if cl.body != nil {
		data, err := json.Marshal(cl.body)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, c.base+cl.path+"?api-version="+APIVersion, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", sas.Build(c.cs.Key, c.cs.HostName, c.now().Add(c.ttl), c.cs.KeyName))
	req.Header.Set("Accept", "application/json")
	if cl.body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	for k, v := range cl.hdr {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		e := &Error{StatusCode: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(data))
			if e.Message == "" {
				e.Message = http.StatusText(resp.StatusCode)
			}
		}
		return resp, e
	}
	if cl.out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, cl.out); err != nil {
			return resp, fmt.Errorf("%s %s: decode response: %w", cl.method, cl.path, err)
		}
	}
	return resp, nil
}

// Kind selects individual enrollments or enrollment groups.
type Kind int

// Kinds.
const (
	Individuals Kind = iota
	Groups
)

func (k Kind) path() string {
	if k == Groups {
		return "/enrollmentGroups"
	}
	return "/enrollments"
}

func esc(id string) string { return "/" + url.PathEscape(id) }

// Source is where an enrollment comes from: "catalog" or "api".
type Source = string

// Individual gets an individual enrollment (keys omitted, as DPS shows them).
func (c *Client) Individual(ctx context.Context, id string) (*enrollment.Individual, Source, error) {
	var e enrollment.Individual
	resp, err := c.do(ctx, call{method: "GET", path: Individuals.path() + esc(id), out: &e})
	if err != nil {
		return nil, "", err
	}
	return &e, resp.Header.Get(serviceapi.HeaderSource), nil
}

// Group gets an enrollment group.
func (c *Client) Group(ctx context.Context, id string) (*enrollment.Group, Source, error) {
	var g enrollment.Group
	resp, err := c.do(ctx, call{method: "GET", path: Groups.path() + esc(id), out: &g})
	if err != nil {
		return nil, "", err
	}
	return &g, resp.Header.Get(serviceapi.HeaderSource), nil
}

// PutIndividual creates (ifMatch "") or replaces (ifMatch = etag or "*").
func (c *Client) PutIndividual(ctx context.Context, e *enrollment.Individual, ifMatch string) (*enrollment.Individual, error) {
	var out enrollment.Individual
	_, err := c.do(ctx, call{method: "PUT", path: Individuals.path() + esc(e.RegistrationID), body: e, hdr: map[string]string{"If-Match": ifMatch}, out: &out})
	return &out, err
}

// PutGroup creates or replaces a group.
func (c *Client) PutGroup(ctx context.Context, g *enrollment.Group, ifMatch string) (*enrollment.Group, error) {
	var out enrollment.Group
	_, err := c.do(ctx, call{method: "PUT", path: Groups.path() + esc(g.EnrollmentGroupID), body: g, hdr: map[string]string{"If-Match": ifMatch}, out: &out})
	return &out, err
}

// Delete deletes an enrollment or group; a non-empty ifMatch must match.
func (c *Client) Delete(ctx context.Context, k Kind, id, ifMatch string) error {
	_, err := c.do(ctx, call{method: "DELETE", path: k.path() + esc(id), hdr: map[string]string{"If-Match": ifMatch}})
	return err
}

// AttestationMechanism returns an enrollment's attestation with its keys.
func (c *Client) AttestationMechanism(ctx context.Context, k Kind, id string) (*enrollment.Attestation, error) {
	var a enrollment.Attestation
	_, err := c.do(ctx, call{method: "POST", path: k.path() + esc(id) + "/attestationmechanism", out: &a})
	return &a, err
}

// BulkResult is the outcome of a bulk operation.
type BulkResult = serviceapi.BulkEnrollmentOperationResult

// BulkIndividuals runs a bulk operation on individual enrollments.
func (c *Client) BulkIndividuals(ctx context.Context, mode string, items []*enrollment.Individual) (*BulkResult, error) {
	var out BulkResult
	_, err := c.do(ctx, call{method: "POST", path: "/enrollments", body: serviceapi.BulkEnrollmentOperation{Mode: mode, Enrollments: items}, out: &out})
	return &out, err
}

// BulkGroups runs a bulk operation on groups.
func (c *Client) BulkGroups(ctx context.Context, mode string, items []*enrollment.Group) (*BulkResult, error) {
	var out BulkResult
	_, err := c.do(ctx, call{method: "POST", path: "/enrollmentGroups", body: serviceapi.BulkEnrollmentGroupOperation{Mode: mode, EnrollmentGroups: items}, out: &out})
	return &out, err
}

// Pager walks a paged query.
type Pager[T any] struct {
	c    *Client
	path string
	hdr  map[string]string
	cont string
	done bool
}

// Done reports whether the last page was read.
func (p *Pager[T]) Done() bool { return p.done }

// Next returns the next page.
func (p *Pager[T]) Next(ctx context.Context) ([]T, error) {
	if p.done {
		return nil, nil
	}
	hdr := map[string]string{"x-ms-continuation": p.cont}
	for k, v := range p.hdr {
		hdr[k] = v
	}
	var page []T
	resp, err := p.c.do(ctx, call{method: "POST", path: p.path, body: serviceapi.QuerySpecification{Query: "*"}, hdr: hdr, out: &page})
	if err != nil {
		return nil, err
	}
	p.cont = resp.Header.Get("x-ms-continuation")
	p.done = p.cont == ""
	return page, nil
}

// All drains the query.
func (p *Pager[T]) All(ctx context.Context) ([]T, error) {
	var out []T
	for !p.done {
		page, err := p.Next(ctx)
		if err != nil {
			return out, err
		}
		out = append(out, page...)
	}
	return out, nil
}

// QueryOptions shape a query.
type QueryOptions struct {
	PageSize int
	// Source restricts enrollment queries to "catalog" or "api" (edgeprov).
	Source Source
}

func (o QueryOptions) headers() map[string]string {
	h := map[string]string{serviceapi.HeaderSource: o.Source}
	if o.PageSize > 0 {
		h["x-ms-max-item-count"] = strconv.Itoa(o.PageSize)
	}
	return h
}

// QueryIndividuals pages through individual enrollments.
func (c *Client) QueryIndividuals(o QueryOptions) *Pager[*enrollment.Individual] {
	return &Pager[*enrollment.Individual]{c: c, path: "/enrollments/query", hdr: o.headers()}
}

// QueryGroups pages through enrollment groups.
func (c *Client) QueryGroups(o QueryOptions) *Pager[*enrollment.Group] {
	return &Pager[*enrollment.Group]{c: c, path: "/enrollmentGroups/query", hdr: o.headers()}
}

// RegistrationState is a device's registration record as the service shows it.
type RegistrationState = serviceapi.DeviceRegistrationState

// Registration gets a registration record.
func (c *Client) Registration(ctx context.Context, id string) (*RegistrationState, error) {
	var s RegistrationState
	_, err := c.do(ctx, call{method: "GET", path: "/registrations" + esc(id), out: &s})
	return &s, err
}

// DeleteRegistration deletes a registration record.
func (c *Client) DeleteRegistration(ctx context.Context, id, ifMatch string) error {
	_, err := c.do(ctx, call{method: "DELETE", path: "/registrations" + esc(id), hdr: map[string]string{"If-Match": ifMatch}})
	return err
}

// QueryRegistrations pages through the registrations of a group, or all of
// them when group is "" (an edgeprov addition).
func (c *Client) QueryRegistrations(group string, o QueryOptions) *Pager[*RegistrationState] {
	path := "/edgeprov/registrations/query"
	if group != "" {
		path = "/registrations" + esc(group) + "/query"
	}
	return &Pager[*RegistrationState]{c: c, path: path, hdr: o.headers()}
}

// Device is a device identity of the local hub registry.
type Device = store.Identity

// Hubs lists the linked hubs whose registry edgeprov keeps.
func (c *Client) Hubs(ctx context.Context) ([]string, error) {
	var out struct{ Hubs []string }
	_, err := c.do(ctx, call{method: "GET", path: "/edgeprov/hubs", out: &out})
	return out.Hubs, err
}

// QueryDevices pages through a local hub's device identities.
func (c *Client) QueryDevices(hub string, o QueryOptions) *Pager[*Device] {
	return &Pager[*Device]{c: c, path: "/edgeprov/hubs" + esc(hub) + "/devices/query", hdr: o.headers()}
}

// Device gets a device identity.
func (c *Client) Device(ctx context.Context, hub, id string) (*Device, error) {
	var d Device
	_, err := c.do(ctx, call{method: "GET", path: "/edgeprov/hubs" + esc(hub) + "/devices" + esc(id), out: &d})
	return &d, err
}

// Status returns the daemon's status document, and the server's Date header
// (for a clock check).
func (c *Client) Status(ctx context.Context, out any) (time.Time, error) {
	resp, err := c.do(ctx, call{method: "GET", path: "/edgeprov/status", out: out})
	if err != nil {
		return time.Time{}, err
	}
	date, _ := http.ParseTime(resp.Header.Get("Date"))
	return date, nil
}

// PeerCertificates dials the service endpoint and returns the chain it serves
// (for a certificate expiry check), verified as a request would be.
func (c *Client) PeerCertificates(ctx context.Context) ([]*x509.Certificate, error) {
	req, err := http.NewRequestWithContext(ctx, "HEAD", c.base+"/", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.TLS == nil {
		return nil, errors.New("not a TLS connection")
	}
	return resp.TLS.PeerCertificates, nil
}
