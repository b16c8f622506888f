package mqtt

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/endpoint/deviceerr"
	"github.com/edgeprov/edgeprov/daemon/registration"
)

// hook adapts the broker to the registration service: CONNECT checks,
// ACLs, per-connection limits, and request handling.
type hook struct {
	mochi.HookBase
	srv      *Server
	sessions sync.Map // *mochi.Client → *session
	seq      atomic.Uint64
}

// session is what a connection proved at CONNECT and may use afterwards.
type session struct {
	username dpsapi.MQTTUsername
	// authorization is the CONNECT password (a SAS token); never logged.
	authorization string
	// peerCerts are the TLS client certificates, for X.509 attestation.
	peerCerts []*x509.Certificate
	remote    string
	limiter   tokenBucket
}

// registerRequest and pollRequest are the one place a request is built from
// what the connection proved: the SAS token in the CONNECT password, or the
// TLS client certificates (X.509); the username's api-version (a csr needs an
// issuance version).
func (s *session) registerRequest(body dpsapi.DeviceRegistration) registration.RegisterRequest {
	return registration.RegisterRequest{Scope: s.username.IDScope, RegistrationID: s.username.RegistrationID, APIVersion: s.username.APIVersion,
		Body: body, Authorization: s.authorization, ClientCerts: s.peerCerts}
}

func (s *session) pollRequest(operationID string) registration.PollRequest {
	return registration.PollRequest{Scope: s.username.IDScope, RegistrationID: s.username.RegistrationID, OperationID: operationID,
		Authorization: s.authorization, ClientCerts: s.peerCerts}
}

func (h *hook) ID() string { return "edgeprov-dps" }

func (h *hook) Provides(b byte) bool {
	switch b {
	case mochi.OnConnect, mochi.OnConnectAuthenticate, mochi.OnSessionEstablished, mochi.OnDisconnect,
		mochi.OnACLCheck, mochi.OnPacketRead, mochi.OnPublish, mochi.OnPublished:
		return true
	}
	return false
}

// OnConnect refuses what cannot be a DPS device: another protocol version, a
// username outside §3.1's grammar, a client ID that is not the username's
// registration ID. Authentication itself is answered on the response topic
// (401), which tells the device more than a refused CONNECT.
func (h *hook) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	remote := cl.Net.Remote
	if pk.ProtocolVersion != 4 {
		return h.refuse(cl, packets.ErrUnsupportedProtocolVersion, "protocol version is not MQTT 3.1.1", slog.Int("version", int(pk.ProtocolVersion)), slog.String("remote", remote))
	}
	u, err := dpsapi.ParseMQTTUsername(string(pk.Connect.Username))
	if err != nil {
		return h.refuse(cl, packets.ErrMalformedUsername, "malformed username", slog.String("reason", err.Error()), slog.String("remote", remote))
	}
	if !strings.EqualFold(pk.Connect.ClientIdentifier, u.RegistrationID) {
		return h.refuse(cl, packets.ErrClientIdentifierNotValid, "client ID differs from the username's registration ID",
			slog.String("registrationId", u.RegistrationID), slog.String("remote", remote))
	}
	max := uint16(h.srv.cfg.Limits.MaxKeepAlive / time.Second)
	if ka := cl.State.Keepalive; ka == 0 || ka > max {
		cl.State.Keepalive = max
	}
	// No state outlives the connection: no will, no session to resume (the
	// CONNACK says "no session present"), and a unique broker-side ID so that a
	// second connection with the same registration ID (authenticated or not)
	// cannot take the first one over.
	cl.Properties.Clean = true
	cl.Properties.Will = mochi.Will{}
	cl.ID = fmt.Sprintf("%s#%d", u.RegistrationID, h.seq.Add(1))
	return nil
}

func (h *hook) refuse(cl *mochi.Client, code packets.Code, why string, attrs ...slog.Attr) error {
	h.srv.log.LogAttrs(context.Background(), slog.LevelInfo, "mqtt CONNECT refused: "+why, attrs...)
	if err := h.srv.broker.SendConnack(cl, code, false, nil); err != nil {
		return fmt.Errorf("refuse CONNECT: %w", err)
	}
	return code
}

// OnConnectAuthenticate accepts every CONNECT that OnConnect let through.
func (h *hook) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }

