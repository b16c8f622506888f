// Package provision runs a device's registration against a DPS-compatible
// endpoint: register, poll honouring retry-after, return the final state.
package provision

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// RefusedError is a definitive "no" from the service (4xx, or a failed
// registration): retrying will not help.
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

// Client registers one device.
type Client struct {
	// Host is host:port of the device endpoint.
	Host           string
	IDScope        string
	RegistrationID string
	// HTTP carries the device's TLS client certificate for X.509
	// attestation.
	HTTP *http.Client
	// Signer signs SAS tokens (symmetric key); nil for X.509.
	Signer credential.SASSigner
	// CSR, if set, is a DER PKCS#10 request sent with the registration; the
	// issued chain comes back in registrationState.issuedCertificateChain.
	CSR []byte
	Now func() time.Time
	// MaxPolls bounds the poll loop (besides the context).
	MaxPolls int
}

// Register registers and polls until the operation ends; it returns the final
// operation status (assigned), or a *RefusedError, or a transport error.
func (c *Client) Register(ctx context.Context, payload json.RawMessage) (*dpsapi.RegistrationOperationStatus, error) {
	reg := dpsapi.DeviceRegistration{RegistrationID: c.RegistrationID, Payload: payload}
	if c.CSR != nil {
		reg.CSR = base64.StdEncoding.EncodeToString(c.CSR)
	}
	body, err := json.Marshal(reg)
	if err != nil {
		return nil, err
	}
	base := "/" + url.PathEscape(c.IDScope) + "/registrations/" + url.PathEscape(c.RegistrationID)
	op, retry, err := c.do(ctx, http.MethodPut, base+"/register", body)
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
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting to poll: %w", ctx.Err())
		case <-time.After(retry):
		}
		op, retry, err = c.do(ctx, http.MethodGet, base+"/operations/"+url.PathEscape(op.OperationID), nil)
		if err != nil {
			return nil, err
		}
	}
}

func (c *Client) do(ctx context.Context, method, path string, body []byte) (*dpsapi.RegistrationOperationStatus, time.Duration, error) {
	v := APIVersion
	if c.CSR != nil {
		v = dpsapi.APIVersionIssuance
	}
	u := "https://" + c.Host + path + "?api-version=" + v
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	if c.Signer != nil {
		tok, err := c.Signer.Token(sas.DeviceResource(c.IDScope, c.RegistrationID), c.now().Add(tokenLifetime))
		if err != nil {
			return nil, 0, fmt.Errorf("sign SAS token: %w", err)
		}
		req.Header.Set("Authorization", tok)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, dpsapi.MaxMessageSize+1))
	if err != nil {
		return nil, 0, fmt.Errorf("read response: %w", err)
	}
	retry := retryAfter(resp.Header.Get("retry-after"))
	switch {
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusAccepted:
		var op dpsapi.RegistrationOperationStatus
		if err := json.Unmarshal(data, &op); err != nil {
			return nil, 0, fmt.Errorf("decode response: %w", err)
		}
		return &op, retry, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return nil, 0, fmt.Errorf("%s %s: service answered %d", method, path, resp.StatusCode)
	default:
		var e dpsapi.ErrorDetails
		_ = json.Unmarshal(data, &e)
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
		return nil, 0, &RefusedError{HTTPStatus: resp.StatusCode, Code: e.ErrorCode, Message: e.Message}
	}
}

// retryAfter reads integer seconds (1…300), as the C SDK does; anything else is 2 s.
func retryAfter(h string) time.Duration {
	n, err := strconv.Atoi(h)
	if err != nil || n < 1 || n > 300 {
		return 2 * time.Second
	}
	return time.Duration(n) * time.Second
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}
