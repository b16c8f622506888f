// Package provision runs a device's registration against a DPS-compatible
// endpoint: (for a TPM: an unsigned register call, the challenge imported)
// register, poll honouring retry-after, return the final state. Requests go
// over HTTPS, or over MQTT through a Transport.
package provision

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/edgeprov/edgeprov/agent/credential"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
)

// APIVersion is the device API version the agent speaks; with a CSR it asks
// for dpsapi.APIVersionIssuance, the version that carries certificate
// issuance.
const APIVersion = "2021-06-01"

// tokenLifetime matches the Node and Python SDKs.
const tokenLifetime = time.Hour

// RefusedError is a definitive "no" from the service (4xx, a refused MQTT
// CONNECT, or a failed registration): retrying will not help.
type RefusedError struct {
	HTTPStatus int
	Code       int
	Message    string
}

func (e *RefusedError) Error() string {
	if e.Code != 0 {
		return fmt.Sprintf("provisioning refused: %s (HTTP %d, error %d)", e.Message, e.HTTPStatus, e.Code)
	}
	return fmt.Sprintf("provisioning refused: %s (HTTP %d)", e.Message, e.HTTPStatus)
}

// TPM is the device side of TPM attestation (credential.TPM): it signs the
// requests once it has imported the challenge.
type TPM interface {
	credential.SASSigner
	// Evidence is the tpm object of the registration body.
	Evidence() *dpsapi.TPMAttestation
	// ImportAuthenticationKey imports a blob wrapped to this TPM, replacing
	// the key the signer uses.
	ImportAuthenticationKey(blob []byte) error
}

// Request is one device request: a register (OperationID empty) or a poll.
type Request struct {
	OperationID string
	// Body is the register JSON (nil for a poll).
	Body []byte
	// APIVersion is the device API version asked for.
	APIVersion string
	// Authorization is the SAS token, "" for none (X.509, a TPM's first call).
	Authorization string
}

// Response is the service's answer, whatever carried it.
type Response struct {
	// Status is the HTTP status, or the one in the MQTT response topic.
	Status int
	// RetryAfter is the retry-after the service sent (0 when absent).
	RetryAfter time.Duration
	Body       []byte
}

// Transport carries a device's requests other than over the client's HTTP
// (MQTT). A network or TLS failure is an error; a refused connection a
// *RefusedError.
type Transport interface {
	Do(ctx context.Context, req Request) (*Response, error)
	Close() error
}

// Client registers one device.
type Client struct {
	// Host is host:port of the device endpoint.
	Host           string
	IDScope        string
	RegistrationID string
	// HTTP carries the device's TLS client certificate for X.509
	// attestation.
	HTTP *http.Client
	// Transport, when set, carries the requests instead of HTTP (MQTT).
	Transport Transport
	// Signer signs SAS tokens (symmetric key); nil for X.509, unused when TPM
	// is set.
	Signer credential.SASSigner
	// CSR, if set, is a DER PKCS#10 request sent with the registration; the
	// issued chain comes back in registrationState.issuedCertificateChain.
	CSR []byte
	// TPM, when set, makes the registration a TPM attestation (protocol.md
	// §5.4.1): an unsigned register call is answered with a challenge, which
	// the TPM imports and signs the rest with; the final state carries the hub
	// key wrapped to the TPM, which it imports in place of the challenge.
	TPM TPM
	Now func() time.Time
	// MaxPolls bounds the poll loop (besides the context).
	MaxPolls int
	// Log receives each phase's duration at debug level; nil discards.
	Log *slog.Logger
	// Timings, when set, accumulates the phases' durations.
	Timings *Timings
}

// Timings splits a provisioning run: time in the TPM, on the network (TLS
// round trips, including the service's work) and waiting as retry-after says.
type Timings struct {
	TPM, Network, Wait time.Duration
}

// LogValue renders the split in milliseconds.
func (t *Timings) LogValue() slog.Value {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }
	return slog.GroupValue(slog.String("tpm", ms(t.TPM)), slog.String("network", ms(t.Network)), slog.String("wait", ms(t.Wait)))
}

// phase kinds
const (
	kindTPM     = "tpm"
	kindNetwork = "network"
	kindWait    = "wait"
)