// OnSessionEstablished records the connection's identity once the CONNACK is
// out (so a connection that never got one leaves nothing behind).
func (h *hook) OnSessionEstablished(cl *mochi.Client, pk packets.Packet) {
	u, err := dpsapi.ParseMQTTUsername(string(pk.Connect.Username))
	if err != nil {
		cl.Stop(err) // OnConnect parsed it already
		return
	}
	s := &session{username: u, remote: cl.Net.Remote,
		limiter: tokenBucket{rate: h.srv.cfg.Limits.PacketRate, burst: float64(h.srv.cfg.Limits.PacketBurst)}}
	if pk.Connect.PasswordFlag {
		s.authorization = string(pk.Connect.Password)
	}
	if ts, ok := cl.Net.Conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		s.peerCerts = ts.ConnectionState().PeerCertificates
	}
	h.sessions.Store(cl, s)
	h.srv.log.Debug("mqtt client connected", "registrationId", u.RegistrationID, "idScope", u.IDScope,
		"apiVersion", u.APIVersion, "clientVersion", u.ClientVersion, "listener", cl.Net.Listener, "remote", s.remote)
}

func (h *hook) OnDisconnect(cl *mochi.Client, err error, _ bool) {
	h.sessions.Delete(cl)
	h.srv.log.Debug("mqtt client disconnected", "client", cl.ID, "remote", cl.Net.Remote, "error", err)
}

func (h *hook) session(cl *mochi.Client) *session {
	if v, ok := h.sessions.Load(cl); ok {
		return v.(*session)
	}
	return nil
}

// OnACLCheck: a device may subscribe to its response filter only, and publish
// to the two request topics only. Responses never travel through the topic
// tree (they are written to the requesting connection), so the shared filter
// leaks nothing between devices.
func (h *hook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	ok := false
	if write {
		_, err := dpsapi.ParseMQTTRequestTopic(topic)
		ok = err == nil
	} else {
		ok = topic == dpsapi.MQTTResponseFilter
	}
	if !ok {
		// A refused publish ends the connection (OnPacketRead), a refused
		// subscription gets SUBACK 0x80.
		h.srv.log.Info("mqtt topic refused", "client", cl.ID, "topic", truncate(topic, 200), "publish", write, "remote", cl.Net.Remote)
	}
	return ok
}

// OnPacketRead enforces the per-connection packet rate (a flood ends the
// connection, having been served at most its burst) and ends connections that
// publish what DPS does not take: QoS 2, or a topic other than the two request
// topics. Checked here, before the broker downgrades QoS 2 or silently drops
// topics such as $SYS/…, so that every such publish has the same outcome.
func (h *hook) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Connect {
		return pk, nil
	}
	s := h.session(cl)
	if s == nil {
		return pk, packets.ErrRejectPacket
	}
	if !s.limiter.allow(time.Now()) {
		h.srv.log.Warn("mqtt client over its packet rate: disconnected", "registrationId", s.username.RegistrationID, "remote", s.remote)
		return pk, packets.ErrRejectPacket
	}
	if pk.FixedHeader.Type == packets.Publish {
		if pk.FixedHeader.Qos > 1 {
			h.srv.log.Info("mqtt QoS 2 publish refused: disconnected", "registrationId", s.username.RegistrationID, "remote", s.remote)
			return pk, packets.ErrRejectPacket
		}
		if !h.OnACLCheck(cl, pk.TopicName, true) {
			return pk, packets.ErrRejectPacket
		}
	}
	return pk, nil
}

// OnPublish keeps every request out of the topic tree: no routing, no
// retained message.
func (h *hook) OnPublish(_ *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	return pk, packets.CodeSuccessIgnore
}

// OnPublished runs once the broker has acknowledged a request (PUBACK for QoS
// 1): it calls the registration service and answers on the response topic. It
// runs on the connection's reader, so one connection has one request in flight.
func (h *hook) OnPublished(cl *mochi.Client, pk packets.Packet) {
	s := h.session(cl)
	if s == nil {
		return
	}
	req, err := dpsapi.ParseMQTTRequestTopic(pk.TopicName)
	if err != nil {
		return // OnACLCheck let only request topics through
	}
	ctx, cancel := context.WithTimeout(h.srv.ctx, h.srv.cfg.Limits.RequestTimeout)
	defer cancel()
	status, retry, body := h.handle(ctx, s, req, pk.Payload)
	h.respond(cl, s, dpsapi.MQTTResponse{Status: status, RequestID: req.RequestID, RetryAfter: retry}, body)
}

