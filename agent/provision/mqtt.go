package provision

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
)

// MQTT carries requests over DPS's MQTT 3.1.1 topics (protocol.md §3): it
// connects on the first request (client ID = registration ID, the request's
// SAS token as password; for X.509 the device certificate in TLS), subscribes
// to the response filter, and matches each response to its request by $rid.
type MQTT struct {
	// Host is host:port of the MQTT endpoint (8883 by default).
	Host           string
	TLS            *tls.Config
	IDScope        string
	RegistrationID string
	// ClientVersion goes into the username, like the SDKs' user agent.
	ClientVersion string
	// Timeout bounds connecting, subscribing and publishing (default 30 s).
	Timeout time.Duration

	mu      sync.Mutex
	client  paho.Client
	signed  bool          // the connection was made with a SAS token
	lost    chan struct{} // closed when the connection drops
	lostErr error
	waiting map[string]chan *Response
}

var _ Transport = (*MQTT)(nil)

// Do implements Transport.
func (t *MQTT) Do(ctx context.Context, r Request) (*Response, error) {
	client, lost, err := t.connect(ctx, r)
	if err != nil {
		return nil, err
	}
	rid, err := newRequestID()
	if err != nil {
		return nil, err
	}
	req := dpsapi.MQTTRequest{Kind: dpsapi.MQTTRegister, RequestID: rid}
	payload := r.Body
	if r.OperationID != "" {
		req.Kind, req.OperationID, payload = dpsapi.MQTTPoll, r.OperationID, []byte{}
	}
	ch := make(chan *Response, 1)
	t.mu.Lock()
	t.waiting[rid] = ch
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.waiting, rid)
		t.mu.Unlock()
	}()
	if err := wait(ctx, client.Publish(req.Topic(), 1, false, payload), t.timeout()); err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	select {
	case resp := <-ch:
		return resp, nil
	case <-lost:
		return nil, fmt.Errorf("connection lost while waiting for the response: %w", t.lostErr)
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the response: %w", ctx.Err())
	}
}

// connect connects on the first request. The token is the CONNECT password,
// so a request signed after an unsigned one (a TPM's, once it imported its
// challenge) reconnects with it; the api-version goes into the username.
func (t *MQTT) connect(ctx context.Context, r Request) (paho.Client, chan struct{}, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.client != nil {
		select {
		case <-t.lost:
			return nil, nil, fmt.Errorf("connection lost: %w", t.lostErr)
		default:
		}
		if t.signed || r.Authorization == "" {
			return t.client, t.lost, nil
		}
		t.client.Disconnect(0)
		t.client = nil
	}
	opts := paho.NewClientOptions().
		AddBroker("tls://" + t.Host).
		SetTLSConfig(t.TLS).
		SetProtocolVersion(4).
		SetClientID(t.RegistrationID).
		SetUsername(dpsapi.MQTTUsername{IDScope: t.IDScope, RegistrationID: t.RegistrationID, APIVersion: r.APIVersion, ClientVersion: t.ClientVersion}.String()).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(60 * time.Second).
		SetConnectTimeout(t.timeout()).
		SetWriteTimeout(t.timeout())
	if r.Authorization != "" {
		opts.SetPassword(r.Authorization)
	}
	lost := make(chan struct{})
	opts.SetConnectionLostHandler(func(_ paho.Client, err error) {
		t.mu.Lock()
		t.lostErr = err
		t.mu.Unlock()
		close(lost)
	})
	client := paho.NewClient(opts)
	tok := client.Connect()
	if err := wait(ctx, tok, t.timeout()); err != nil {
		switch tok.(*paho.ConnectToken).ReturnCode() {
		case packets.ErrRefusedBadProtocolVersion, packets.ErrRefusedIDRejected, packets.ErrRefusedBadUsernameOrPassword, packets.ErrRefusedNotAuthorised:
			// Refused for what the device sent; "server unavailable" and
			// network errors are worth a retry.
			return nil, nil, &RefusedError{HTTPStatus: http.StatusUnauthorized, Message: "MQTT CONNECT refused: " + err.Error()}
		}
		return nil, nil, fmt.Errorf("connect: %w", err)
	}
	t.waiting = map[string]chan *Response{}
	sub := client.Subscribe(dpsapi.MQTTResponseFilter, 1, t.onResponse)
	if err := wait(ctx, sub, t.timeout()); err != nil {
		client.Disconnect(0)
		return nil, nil, fmt.Errorf("subscribe: %w", err)
	}
	if codes := sub.(*paho.SubscribeToken).Result(); codes[dpsapi.MQTTResponseFilter] > 1 {
		client.Disconnect(0)
		return nil, nil, fmt.Errorf("subscribe: refused (code %#x)", codes[dpsapi.MQTTResponseFilter])
	}
	t.client, t.lost, t.signed = client, lost, r.Authorization != ""
	return client, lost, nil
}

// onResponse hands a response to the request waiting for its $rid; anything
// else is dropped.
func (t *MQTT) onResponse(_ paho.Client, m paho.Message) {
	r, err := dpsapi.ParseMQTTResponseTopic(m.Topic())
	if err != nil {
		return
	}
	t.mu.Lock()
	ch := t.waiting[r.RequestID]
	t.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- &Response{Status: r.Status, RetryAfter: time.Duration(r.RetryAfter) * time.Second, Body: m.Payload()}:
	default: // a duplicate (QoS 1 redelivery)
	}
}

// Close implements Transport.
func (t *MQTT) Close() error {
	t.mu.Lock()
	c := t.client
	t.client = nil
	t.mu.Unlock()
	if c != nil {
		c.Disconnect(250)
	}
	return nil
}

func (t *MQTT) timeout() time.Duration {
	if t.Timeout > 0 {
		return t.Timeout
	}
	return 30 * time.Second
}

// wait waits for a paho token within ctx and d.
func wait(ctx context.Context, tok paho.Token, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return errors.New("timed out")
	}
}

// newRequestID is a fresh $rid, as Node uses a fresh UUID per publish.
func newRequestID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}
