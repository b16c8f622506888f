package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/edgeprov/edgeprov/agent/provision"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
)

// apiVersion is what the Node and C SDKs send.
const apiVersion = "2021-06-01"

// maxPolls bounds a device's poll loop.
const maxPolls = 30

// Register is a device of the configured group: register, then poll until the
// operation is final, over one fresh connection.
func Register(ctx context.Context, cfg *Config, i int) (string, error) {
	id := cfg.IDPrefix + strconv.Itoa(i)
	tok := ""
	if cfg.Certs == nil {
		key := sas.DeriveDeviceKey(cfg.GroupKey, id)
		tok = sas.Build(key, sas.DeviceResource(cfg.IDScope, id), time.Now().Add(time.Hour), sas.DeviceKeyName)
	}
	body := []byte(`{"registrationId":"` + id + `"}`)
	send, closeConn := cfg.connect(i, id)
	defer closeConn()
	resp, err := send(ctx, "", body, tok)
	for polls := 0; ; polls++ {
		if err != nil {
			return transportCode(err), err
		}
		if resp.Status != http.StatusOK && resp.Status != http.StatusAccepted {
			return errorCode(resp), fmt.Errorf("status %d", resp.Status)
		}
		var op dpsapi.RegistrationOperationStatus
		if err := json.Unmarshal(resp.Body, &op); err != nil {
			return "decode", err
		}
		switch {
		case op.Status == dpsapi.StatusAssigned:
			return "", nil
		case op.Status != dpsapi.StatusAssigning:
			code := "failed"
			if op.RegistrationState != nil {
				code = strconv.Itoa(op.RegistrationState.ErrorCode)
			}
			return code, fmt.Errorf("registration %s", op.Status)
		case polls == maxPolls:
			return "timeout", fmt.Errorf("still assigning after %d polls", maxPolls)
		}
		wait := cfg.PollWait
		if wait < 0 {
			wait = resp.RetryAfter
			if wait < time.Second {
				wait = 2 * time.Second // the C SDK's default
			}
		}
		select {
		case <-ctx.Done():
			return "cancelled", ctx.Err()
		case <-time.After(wait):
		}
		resp, err = send(ctx, op.OperationID, nil, tok)
	}
}

// Bare is the ceiling's device: connect, handshake, one request and its
// answer, as cheap as a registration can possibly be on this box.
func Bare(ctx context.Context, cfg *Config, i int) (string, error) {
	send, closeConn := cfg.connect(i, cfg.IDPrefix+strconv.Itoa(i))
	defer closeConn()
	resp, err := send(ctx, "", []byte(`{"registrationId":"x"}`), "")
	if err != nil {
		return transportCode(err), err
	}
	if resp.Status != http.StatusOK {
		return errorCode(resp), fmt.Errorf("status %d", resp.Status)
	}
	return "", nil
}

// sender sends one request: a register with a body, or a poll.
type sender func(ctx context.Context, operationID string, body []byte, tok string) (*provision.Response, error)

// connect gives device i its own connection: a new HTTP transport (so a fresh
// TCP connection and full TLS handshake) or a new MQTT client, with the
// device's certificate when the group is X.509.
func (cfg *Config) connect(i int, id string) (sender, func()) {
	addr := cfg.Addrs[i%len(cfg.Addrs)]
	tc := cfg.TLS.Clone()
	if cfg.Certs != nil {
		tc.Certificates = []tls.Certificate{cfg.Certs[i]}
	}
	if cfg.Transport == MQTT {
		t := &provision.MQTT{Host: addr, TLS: tc, IDScope: cfg.IDScope, RegistrationID: id, ClientVersion: "edgeprovctl-bench", Timeout: 60 * time.Second}
		return func(ctx context.Context, operationID string, body []byte, tok string) (*provision.Response, error) {
			return t.Do(ctx, provision.Request{OperationID: operationID, Body: body, APIVersion: apiVersion, Authorization: tok})
		}, func() { t.Close() }
	}
	tr := &http.Transport{TLSClientConfig: tc, MaxIdleConnsPerHost: 1,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext}
	c := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	base := "https://" + addr + "/" + cfg.IDScope + "/registrations/" + url.PathEscape(id)
	return func(ctx context.Context, operationID string, body []byte, tok string) (*provision.Response, error) {
		method, u := http.MethodPut, base+"/register?api-version="+apiVersion
		if operationID != "" {
			method, u = http.MethodGet, base+"/operations/"+url.PathEscape(operationID)+"?api-version="+apiVersion
		}
		return httpDo(ctx, c, method, u, tok, body)
	}, tr.CloseIdleConnections
}

func httpDo(ctx context.Context, c *http.Client, method, u, tok string, body []byte) (*provision.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if tok != "" {
		req.Header.Set("Authorization", tok)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, dpsapi.MaxMessageSize))
	if err != nil {
		return nil, err
	}
	secs, _ := strconv.Atoi(resp.Header.Get("retry-after"))
	return &provision.Response{Status: resp.StatusCode, RetryAfter: time.Duration(secs) * time.Second, Body: data}, nil
}

// errorCode labels a refusal by its DPS error code, else its status.
func errorCode(resp *provision.Response) string {
	var e dpsapi.ErrorDetails
	if json.Unmarshal(resp.Body, &e) == nil && e.ErrorCode != 0 {
		return strconv.Itoa(e.ErrorCode)
	}
	return strconv.Itoa(resp.Status)
}

// transportCode labels a failure to get an answer: an MQTT CONNECT refused
// for its credentials, or a network or TLS error.
func transportCode(err error) string {
	if _, ok := errors.AsType[*provision.RefusedError](err); ok {
		return "refused"
	}
	return "transport"
}
