package mqtt_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/endpoint/https"
	mqttep "github.com/edgeprov/edgeprov/daemon/endpoint/mqtt"
	"github.com/edgeprov/edgeprov/daemon/pki"
	"github.com/edgeprov/edgeprov/daemon/registration"
	rt "github.com/edgeprov/edgeprov/daemon/registration/registrationtest"
	"github.com/edgeprov/edgeprov/daemon/store"
)

// env is an MQTT endpoint over TLS and an HTTPS device listener (the HTTPS API
// plus MQTT over WebSockets) in front of one registration service.
type env struct {
	f      *rt.Fixture
	srv    *mqttep.Server
	addr   string           // MQTT over TLS
	web    *httptest.Server // HTTPS API and /$iothub/websocket
	client *tls.Config      // trusts the server certificate
}

func newEnv(t testing.TB, limits mqttep.Limits) *env { return newEnvWith(t, limits, nil) }

// newEnvWith is newEnv with the registration service's config changed by reconf.
func newEnvWith(t testing.TB, limits mqttep.Limits, reconf func(*registration.Config)) *env {
	t.Helper()
	return newEnvFixture(t, limits, rt.Options{}, reconf)
}

// newEnvFixture is newEnvWith over a fixture with more enrollments.
func newEnvFixture(t testing.TB, limits mqttep.Limits, opts rt.Options, reconf func(*registration.Config)) *env {
	t.Helper()
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.IssueServer([]string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serverTLS := &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)

	e := &env{f: rt.NewWith(t, opts), client: &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}}
	if reconf != nil {
		e.f.Reconfigure(reconf)
	}
	// Everything the endpoint logs, at debug level, must be free of secrets.
	logs := &lockedBuffer{}
	t.Cleanup(func() {
		if s := logs.String(); strings.Contains(s, "sig=") || strings.Contains(s, "SharedAccessSignature") {
			t.Errorf("a SAS token reached the log:\n%s", s)
		}
	})
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.srv, err = mqttep.New(mqttep.Config{Registrar: e.f.Service, TLS: serverTLS, RetryAfter: 1, Limits: limits, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Start(ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.srv.Close() })
	e.addr = ln.Addr().String()

	api := https.NewHandler(e.f.Service, 1, nil)
	ws := e.srv.WebSocket()
	e.web = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == mqttep.WebSocketPath {
			ws.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	}))
	e.web.TLS = serverTLS.Clone()
	e.web.StartTLS()
	t.Cleanup(e.web.Close)
	return e
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// username is the Node SDK's username for regID in the fixture's scope.
func username(regID string) string {
	return dpsapi.MQTTUsername{IDScope: rt.Scope, RegistrationID: regID, APIVersion: "2019-03-31", ClientVersion: "azure-iot-provisioning-device/1.9.1"}.String()
}

// device is a paho client subscribed to the response filter.
type device struct {
	c    paho.Client
	msgs chan paho.Message
	lost chan error
}

type connOpts struct {
	clientID, username, password string // password "-": none
	persistent                   bool   // clean session off, as Python sends
	websocket                    bool
	noSubscribe                  bool
	subQoS0                      bool // subscribe at QoS 0 (default 1, as the SDKs)
	will                         string
	// cert is a TLS client certificate (X.509 attestation).
	cert *tls.Certificate
}

// connect connects with o (defaults: the Node SDK's CONNECT for regID with the
// group-derived key) and subscribes.
func (e *env) connect(t testing.TB, regID string, o connOpts) (*device, error) {
	t.Helper()
	if o.clientID == "" {
		o.clientID = regID
	}
	if o.username == "" {
		o.username = username(regID)
	}
	if o.password == "" {
		o.password = e.f.GroupToken(regID)
	}
	if o.password == "-" {
		o.password = ""
	}
	d := &device{msgs: make(chan paho.Message, 16), lost: make(chan error, 1)}
	tc := e.client
	if o.cert != nil {
		tc = e.client.Clone()
		tc.Certificates = []tls.Certificate{*o.cert}
	}
	broker := "tls://" + e.addr
	if o.websocket {
		broker = "wss://" + strings.TrimPrefix(e.web.URL, "https://") + mqttep.WebSocketPath
	}
	opts := paho.NewClientOptions().AddBroker(broker).SetTLSConfig(tc).SetProtocolVersion(4).
		SetClientID(o.clientID).SetUsername(o.username).SetPassword(o.password).SetCleanSession(!o.persistent).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetKeepAlive(30 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) { d.lost <- err }).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { d.msgs <- m })
	if o.will != "" {
		opts.SetWill(o.will, `{"forged":true}`, 0, false)
	}
	d.c = paho.NewClient(opts)
	if tok := d.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { d.c.Disconnect(0) })
	if !o.noSubscribe {
		qos := byte(1)
		if o.subQoS0 {
			qos = 0
		}
		tok := d.c.Subscribe(dpsapi.MQTTResponseFilter, qos, func(_ paho.Client, m paho.Message) { d.msgs <- m })
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("subscribe: %v", tok.Error())
		}
		if code := tok.(*paho.SubscribeToken).Result()[dpsapi.MQTTResponseFilter]; code > 1 {
			return nil, fmt.Errorf("subscribe refused: %#x", code)
		}
	}
	return d, nil
}