// Time runs fn as a phase of the given kind ("tpm", "network", "wait"),
// logging and accumulating its duration.
func (c *Client) Time(kind, name string, fn func() error) error {
	start := time.Now()
	err := fn()
	d := time.Since(start)
	if t := c.Timings; t != nil {
		switch kind {
		case kindTPM:
			t.TPM += d
		case kindNetwork:
			t.Network += d
		case kindWait:
			t.Wait += d
		}
	}
	if c.Log != nil {
		c.Log.Debug("phase", "kind", kind, "name", name, "ms", float64(d.Microseconds())/1000, "ok", err == nil)
	}
	return err
}

// Register registers and polls until the operation ends; it returns the final
// operation status (assigned), or a *RefusedError, or a transport error. It
// closes the Transport, if any.
func (c *Client) Register(ctx context.Context, payload json.RawMessage) (*dpsapi.RegistrationOperationStatus, error) {
	if c.Transport != nil {
		defer c.Transport.Close()
	}
	reg := dpsapi.DeviceRegistration{RegistrationID: c.RegistrationID, Payload: payload}
	if c.CSR != nil {
		reg.CSR = base64.StdEncoding.EncodeToString(c.CSR)
	}
	if c.TPM != nil {
		// Repeated on the signed calls, as the Node and C SDKs do.
		reg.TPM = c.TPM.Evidence()
	}
	body, err := json.Marshal(reg)
	if err != nil {
		return nil, err
	}
	if c.TPM != nil {
		if err := c.answerChallenge(ctx, body); err != nil {
			return nil, err
		}
	}
	op, retry, err := c.do(ctx, "", body)
	if err != nil {
		return nil, err
	}
	maxPolls := c.MaxPolls
	if maxPolls == 0 {
		maxPolls = 100
	}
	for i := 0; ; i++ {
		switch op.Status {
		case dpsapi.StatusAssigned:
			if op.RegistrationState == nil || op.RegistrationState.AssignedHub == "" || op.RegistrationState.DeviceID == "" {
				return nil, errors.New("service answered assigned without a hub and device ID")
			}
			if c.TPM != nil {
				if err := c.importHubKey(op.RegistrationState); err != nil {
					return nil, err
				}
			}
			return op, nil
		case dpsapi.StatusFailed, dpsapi.StatusDisabled:
			r := &RefusedError{HTTPStatus: http.StatusOK, Message: "registration " + op.Status}
			if s := op.RegistrationState; s != nil {
				r.Code, r.Message = s.ErrorCode, s.ErrorMessage
			}
			return nil, r
		case dpsapi.StatusAssigning, dpsapi.StatusUnassigned:
		default:
			return nil, fmt.Errorf("service answered unknown status %q", op.Status)
		}
		if op.OperationID == "" {
			return nil, errors.New("service answered without an operation ID")
		}
		if i >= maxPolls {
			return nil, fmt.Errorf("still %s after %d polls", op.Status, maxPolls)
		}
		err := c.Time(kindWait, "retry-after", func() error {
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting to poll: %w", ctx.Err())
			case <-time.After(retry):
				return nil
			}
		})
		if err != nil {
			return nil, err
		}
		op, retry, err = c.do(ctx, op.OperationID, nil)
		if err != nil {
			return nil, err
		}
	}
}

// answerChallenge sends the unsigned register call that a TPM enrollment
// answers with 401 and a challenge, and imports the challenge into the TPM.
func (c *Client) answerChallenge(ctx context.Context, body []byte) error {
	var resp *Response
	err := c.Time(kindNetwork, "register (unsigned, for the challenge)", func() error {
		var err error
		resp, err = c.send(ctx, Request{Body: body})
		return err
	})
	if err != nil {
		return err
	}
	status, data := resp.Status, resp.Body
	var ch struct {
		dpsapi.ErrorDetails
		dpsapi.TPMChallenge
	}
	_ = json.Unmarshal(data, &ch)
	switch {
	case status == http.StatusUnauthorized && ch.AuthenticationKey != "":
	case status == http.StatusTooManyRequests || status >= 500:
		return fmt.Errorf("register: service answered %d", status)
	case status >= 400:
		// Unknown device, EK not enrolled, malformed keys: no challenge.
		return refused(status, &ch.ErrorDetails)
	default:
		return fmt.Errorf("register: service answered %d to an unsigned TPM registration, want 401 with a challenge", status)
	}
	blob, err := base64.StdEncoding.DecodeString(ch.AuthenticationKey)
	if err != nil {
		return fmt.Errorf("TPM challenge: authenticationKey is not base64: %w", err)
	}
	return c.Time(kindTPM, "import challenge key", func() error {
		if err := c.TPM.ImportAuthenticationKey(blob); err != nil {
			return fmt.Errorf("TPM challenge: %w", err)
		}
		return nil
	})
}

