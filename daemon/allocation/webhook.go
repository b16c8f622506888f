package allocation

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
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/hub"
)

var (
	// ErrWebhookUnavailable is returned (wrapped) when the custom allocation
	// webhook gave no answer: unreachable, too slow, or a 5xx/408/429 on every
	// attempt.
	ErrWebhookUnavailable = errors.New("custom allocation webhook unavailable")
	// ErrWebhookResponse is returned (wrapped) when the webhook answered with
	// something that is not a usable AllocationResponse: a 4xx, a body that is
	// not the JSON object DPS expects, or a hub it was not offered.
	ErrWebhookResponse = errors.New("custom allocation webhook gave an unusable answer")
)

// MaxWebhookResponse bounds what is read of a webhook's answer.
const MaxWebhookResponse = 1 << 20

// WebhookConfig configures custom allocation.
type WebhookConfig struct {
	// Timeout bounds one attempt (connect, send, answer); Retries is how many
	// more attempts follow one that got no answer; Backoff is the first pause
	// between attempts (doubling).
	Timeout time.Duration
	Retries int
	Backoff time.Duration
	// RootCAs are trusted for the webhook's certificate; nil: the system's.
	RootCAs *x509.CertPool
	Logger  *slog.Logger
}

// Webhook is DPS's custom allocation: it POSTs the AllocationRequest of
// protocol.md §7 to the enrollment's customAllocationDefinition.webhookUrl and
// takes the hub, initial twin and payload from the AllocationResponse, so an
// allocation function written for DPS can be re-hosted unchanged.
//
// Calls are independent (no lock is shared between devices); each attempt is
// bounded by Timeout, so a slow webhook delays only the device it allocates.
type Webhook struct {
	client *http.Client
	calls  hub.Calls
	log    *slog.Logger
}

var (
	_ Policy  = (*Webhook)(nil)
	_ Decider = (*Webhook)(nil)
)