// handle answers one request with an HTTP-like status, a retry-after (0:
// none) and the body HTTPS would send.
func (h *hook) handle(ctx context.Context, s *session, req dpsapi.MQTTRequest, payload []byte) (int, int, any) {
	trackingID := newTrackingID()
	switch req.Kind {
	case dpsapi.MQTTRegister:
		body, err := decodeRegistration(payload)
		if err != nil {
			return h.errorResponse(ctx, err, trackingID)
		}
		res, err := h.srv.cfg.Registrar.Register(ctx, s.registerRequest(body))
		if err != nil {
			return h.errorResponse(ctx, err, trackingID)
		}
		return http.StatusAccepted, h.srv.cfg.RetryAfter, res
	default:
		// Poll bodies are ignored: Node sends " ", C the register JSON.
		res, err := h.srv.cfg.Registrar.OperationStatus(ctx, s.pollRequest(req.OperationID))
		if err != nil {
			return h.errorResponse(ctx, err, trackingID)
		}
		if res.Status == dpsapi.StatusAssigning || res.Status == dpsapi.StatusUnassigned {
			return http.StatusAccepted, h.srv.cfg.RetryAfter, res
		}
		return http.StatusOK, 0, res
	}
}

func (h *hook) errorResponse(ctx context.Context, err error, trackingID string) (int, int, any) {
	status, body := h.errorFor(ctx, err, trackingID)
	body.TimestampUTC = dpsapi.Time{Time: time.Now()}
	if ch := deviceerr.Challenge(err, body); ch != nil {
		return status, 0, ch
	}
	return status, deviceerr.RetryAfter(err), body
}

// respond writes the response to this connection only, at the QoS the client
// subscribed with; a client that has not subscribed gets nothing, as from any
// broker.
func (h *hook) respond(cl *mochi.Client, s *session, r dpsapi.MQTTResponse, body any) {
	sub, ok := cl.State.Subscriptions.Get(dpsapi.MQTTResponseFilter)
	if !ok {
		h.srv.log.Info("mqtt response dropped: the client has not subscribed to "+dpsapi.MQTTResponseFilter,
			"registrationId", s.username.RegistrationID, "status", r.Status, "remote", s.remote)
		return
	}
	data, err := json.Marshal(body)
	if err != nil {
		r.Status, data = http.StatusInternalServerError, []byte(`{"errorCode":500001,"message":"An internal error occurred."}`)
	}
	out := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: min(sub.Qos, 1)},
		TopicName:   r.Topic(),
		Payload:     data,
	}
	if out.FixedHeader.Qos > 0 {
		// Not kept for redelivery: no state outlives the connection, and the
		// device re-sends its request if the connection drops.
		id, err := cl.NextPacketID()
		if err != nil {
			cl.Stop(err)
			return
		}
		out.PacketID = uint16(id)
	}
	if err := cl.WritePacket(out); err != nil {
		h.srv.log.Debug("mqtt response not delivered", "registrationId", s.username.RegistrationID, "remote", s.remote, "error", err)
	}
}

// decodeRegistration reads a register body; an empty one is a registration
// without body (the ID comes from the username).
func decodeRegistration(payload []byte) (dpsapi.DeviceRegistration, error) {
	var reg dpsapi.DeviceRegistration
	if len(bytes.TrimSpace(payload)) == 0 {
		return reg, nil
	}
	if err := json.Unmarshal(payload, &reg); err != nil {
		return reg, &registration.BadRequestError{Code: dpsapi.CodeInvalidBody, Msg: "The request body is not a valid DeviceRegistration: " + jsonErr(err)}
	}
	return reg, nil
}

func jsonErr(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return "field " + te.Field + " must be " + te.Type.String()
	}
	return "malformed JSON"
}

// tokenBucket is a per-connection rate limit; it is used from the
// connection's reader only, so it needs no lock.
type tokenBucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

func (b *tokenBucket) allow(now time.Time) bool {
	if b.last.IsZero() {
		b.tokens = b.burst
	} else {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