// importHubKey imports the hub key of the final registration state,
// replacing the challenge key.
func (c *Client) importHubKey(rs *dpsapi.DeviceRegistrationResult) error {
	if rs.TPM == nil || rs.TPM.AuthenticationKey == "" {
		return errors.New("service answered assigned without tpm.authenticationKey (the hub key)")
	}
	blob, err := base64.StdEncoding.DecodeString(rs.TPM.AuthenticationKey)
	if err != nil {
		return fmt.Errorf("hub key: tpm.authenticationKey is not base64: %w", err)
	}
	return c.Time(kindTPM, "import hub key", func() error {
		if err := c.TPM.ImportAuthenticationKey(blob); err != nil {
			return fmt.Errorf("hub key: %w", err)
		}
		return nil
	})
}

func (c *Client) signer() credential.SASSigner {
	if c.TPM != nil {
		return c.TPM
	}
	return c.Signer
}

// do sends a signed register (operationID "") or poll and decodes the
// operation status it answers.
func (c *Client) do(ctx context.Context, operationID string, body []byte) (*dpsapi.RegistrationOperationStatus, time.Duration, error) {
	var tok string
	if s := c.signer(); s != nil {
		kind := "software"
		if c.TPM != nil {
			kind = kindTPM
		}
		err := c.Time(kind, "sign SAS token", func() error {
			var err error
			tok, err = s.Token(sas.DeviceResource(c.IDScope, c.RegistrationID), c.now().Add(tokenLifetime))
			return err
		})
		if err != nil {
			return nil, 0, fmt.Errorf("sign SAS token: %w", err)
		}
	}
	var resp *Response
	name := "poll"
	if operationID == "" {
		name = "register (signed)"
	}
	err := c.Time(kindNetwork, name, func() error {
		var err error
		resp, err = c.send(ctx, Request{OperationID: operationID, Body: body, Authorization: tok})
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	status, data := resp.Status, resp.Body
	retry := resp.RetryAfter
	if retry < time.Second || retry > 300*time.Second {
		retry = 2 * time.Second // as the C SDK: integer seconds 1…300, else a default
	}
	switch {
	case status == http.StatusOK || status == http.StatusAccepted:
		var op dpsapi.RegistrationOperationStatus
		if err := json.Unmarshal(data, &op); err != nil {
			return nil, 0, fmt.Errorf("decode response: %w", err)
		}
		return &op, retry, nil
	case status == http.StatusTooManyRequests || status >= 500:
		return nil, 0, fmt.Errorf("%s: service answered %d", name, status)
	default:
		var e dpsapi.ErrorDetails
		_ = json.Unmarshal(data, &e)
		return nil, 0, refused(status, &e)
	}
}

func refused(status int, e *dpsapi.ErrorDetails) *RefusedError {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &RefusedError{HTTPStatus: status, Code: e.ErrorCode, Message: msg}
}

// send carries one request over the Transport, or over HTTPS.
func (c *Client) send(ctx context.Context, r Request) (*Response, error) {
	r.APIVersion = APIVersion
	if c.CSR != nil {
		r.APIVersion = dpsapi.APIVersionIssuance
	}
	if c.Transport != nil {
		return c.Transport.Do(ctx, r)
	}
	method, path := http.MethodPut, "/"+url.PathEscape(c.IDScope)+"/registrations/"+url.PathEscape(c.RegistrationID)
	if r.OperationID != "" {
		method, path = http.MethodGet, path+"/operations/"+url.PathEscape(r.OperationID)
	} else {
		path += "/register"
	}
	status, header, data, err := c.roundTrip(ctx, method, path+"?api-version="+r.APIVersion, r.Body, r.Authorization)
	if err != nil {
		return nil, err
	}
	out := &Response{Status: status, Body: data}
	if n, err := strconv.Atoi(header.Get("retry-after")); err == nil && n > 0 {
		out.RetryAfter = time.Duration(n) * time.Second
	}
	return out, nil
}

// roundTrip sends one HTTPS request (with the token as Authorization, if any)
// and reads the answer.
func (c *Client) roundTrip(ctx context.Context, method, path string, body []byte, token string) (int, http.Header, []byte, error) {
	u := "https://" + c.Host + path
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, dpsapi.MaxMessageSize+1))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("read response: %w", err)
	}
	return resp.StatusCode, resp.Header, data, nil
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}
