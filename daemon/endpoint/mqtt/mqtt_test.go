package mqtt_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	mqttep "github.com/edgeprov/edgeprov/daemon/endpoint/mqtt"
	"github.com/edgeprov/edgeprov/daemon/registration"
	rt "github.com/edgeprov/edgeprov/daemon/registration/registrationtest"
	"github.com/edgeprov/edgeprov/daemon/throttle"
)

type opStatus = dpsapi.RegistrationOperationStatus

func TestRegisterAndPoll(t *testing.T) {
	e := newEnv(t, mqttep.Limits{})
	tests := []struct {
		name  string
		regID string
		opts  connOpts
		qos   byte
	}{
		{name: "ok/qos1-like-node", regID: "grp-mqtt-1", qos: 1},
		{name: "ok/qos0-like-c-sdk", regID: "grp-mqtt-2", qos: 0},
		{name: "ok/persistent-session-like-python", regID: "grp-mqtt-3", qos: 1, opts: connOpts{persistent: true}},
		{name: "ok/subscribed-at-qos0", regID: "grp-mqtt-4", qos: 1, opts: connOpts{subQoS0: true}},
		{name: "ok/websocket", regID: "grp-mqtt-5", qos: 1, opts: connOpts{websocket: true}},
		{name: "ok/client-id-differs-in-case", regID: "grp-mqtt-6", qos: 1, opts: connOpts{clientID: "GRP-MQTT-6"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := e.connect(t, tt.regID, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			r, body := d.request(t, tt.qos, registerTopic("reg-"+tt.regID), []byte(`{"registrationId":"`+tt.regID+`","payload":{"n":1}}`))
			op := decode[opStatus](t, body)
			if r.Status != 202 || r.RetryAfter != 1 || op.Status != "assigning" || op.OperationID == "" {
				t.Fatalf("register: %+v %s", r, body)
			}
			// Node polls with a body of one space; C re-sends the register JSON.
			for i, pollBody := range [][]byte{[]byte(" "), body, nil} {
				r, body := d.request(t, tt.qos, pollTopic(fmt.Sprint(i+1), op.OperationID), pollBody)
				got := decode[opStatus](t, body)
				if r.Status != 200 || r.RetryAfter != 0 || got.Status != "assigned" || got.RegistrationState.DeviceID != tt.regID ||
					got.RegistrationState.AssignedHub == "" || string(got.RegistrationState.Payload) != `{"n":1}` {
					t.Fatalf("poll: %+v %s", r, body)
				}
			}
		})
	}
}

// The response topic is $dps/registrations/res/{status}/?$rid={rid}, $rid
// first, retry-after only while assigning; $rid comes back verbatim.
func TestResponseTopicShape(t *testing.T) {
	e := newEnv(t, mqttep.Limits{})
	d, err := e.connect(t, "grp-shape", connOpts{})
	if err != nil {
		t.Fatal(err)
	}
	rid := "a%20b~c.d-e_f:9"
	if tok := d.c.Publish(registerTopic(rid), 1, false, []byte{}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	select {
	case m := <-d.msgs:
		if m.Topic() != "$dps/registrations/res/202/?$rid="+rid+"&retry-after=1" {
			t.Fatalf("topic %q", m.Topic())
		}
		if !json.Valid(m.Payload()) {
			t.Fatalf("payload %q", m.Payload())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no response")
	}
}

// An operation started on one transport is polled on the other: both call
// the same registration service.
func TestCrossTransport(t *testing.T) {
	e := newEnv(t, mqttep.Limits{})
	hc := e.web.Client()
	httpDo := func(method, path, auth string, body []byte) (int, []byte) {
		req, _ := http.NewRequest(method, e.web.URL+path, bytes.NewReader(body))
		req.Header.Set("Authorization", auth)
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	t.Run("ok/mqtt-register-https-poll", func(t *testing.T) {
		d, err := e.connect(t, "grp-cross-1", connOpts{})
		if err != nil {
			t.Fatal(err)
		}
		_, body := d.request(t, 1, registerTopic("1"), []byte(`{"registrationId":"grp-cross-1"}`))
		op := decode[opStatus](t, body)
		status, body := httpDo("GET", "/"+rt.Scope+"/registrations/grp-cross-1/operations/"+op.OperationID, e.f.GroupToken("grp-cross-1"), nil)
		if got := decode[opStatus](t, body); status != 200 || got.Status != "assigned" || got.OperationID != op.OperationID {
			t.Fatalf("https poll: %d %s", status, body)
		}
	})
	t.Run("ok/https-register-mqtt-poll", func(t *testing.T) {
		status, body := httpDo("PUT", "/"+rt.Scope+"/registrations/grp-cross-2/register?api-version=2019-03-31", e.f.GroupToken("grp-cross-2"), []byte(`{}`))
		op := decode[opStatus](t, body)
		if status != 202 {
			t.Fatalf("https register: %d %s", status, body)
		}
		d, err := e.connect(t, "grp-cross-2", connOpts{})
		if err != nil {
			t.Fatal(err)
		}
		r, body := d.request(t, 1, pollTopic("1", op.OperationID), nil)
		if got := decode[opStatus](t, body); r.Status != 200 || got.Status != "assigned" || got.RegistrationState.DeviceID != "grp-cross-2" {
			t.Fatalf("mqtt poll: %+v %s", r, body)
		}
	})
	t.Run("fail/other-device-polls-mqtt-operation", func(t *testing.T) {
		d, err := e.connect(t, "grp-cross-3", connOpts{})
		if err != nil {
			t.Fatal(err)
		}
		_, body := d.request(t, 1, registerTopic("1"), nil)
		op := decode[opStatus](t, body)
		other, err := e.connect(t, "grp-cross-4", connOpts{})
		if err != nil {
			t.Fatal(err)
		}
		r, body := other.request(t, 1, pollTopic("1", op.OperationID), nil)
		if got := decode[dpsapi.ErrorDetails](t, body); r.Status != 404 || got.ErrorCode != dpsapi.CodeNotFound {
			t.Fatalf("%+v %s", r, body)
		}
	})
}

// Authentication failures are answered on the response topic, with the same
// body for an unknown device and a bad proof; nothing is written.
func TestRefusedOnTopic(t *testing.T) {
	e := newEnv(t, mqttep.Limits{})
	tests := []struct {
		name, regID string
		opts        connOpts
		topic       string
		body        string
		wantStatus  int
		wantCode    int
	}{
		{name: "fail/wrong-key", regID: "dev-individual", opts: connOpts{password: e.f.Token("dev-individual", rt.OtherKey)}, wantStatus: 401, wantCode: dpsapi.CodeUnauthorized},
		{name: "fail/unknown-device", regID: "nobody-here", opts: connOpts{password: e.f.Token("nobody-here", rt.OtherKey)}, wantStatus: 401, wantCode: dpsapi.CodeUnauthorized},
		{name: "fail/no-password", regID: "grp-nopass", opts: connOpts{password: "-"}, wantStatus: 401, wantCode: dpsapi.CodeUnauthorized},
		{name: "fail/garbage-password", regID: "grp-garbage", opts: connOpts{password: "SharedAccessSignature sr=&&"}, wantStatus: 401, wantCode: dpsapi.CodeUnauthorized},
		{name: "fail/token-of-another-device", regID: "grp-victim", opts: connOpts{password: e.f.GroupToken("grp-attacker")}, wantStatus: 401, wantCode: dpsapi.CodeUnauthorized},
		{name: "fail/wrong-id-scope", regID: "grp-scope",
			opts:       connOpts{username: dpsapi.MQTTUsername{IDScope: "0ne00000BAD", RegistrationID: "grp-scope", APIVersion: "2019-03-31"}.String()},
			wantStatus: 401, wantCode: dpsapi.CodeUnauthorized},
		{name: "fail/malformed-json", regID: "grp-json", body: `{"registrationId":`, wantStatus: 400, wantCode: dpsapi.CodeInvalidBody},
		{name: "fail/wrong-field-type", regID: "grp-json2", body: `{"payload":1,"registrationId":7}`, wantStatus: 400, wantCode: dpsapi.CodeInvalidBody},
		{name: "fail/body-id-differs", regID: "grp-body", body: `{"registrationId":"grp-else"}`, wantStatus: 400, wantCode: dpsapi.CodeIDMismatch},
		{name: "fail/unknown-operation", regID: "grp-poll", topic: pollTopic("1", "4.0.nope"), wantStatus: 404, wantCode: dpsapi.CodeNotFound},
		{name: "fail/disabled-is-a-failed-operation", regID: "dev-disabled", opts: connOpts{password: e.f.Token("dev-disabled", rt.DisabledKey)},
			wantStatus: 202},
	}
	bodies := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := e.connect(t, tt.regID, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			topic := tt.topic
			if topic == "" {
				topic = registerTopic("r1")
			}
			r, body := d.request(t, 1, topic, []byte(tt.body))
			if r.Status != tt.wantStatus || (r.Status == 429) != (r.RetryAfter > 0) && r.Status != 202 {
				t.Fatalf("got %+v %s, want status %d", r, body, tt.wantStatus)
			}
			if tt.wantCode != 0 {
				got := decode[dpsapi.ErrorDetails](t, body)
				if got.ErrorCode != tt.wantCode || got.Message == "" || got.TrackingID == "" || got.TimestampUTC.IsZero() {
					t.Fatalf("body %s, want code %d", body, tt.wantCode)
				}
				var m map[string]any
				json.Unmarshal(body, &m)
				delete(m, "trackingId")
				delete(m, "timestampUtc")
				b, _ := json.Marshal(m)
				bodies[tt.name] = string(b)
			}
			if n := e.records(t); n != 0 {
				t.Fatalf("%d records written", n)
			}
		})
	}
	if bodies["fail/wrong-key"] != bodies["fail/unknown-device"] || bodies["fail/wrong-key"] != bodies["fail/wrong-id-scope"] {
		t.Fatalf("refusals differ: %v", bodies)
	}
}

// A device polling faster than the limit is answered 429 with retry-after on
// the topic (Node and C retry after it); another device is not slowed.
func TestPollThrottling(t *testing.T) {
	e := newEnvWith(t, mqttep.Limits{}, func(c *registration.Config) { c.PollLimit = throttle.NewWindow(5, 10*time.Second, 1000) })
	d, err := e.connect(t, "grp-fast", connOpts{})
	if err != nil {
		t.Fatal(err)
	}
	_, body := d.request(t, 1, registerTopic("r"), nil)
	op := decode[opStatus](t, body)
	for i := range 5 {
		if r, body := d.request(t, 1, pollTopic(fmt.Sprint(i), op.OperationID), nil); r.Status != 200 {
			t.Fatalf("poll %d: %+v %s", i, r, body)
		}
	}
	r, body := d.request(t, 1, pollTopic("6", op.OperationID), nil)
	if got := decode[dpsapi.ErrorDetails](t, body); r.Status != 429 || r.RetryAfter < 1 || got.ErrorCode != dpsapi.CodeThrottled {
		t.Fatalf("6th poll in 10 s: %+v %s", r, body)
	}
	calm, err := e.connect(t, "grp-calm", connOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if r, body := calm.request(t, 1, registerTopic("r"), nil); r.Status != 202 {
		t.Fatalf("another device was slowed: %+v %s", r, body)
	}
}

// CONNECTs that cannot be a DPS device are refused in the CONNACK.
func TestConnectRefused(t *testing.T) {
	e := newEnv(t, mqttep.Limits{})
	good := username("grp-conn")
	tests := []struct {
		name           string
		pk             packets.Packet
		wantCode       byte
		wantV5Response bool
	}{
		{name: "fail/malformed-username", pk: connectPacket("grp-conn", "grp-conn", e.f.GroupToken("grp-conn"), 4, 60), wantCode: 0x04},
		{name: "fail/no-username", pk: connectPacket("grp-conn", "", e.f.GroupToken("grp-conn"), 4, 60), wantCode: 0x04},
		{name: "fail/bad-scope-in-username", pk: connectPacket("grp-conn", "scope/registrations/grp-conn/api-version=2019-03-31", "", 4, 60), wantCode: 0x04},
		{name: "fail/bad-api-version", pk: connectPacket("grp-conn", rt.Scope+"/registrations/grp-conn/api-version=today", "", 4, 60), wantCode: 0x04},
		{name: "fail/invalid-registration-id", pk: connectPacket("grp!conn", rt.Scope+"/registrations/grp!conn/api-version=2019-03-31", "", 4, 60), wantCode: 0x04},
		{name: "fail/client-id-differs", pk: connectPacket("grp-other", good, e.f.GroupToken("grp-conn"), 4, 60), wantCode: 0x02},
		{name: "fail/empty-client-id", pk: connectPacket("", good, e.f.GroupToken("grp-conn"), 4, 60), wantCode: 0x02},
		{name: "fail/mqtt-5", pk: connectPacket("grp-conn", good, e.f.GroupToken("grp-conn"), 5, 60), wantCode: 0x84, wantV5Response: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.dialRaw(t)
			if err := r.write(t, tt.pk); err != nil {
				t.Fatal(err)
			}
			v := byte(4)
			if tt.wantV5Response {
				v = 5
			}
			pk, err := r.read(t, v, 5*time.Second)
			if err != nil || pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != tt.wantCode || pk.SessionPresent {
				t.Fatalf("got %v %+v, want CONNACK %#x", err, pk, tt.wantCode)
			}
			if !r.closedWithin(t, 5*time.Second) {
				t.Fatal("connection left open after a refused CONNECT")
			}
		})
	}
	t.Run("fail/mqtt-3.1", func(t *testing.T) {
		r := e.dialRaw(t)
		pk := connectPacket("grp-conn", good, e.f.GroupToken("grp-conn"), 3, 60)
		pk.Connect.ProtocolName = []byte("MQIsdp")
		r.write(t, pk)
		if pk, err := r.read(t, 3, 5*time.Second); err != nil || pk.ReasonCode != 0x01 {
			t.Fatalf("%+v %v", pk, err)
		}
	})
	t.Run("ok/session-never-present", func(t *testing.T) {
		for range 2 {
			r := e.dialRaw(t)
			pk := connectPacket("grp-conn", good, e.f.GroupToken("grp-conn"), 4, 60)
			pk.Connect.Clean = false
			r.write(t, pk)
			if pk, err := r.read(t, 4, 5*time.Second); err != nil || pk.ReasonCode != 0 || pk.SessionPresent {
				t.Fatalf("%+v %v", pk, err)
			}
			r.c.Close()
		}
	})
	if n := e.records(t); n != 0 {
		t.Fatalf("%d records written", n)
	}
}

// A device may subscribe to $dps/registrations/res/# only and publish to the
// two request topics only.
func TestTopicsRefused(t *testing.T) {
	e := newEnv(t, mqttep.Limits{})
	for _, filter := range []string{"#", "$dps/#", "$dps/registrations/res/+/#", "$dps/registrations/res/200/?$rid=1", "$SYS/#",
		"$dps/registrations/PUT/iotdps-register/#", "devices/grp-topic/messages/devicebound/#", "$iothub/twin/res/#"} {
		t.Run("fail/subscribe-"+filter, func(t *testing.T) {
			r := e.dialRaw(t)
			r.handshake(t, e, "grp-topic")
			sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 7,
				Filters: packets.Subscriptions{{Filter: filter, Qos: 1}}}
			r.write(t, sub)
			pk, err := r.read(t, 4, 5*time.Second)
			if err != nil || pk.FixedHeader.Type != packets.Suback || len(pk.ReasonCodes) != 1 || pk.ReasonCodes[0] != 0x80 {
				t.Fatalf("SUBACK %+v %v, want failure 0x80", pk, err)
			}
		})
	}
	for _, topic := range []string{"devices/grp-topic/messages/events/", "$dps/registrations/res/200/?$rid=1", "$dps/registrations/PUT/iotdps-register/",
		"$dps/registrations/PUT/iotdps-register/?$rid=1/2", "$SYS/broker/clients"} {
		for _, qos := range []byte{0, 1} {
			t.Run(fmt.Sprintf("fail/publish-qos%d-disconnects-%s", qos, topic), func(t *testing.T) {
				r := e.dialRaw(t)
				r.handshake(t, e, "grp-topic")
				r.write(t, publishPacket(topic, qos, uint16(qos)*9, []byte(`{}`)))
				if !r.closedWithin(t, 5*time.Second) {
					t.Fatal("still connected")
				}
			})
		}
	}
	t.Run("fail/publish-qos2-disconnects", func(t *testing.T) {
		r := e.dialRaw(t)
		r.handshake(t, e, "grp-topic")
		r.write(t, publishPacket(registerTopic("1"), 2, 3, nil))
		if !r.closedWithin(t, 5*time.Second) {
			t.Fatal("still connected")
		}
	})
	if n := e.records(t); n != 0 {
		t.Fatalf("%d records written", n)
	}
}

// Responses go to the requesting connection only, though every device
// subscribes to the same filter; a will cannot be used to forge one.
func TestResponsesStayWithTheirConnection(t *testing.T) {
	e := newEnv(t, mqttep.Limits{})
	watcher, err := e.connect(t, "grp-watcher", connOpts{})
	if err != nil {
		t.Fatal(err)
	}
	forger, err := e.connect(t, "grp-forger", connOpts{will: "$dps/registrations/res/200/?$rid=forged"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("grp-iso-%d", i)
			d, err := e.connect(t, id, connOpts{websocket: i%2 == 1})
			if err != nil {
				t.Error(err)
				return
			}
			r, _ := d.request(t, 1, registerTopic("same-rid"), nil)
			if r.Status != 202 {
				t.Errorf("%s: %+v", id, r)
			}
		}()
	}
	wg.Wait()
	// The forger drops its connection without DISCONNECT: a broker would send its will.
	forger.c.Disconnect(0)
	select {
	case m := <-watcher.msgs:
		t.Fatalf("watcher received %s: %s", m.Topic(), m.Payload())
	case <-time.After(500 * time.Millisecond):
	}
	// The watcher's own request is still answered.
	if r, _ := watcher.request(t, 1, registerTopic("mine"), nil); r.Status != 202 {
		t.Fatalf("%+v", r)
	}
}

// A client that has not subscribed gets no response (as from any broker), and
// its request is still served.
func TestNoSubscriptionNoResponse(t *testing.T) {
	e := newEnv(t, mqttep.Limits{})
	d, err := e.connect(t, "grp-nosub", connOpts{noSubscribe: true})
	if err != nil {
		t.Fatal(err)
	}
	if tok := d.c.Publish(registerTopic("1"), 1, false, []byte{}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	select {
	case m := <-d.msgs:
		t.Fatalf("received %s", m.Topic())
	case <-time.After(300 * time.Millisecond):
	}
	if n := e.records(t); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
}

// Packets over 96 KB end the connection; other clients carry on.
func TestOversizedPacket(t *testing.T) {
	e := newEnv(t, mqttep.Limits{})
	other, err := e.connect(t, "grp-bystander", connOpts{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		size int
	}{{"fail/payload-just-over", mqttep.MaxPacketSize}, {"fail/one-megabyte", 1 << 20}} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.dialRaw(t)
			r.handshake(t, e, "grp-big")
			body := []byte(`{"payload":"` + strings.Repeat("x", tc.size) + `"}`)
			r.write(t, publishPacket(registerTopic("1"), 1, 5, body))
			if !r.closedWithin(t, 5*time.Second) {
				t.Fatal("still connected")
			}
		})
	}
	t.Run("ok/payload-just-under", func(t *testing.T) {
		d, err := e.connect(t, "grp-almost", connOpts{})
		if err != nil {
			t.Fatal(err)
		}
		topic := registerTopic("1")
		pad := mqttep.MaxPacketSize - 2 - 2 - len(topic) - 2 - len(`{"payload":{"p":""}}`) - 16
		r, body := d.request(t, 1, topic, []byte(`{"payload":{"p":"`+strings.Repeat("y", pad)+`"}}`))
		if r.Status != 202 {
			t.Fatalf("%+v %s", r, body)
		}
	})
	if r, _ := other.request(t, 1, registerTopic("after"), nil); r.Status != 202 {
		t.Fatalf("bystander: %+v", r)
	}
	if n := e.records(t); n != 2 {
		t.Fatalf("%d records, want 2 (the bystander's and the one under the limit)", n)
	}
}