// request publishes to topic and waits for the response with the same $rid.
func (d *device) request(t testing.TB, qos byte, topic string, payload []byte) (dpsapi.MQTTResponse, []byte) {
	t.Helper()
	req, err := dpsapi.ParseMQTTRequestTopic(topic)
	if err != nil {
		t.Fatal(err)
	}
	if payload == nil {
		payload = []byte{} // paho refuses an untyped nil
	}
	if tok := d.c.Publish(topic, qos, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-d.msgs:
			r, err := dpsapi.ParseMQTTResponseTopic(m.Topic())
			if err != nil {
				t.Fatalf("response on unexpected topic %q", m.Topic())
			}
			if r.RequestID == req.RequestID {
				return r, m.Payload()
			}
		case err := <-d.lost:
			t.Fatalf("connection lost waiting for %s: %v", topic, err)
		case <-deadline:
			t.Fatalf("no response to %s", topic)
		}
	}
}

func registerTopic(rid string) string {
	return dpsapi.MQTTRequest{Kind: dpsapi.MQTTRegister, RequestID: rid}.Topic()
}

func pollTopic(rid, op string) string {
	return dpsapi.MQTTRequest{Kind: dpsapi.MQTTPoll, RequestID: rid, OperationID: op}.Topic()
}

func decode[T any](t testing.TB, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	return v
}

// records counts the fixture's registration records.
func (e *env) records(t testing.TB) int {
	t.Helper()
	n := 0
	err := e.f.Store.View(t.Context(), func(tx store.Tx) error {
		recs, err := tx.Records(rt.Scope, "", 0)
		n = len(recs)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// raw is a hand-driven MQTT connection, for what well-behaved clients never send.
type raw struct {
	c  net.Conn
	r  *bufio.Reader
	mu sync.Mutex
}

func (e *env) dialRaw(t testing.TB) *raw {
	t.Helper()
	c, err := tls.Dial("tcp", e.addr, e.client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &raw{c: c, r: bufio.NewReader(c)}
}

func connectPacket(clientID, user, pass string, version byte, keepalive uint16) packets.Packet {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version}
	pk.Connect.ProtocolName = []byte("MQTT")
	pk.Connect.Clean = true
	pk.Connect.Keepalive = keepalive
	pk.Connect.ClientIdentifier = clientID
	if user != "" {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(user)
	}
	if pass != "" {
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(pass)
	}
	return pk
}

func (r *raw) write(t testing.TB, pk packets.Packet) error {
	t.Helper()
	if pk.ProtocolVersion == 0 {
		pk.ProtocolVersion = 4
	}
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	default:
		t.Fatalf("raw: cannot encode %v", pk.FixedHeader.Type)
	}
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err = r.c.Write(buf.Bytes())
	return err
}

// read reads one packet; io.EOF (or a reset) means the server closed.
func (r *raw) read(t testing.TB, version byte, within time.Duration) (packets.Packet, error) {
	t.Helper()
	r.c.SetReadDeadline(time.Now().Add(within))
	b, err := r.r.ReadByte()
	if err != nil {
		return packets.Packet{}, err
	}
	pk := packets.Packet{ProtocolVersion: version}
	if err := pk.FixedHeader.Decode(b); err != nil {
		t.Fatal(err)
	}
	n, _, err := packets.DecodeLength(r.r)
	if err != nil {
		return pk, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r.r, body); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pingresp, packets.Disconnect:
	default:
		t.Fatalf("raw: unexpected %v", pk.FixedHeader.Type)
	}
	return pk, err
}

// closedWithin reports whether the server closes the connection within d,
// skipping whatever it sends before.
func (r *raw) closedWithin(t testing.TB, d time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		_, err := r.read(t, 4, time.Until(deadline))
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &ne) && ne.Timeout():
			return false
		default:
			return true
		}
	}
	return false
}

// handshake sends CONNECT and SUBSCRIBE like the Node SDK and checks the acks.
func (r *raw) handshake(t testing.TB, e *env, regID string) {
	t.Helper()
	if err := r.write(t, connectPacket(regID, username(regID), e.f.GroupToken(regID), 4, 60)); err != nil {
		t.Fatal(err)
	}
	if pk, err := r.read(t, 4, 5*time.Second); err != nil || pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("CONNACK: %+v %v", pk, err)
	}
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: dpsapi.MQTTResponseFilter, Qos: 1}}}
	if err := r.write(t, sub); err != nil {
		t.Fatal(err)
	}
	if pk, err := r.read(t, 4, 5*time.Second); err != nil || pk.FixedHeader.Type != packets.Suback || len(pk.ReasonCodes) != 1 || pk.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK: %+v %v", pk, err)
	}
}

func publishPacket(topic string, qos byte, id uint16, payload []byte) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: topic, PacketID: id, Payload: payload}
}