// NewWebhook returns the custom allocation policy.
func NewWebhook(cfg WebhookConfig) *Webhook {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
	tr.MaxIdleConnsPerHost = 64 // a factory registers many devices at once
	tr.Proxy = nil              // allocation functions are reached directly, as DPS does
	w := &Webhook{
		client: &http.Client{Transport: tr,
			// A redirect would carry the request to a URL nobody enrolled.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		calls: hub.Calls{Timeout: cfg.Timeout, Retries: cfg.Retries, Backoff: cfg.Backoff},
		log:   cfg.Logger,
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	return w
}

// Close releases idle connections.
func (w *Webhook) Close() { w.client.CloseIdleConnections() }

// Allocate implements Policy.
func (w *Webhook) Allocate(ctx context.Context, req Request) (*hub.Linked, error) {
	d, err := w.Decide(ctx, req)
	if err != nil {
		return nil, err
	}
	return d.Hub, nil
}

// AllocationRequest is what DPS posts to an allocation function.
type AllocationRequest struct {
	IndividualEnrollment json.RawMessage      `json:"individualEnrollment,omitempty"`
	EnrollmentGroup      json.RawMessage      `json:"enrollmentGroup,omitempty"`
	DeviceRuntimeContext DeviceRuntimeContext `json:"deviceRuntimeContext"`
	LinkedHubs           []string             `json:"linkedHubs"`
}

// DeviceRuntimeContext is the device's side of an AllocationRequest: exactly
// one of X509, SymmetricKey and TPM is set.
type DeviceRuntimeContext struct {
	RegistrationID        string                 `json:"registrationId"`
	CurrentIotHubHostName string                 `json:"currentIotHubHostName,omitempty"`
	CurrentDeviceID       string                 `json:"currentDeviceId,omitempty"`
	X509                  *X509Context           `json:"x509,omitempty"`
	SymmetricKey          *struct{}              `json:"symmetricKey,omitempty"`
	TPM                   *dpsapi.TPMAttestation `json:"tpm,omitempty"`
	Payload               json.RawMessage        `json:"payload,omitempty"`
}

// X509Context describes an X.509 device's certificate in the shape of the
// service API's X509Attestation (protocol.md §11: DPS documents it only as
// "certificate details").
type X509Context struct {
	ClientCertificates struct {
		Primary struct {
			Info *dpsapi.X509CertificateInfo `json:"info,omitempty"`
		} `json:"primary"`
	} `json:"clientCertificates"`
}

// AllocationResponse is what an allocation function answers. JSON field
// matching is case-insensitive, so the documentation's "iotHubHostname"
// spelling is accepted as well.
type AllocationResponse struct {
	IoTHubHostName string                  `json:"iotHubHostName"`
	InitialTwin    *enrollment.InitialTwin `json:"initialTwin,omitempty"`
	Payload        json.RawMessage         `json:"payload,omitempty"`
}

// BuildRequest assembles the AllocationRequest DPS would send for req.
func BuildRequest(req Request) (*AllocationRequest, error) {
	out := &AllocationRequest{LinkedHubs: make([]string, 0, len(req.Candidates))}
	for _, h := range req.Candidates {
		out.LinkedHubs = append(out.LinkedHubs, h.HostName)
	}
	var err error
	switch {
	case req.Individual != nil:
		e := *req.Individual
		e.Common = withoutSecrets(e.Common)
		out.IndividualEnrollment, err = json.Marshal(&e)
	case req.Group != nil:
		g := *req.Group
		g.Common = withoutSecrets(g.Common)
		g.RegistrationIDPrefixes = nil // an edgeprov extension DPS does not have
		out.EnrollmentGroup, err = json.Marshal(&g)
	default:
		return nil, errors.New("the request names no enrollment")
	}
	if err != nil {
		return nil, fmt.Errorf("serialize enrollment: %w", err)
	}
	d := req.Device
	rc := &out.DeviceRuntimeContext
	rc.RegistrationID = d.RegistrationID
	if rc.RegistrationID == "" {
		rc.RegistrationID = req.RegistrationID
	}
	rc.CurrentIotHubHostName, rc.CurrentDeviceID = d.CurrentHub, d.CurrentDeviceID
	switch d.Attestation {
	case enrollment.AttestationX509:
		rc.X509 = &X509Context{}
		if c := d.X509; c != nil {
			rc.X509.ClientCertificates.Primary.Info = dpsapi.NewX509CertificateInfo(c)
		}
	case enrollment.AttestationTPM:
		rc.TPM = d.TPM
		if rc.TPM == nil && req.Individual != nil && req.Individual.Attestation.TPM != nil {
			t := req.Individual.Attestation.TPM
			rc.TPM = &dpsapi.TPMAttestation{EndorsementKey: t.EndorsementKey, StorageRootKey: t.StorageRootKey}
		}
	default:
		rc.SymmetricKey = &struct{}{}
	}
	if p := bytes.TrimSpace(d.Payload); len(p) > 0 && !bytes.Equal(p, []byte("null")) {
		rc.Payload = p
	}
	return out, nil
}

// withoutSecrets returns c with the attestation's keys left out and the
// webhook URL's query (a function key) masked, as DPS serializes the
// enrollment for an allocation function.
func withoutSecrets(c enrollment.Common) enrollment.Common {
	a := enrollment.Attestation{Type: c.Attestation.Type, X509: c.Attestation.X509}
	if t := c.Attestation.TPM; t != nil {
		a.TPM = &enrollment.TPMAttestation{EndorsementKey: t.EndorsementKey, StorageRootKey: t.StorageRootKey}
	}
	c.Attestation = a
	if d := c.CustomAllocationDefinition; d != nil {
		masked := *d
		if base, _, ok := strings.Cut(d.WebhookURL, "?"); ok {
			masked.WebhookURL = base + "?****"
		}
		c.CustomAllocationDefinition = &masked
	}
	return c
}

// Decide implements Decider.
func (w *Webhook) Decide(ctx context.Context, req Request) (*Decision, error) {
	common := req.common()
	if common == nil || common.CustomAllocationDefinition == nil || common.CustomAllocationDefinition.WebhookURL == "" {
		return nil, fmt.Errorf("%w: the enrollment has no customAllocationDefinition.webhookUrl", ErrWebhookResponse)
	}
	u, err := url.Parse(common.CustomAllocationDefinition.WebhookURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%w: webhookUrl is not an https URL", ErrWebhookResponse)
	}
	// The query usually holds a function key: it stays out of messages.
	where := u.Scheme + "://" + u.Host + u.Path
	body, err := BuildRequest(req)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("serialize allocation request: %w", err)
	}

	var resp *AllocationResponse
	attempts := 0
	start := time.Now()
	err = w.calls.Do(ctx, func(ctx context.Context) error {
		attempts++
		var err error
		resp, err = w.post(ctx, u.String(), data)
		return err
	})
	elapsed := time.Since(start)
	if err != nil {
		w.log.LogAttrs(ctx, slog.LevelWarn, "custom allocation failed", slog.String("webhook", where),
			slog.String("registrationId", req.RegistrationID), slog.Int("attempts", attempts), slog.Duration("elapsed", elapsed), slog.Any("error", err))
		if errors.Is(err, ErrWebhookResponse) {
			return nil, fmt.Errorf("custom allocation webhook %s: %w", where, err)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrWebhookUnavailable, where, err)
	}
	h := findHub(req.Candidates, resp.IoTHubHostName)
	if h == nil {
		offered := make([]string, len(req.Candidates))
		for i, c := range req.Candidates {
			offered[i] = c.HostName
		}
		return nil, fmt.Errorf("%w: webhook %s chose hub %q, which is not one of the linked hubs it was offered (%s)",
			ErrWebhookResponse, where, resp.IoTHubHostName, strings.Join(offered, ", "))
	}
	w.log.LogAttrs(ctx, slog.LevelDebug, "custom allocation", slog.String("webhook", where), slog.String("registrationId", req.RegistrationID),
		slog.String("hub", h.HostName), slog.Int("attempts", attempts), slog.Duration("elapsed", elapsed))
	return &Decision{Hub: h, InitialTwin: resp.InitialTwin, Payload: resp.Payload}, nil
}

func (r *Request) common() *enrollment.Common {
	switch {
	case r.Individual != nil:
		return &r.Individual.Common
	case r.Group != nil:
		return &r.Group.Common
	}
	return nil
}

func findHub(cands []*hub.Linked, name string) *hub.Linked {
	for _, h := range cands {
		if name != "" && strings.EqualFold(h.HostName, name) {
			return h
		}
	}
	return nil
}

// post makes one attempt. Errors worth another attempt (no answer, 5xx, 408,
// 429) are returned as they are; the others are marked permanent.
func (w *Webhook) post(ctx context.Context, target string, data []byte) (*AllocationResponse, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(data))
	if err != nil {
		return nil, hub.Permanent(fmt.Errorf("%w: %w", ErrWebhookResponse, err))
	}
	hreq.Header.Set("Content-Type", "application/json; charset=utf-8")
	hreq.Header.Set("Accept", "application/json")
	res, err := w.client.Do(hreq)
	if err != nil {
		return nil, w.describeTransportError(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, MaxWebhookResponse+1))
	if err != nil {
		return nil, w.describeTransportError(err)
	}
	switch {
	case res.StatusCode >= 500, res.StatusCode == http.StatusRequestTimeout, res.StatusCode == http.StatusTooManyRequests:
		return nil, fmt.Errorf("answered HTTP %d", res.StatusCode)
	case res.StatusCode < 200 || res.StatusCode > 299:
		return nil, hub.Permanent(fmt.Errorf("%w: answered HTTP %d", ErrWebhookResponse, res.StatusCode))
	case len(body) > MaxWebhookResponse:
		return nil, hub.Permanent(fmt.Errorf("%w: answer larger than %d bytes", ErrWebhookResponse, MaxWebhookResponse))
	}
	resp, err := ParseResponse(body)
	if err != nil {
		return nil, hub.Permanent(err)
	}
	return resp, nil
}

// ParseResponse decodes and checks an AllocationResponse.
func ParseResponse(body []byte) (*AllocationResponse, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || raw == nil {
		return nil, fmt.Errorf("%w: the answer is not a JSON object", ErrWebhookResponse)
	}
	var r AllocationResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%w: the answer is not an AllocationResponse: %w", ErrWebhookResponse, err)
	}
	if r.IoTHubHostName == "" {
		return nil, fmt.Errorf("%w: the answer names no iotHubHostName", ErrWebhookResponse)
	}
	if p := bytes.TrimSpace(r.Payload); bytes.Equal(p, []byte("null")) {
		r.Payload = nil
	}
	return &r, nil
}

func (w *Webhook) describeTransportError(err error) error {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("no answer within %v", w.calls.Timeout)
	}
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		// Another attempt will not make the certificate trusted.
		return hub.Permanent(fmt.Errorf("its TLS certificate is not trusted (see allocation.webhook.caFile): %w", ce.Err))
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