// A flood of PUBLISHes gets its connection closed, having served at most its
// burst; a well-behaved device provisions meanwhile.
func TestPublishFlood(t *testing.T) {
	e := newEnv(t, mqttep.Limits{PacketRate: 5, PacketBurst: 20})
	r := e.dialRaw(t)
	r.handshake(t, e, "grp-flood")
	served := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			pk, err := r.read(t, 4, 10*time.Second)
			if err != nil {
				return
			}
			if pk.FixedHeader.Type == packets.Publish {
				served++
			}
		}
	}()
	// Polls of an unknown operation: each one is real work, none writes.
	var werr error
	for i := 0; i < 2000 && werr == nil; i++ {
		werr = r.write(t, publishPacket(pollTopic(fmt.Sprint(i), "4.0.none"), 0, 0, nil))
	}
	d, err := e.connect(t, "grp-calm", connOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := d.request(t, 1, registerTopic("1"), nil); resp.Status != 202 {
		t.Fatalf("calm device: %+v", resp)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("flooding connection still open")
	}
	if served > 20 {
		t.Fatalf("%d requests served, burst is 20", served)
	}
	if n := e.records(t); n != 1 {
		t.Fatalf("%d records, want the calm device's only", n)
	}
}

// Over the connection cap, CONNECT is answered "server unavailable".
func TestConnectionCap(t *testing.T) {
	e := newEnv(t, mqttep.Limits{MaxConnections: 2})
	a, err := e.connect(t, "grp-cap-1", connOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.connect(t, "grp-cap-2", connOpts{websocket: true}); err != nil {
		t.Fatal(err)
	}
	r := e.dialRaw(t)
	r.write(t, connectPacket("grp-cap-3", username("grp-cap-3"), e.f.GroupToken("grp-cap-3"), 4, 60))
	if pk, err := r.read(t, 4, 5*time.Second); err != nil || pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0x03 {
		t.Fatalf("got %+v %v, want CONNACK 3 (server unavailable)", pk, err)
	}
	a.c.Disconnect(100)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := e.connect(t, "grp-cap-3", connOpts{}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("no room after a client left: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A socket that does not finish TLS and CONNECT in time is closed, as is a
// client silent for 1.5 times the keep-alive (0 is replaced by the maximum).
func TestTimeouts(t *testing.T) {
	e := newEnv(t, mqttep.Limits{ConnectTimeout: 300 * time.Millisecond, MaxKeepAlive: time.Second})
	t.Run("fail/no-tls-handshake", func(t *testing.T) {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("read: %v, want the server to close", err)
		}
	})
	t.Run("fail/no-connect", func(t *testing.T) {
		r := e.dialRaw(t)
		if !r.closedWithin(t, 3*time.Second) {
			t.Fatal("still open")
		}
	})
	t.Run("fail/no-connect-websocket", func(t *testing.T) {
		ws := e.dialWS(t, "mqtt")
		ws.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, _, err := ws.ReadMessage(); err == nil || isTimeout(err) {
			t.Fatalf("read: %v, want the server to close", err)
		}
	})
	for _, ka := range []uint16{0, 3600} {
		t.Run(fmt.Sprintf("fail/silent-with-keepalive-%d", ka), func(t *testing.T) {
			r := e.dialRaw(t)
			r.write(t, connectPacket("grp-ka", username("grp-ka"), e.f.GroupToken("grp-ka"), 4, ka))
			if pk, err := r.read(t, 4, 2*time.Second); err != nil || pk.ReasonCode != 0 {
				t.Fatalf("%+v %v", pk, err)
			}
			start := time.Now()
			if !r.closedWithin(t, 5*time.Second) {
				t.Fatal("still open")
			}
			if d := time.Since(start); d < time.Second {
				t.Fatalf("closed after %v, before the keep-alive", d)
			}
		})
	}
	t.Run("ok/pings-keep-it-open", func(t *testing.T) {
		r := e.dialRaw(t)
		r.write(t, connectPacket("grp-ping", username("grp-ping"), e.f.GroupToken("grp-ping"), 4, 1))
		r.read(t, 4, 2*time.Second)
		for range 6 {
			time.Sleep(500 * time.Millisecond)
			r.write(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
			if pk, err := r.read(t, 4, 2*time.Second); err != nil || pk.FixedHeader.Type != packets.Pingresp {
				t.Fatalf("%+v %v", pk, err)
			}
		}
	})
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// The WebSocket endpoint speaks the subprotocol mqtt in any case, and nothing else.
func TestWebSocketSubprotocol(t *testing.T) {
	e := newEnv(t, mqttep.Limits{})
	for _, proto := range []string{"mqtt", "MQTT"} {
		t.Run("ok/"+proto, func(t *testing.T) {
			ws := e.dialWS(t, proto)
			if ws.Subprotocol() != proto {
				t.Fatalf("subprotocol %q", ws.Subprotocol())
			}
			var buf bytes.Buffer
			pk := connectPacket("grp-ws", username("grp-ws"), e.f.GroupToken("grp-ws"), 4, 60)
			pk.ConnectEncode(&buf)
			// Split across two messages: the stream is what counts.
			ws.WriteMessage(websocket.BinaryMessage, buf.Bytes()[:5])
			ws.WriteMessage(websocket.BinaryMessage, buf.Bytes()[5:])
			ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, msg, err := ws.ReadMessage()
			if err != nil || len(msg) != 4 || msg[0] != 0x20 || msg[3] != 0 {
				t.Fatalf("CONNACK %x %v", msg, err)
			}
		})
	}
	for _, tc := range []struct{ name, proto string }{{"fail/no-subprotocol", ""}, {"fail/amqp", "AMQPWSB10"}} {
		t.Run(tc.name, func(t *testing.T) {
			dialer := websocket.Dialer{TLSClientConfig: e.client}
			if tc.proto != "" {
				dialer.Subprotocols = []string{tc.proto}
			}
			_, resp, err := dialer.Dial(strings.Replace(e.web.URL, "https", "wss", 1)+mqttep.WebSocketPath, nil)
			if err == nil || resp == nil || resp.StatusCode != 400 {
				t.Fatalf("dial: %v %v", resp, err)
			}
		})
	}
	t.Run("fail/text-frame", func(t *testing.T) {
		ws := e.dialWS(t, "mqtt")
		ws.WriteMessage(websocket.TextMessage, []byte("hello"))
		ws.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, _, err := ws.ReadMessage(); err == nil || isTimeout(err) {
			t.Fatalf("read: %v, want the server to close", err)
		}
	})
}

func (e *env) dialWS(t testing.TB, proto string) *websocket.Conn {
	t.Helper()
	dialer := websocket.Dialer{TLSClientConfig: e.client, Subprotocols: []string{proto}}
	ws, _, err := dialer.Dial(strings.Replace(e.web.URL, "https", "wss", 1)+mqttep.WebSocketPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// Close disconnects every client and refuses new ones.
func TestClose(t *testing.T) {
	e := newEnv(t, mqttep.Limits{})
	d, err := e.connect(t, "grp-close", connOpts{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := e.connect(t, "grp-close-ws", connOpts{websocket: true})
	if err != nil {
		t.Fatal(err)
	}
	half := e.dialRaw(t) // TLS done, no CONNECT yet
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	for _, dev := range []*device{d, w} {
		select {
		case <-dev.lost:
		case <-time.After(5 * time.Second):
			t.Fatal("client still connected")
		}
	}
	if !half.closedWithin(t, 5*time.Second) {
		t.Fatal("half-open connection still open")
	}
	if e.srv.Connections() != 0 {
		t.Fatalf("%d connections left", e.srv.Connections())
	}
	if _, err := e.connect(t, "grp-late", connOpts{}); err == nil {
		t.Fatal("connected after Close")
	}
}
