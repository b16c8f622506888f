package webhook_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/daemon/hub/webhook"
)

var ctx = context.Background()

var secret = []byte("shared webhook secret, 32 bytes!")

// receiver is an operator's endpoint: it checks signatures as the package
// documentation tells receivers to, and keeps devices by ID.
type receiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	devices map[string]json.RawMessage
	calls   []string
	status  func(method string, n int) int // injected answers
	noGet   bool
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{devices: map[string]json.RawMessage{}}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	ts := r.Header.Get(webhook.HeaderTimestamp)
	sec, err := strconv.ParseInt(ts, 10, 64)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts + "." + r.Method + "." + r.URL.EscapedPath() + "." + string(body)))
	want := "v1=" + hex.EncodeToString(m.Sum(nil))
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute ||
		!hmac.Equal([]byte(r.Header.Get(webhook.HeaderSignature)), []byte(want)) {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.calls = append(rc.calls, r.Method+" "+r.URL.EscapedPath())
	if rc.status != nil {
		if s := rc.status(r.Method, len(rc.calls)); s != 0 {
			w.WriteHeader(s)
			return
		}
	}
	id, ok := strings.CutPrefix(r.URL.Path, "/edge/devices/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodPost:
		rc.devices[id] = body
		w.WriteHeader(http.StatusNoContent)
	case http.MethodDelete:
		if _, ok := rc.devices[id]; !ok {
			http.NotFound(w, r)
			return
		}
		delete(rc.devices, id)
	case http.MethodGet:
		if rc.noGet {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		b, ok := rc.devices[id]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}
}

func (rc *receiver) driver(t *testing.T, secret []byte) *webhook.Driver {
	t.Helper()
	pool := rc.srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	d, err := webhook.New(webhook.Config{URL: rc.srv.URL + "/edge/", Secret: secret, HubHostName: "gw.plant.test",
		TLS: &tls.Config{RootCAs: pool}, Calls: hub.Calls{Timeout: 2 * time.Second, Retries: 2, Backoff: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestContract(t *testing.T) {
	rc := newReceiver(t)
	d := rc.driver(t, secret)
	k := hub.SecretKey("device key of thirty-two bytes!!")
	dev := hub.Device{DeviceID: "sensor 1/ä", AuthType: hub.AuthSAS, Key: k, IoTEdge: true,
		Twin: &hub.Twin{Tags: map[string]any{"site": "w7"}, Desired: map[string]any{"interval": 30}}}
	for range 2 { // the same upsert twice is harmless
		if err := d.EnsureDevice(ctx, dev); err != nil {
			t.Fatal(err)
		}
	}
	got := string(rc.devices["sensor 1/ä"])
	want := `{"hubHostName":"gw.plant.test","deviceId":"sensor 1/ä","status":"enabled","authentication":{"type":"sas","password":"` +
		sas.MQTTPassword(k, "sensor 1/ä") + `"},"capabilities":{"iotEdge":true},"twin":{"tags":{"site":"w7"},"properties":{"desired":{"interval":30}}}}`
	if got != want {
		t.Fatalf("body\n got %s\nwant %s", got, want)
	}
	if rc.calls[0] != "POST /edge/devices/sensor%201%2F%C3%A4" {
		t.Fatalf("path %s", rc.calls[0])
	}
	data, err := d.ReadDevice(ctx, "sensor 1/ä")
	if err != nil || !*data.IoTEdge || data.Twin.Tags["site"] != "w7" {
		t.Fatalf("ReadDevice = %+v, %v", data, err)
	}
	for range 2 { // deleting an unknown device is not an error
		if err := d.DeleteDevice(ctx, "sensor 1/ä"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.ReadDevice(ctx, "sensor 1/ä"); !errors.Is(err, hub.ErrNotFound) {
		t.Fatalf("ReadDevice after delete = %v", err)
	}

	t.Run("ok/x509-and-disabled", func(t *testing.T) {
		dev := hub.Device{DeviceID: "cam-1", AuthType: hub.AuthSelfSigned, Disabled: true,
			CommonName: "cam-1", Thumbprint: "AB12"}
		if err := d.EnsureDevice(ctx, dev); err != nil {
			t.Fatal(err)
		}
		want := `{"hubHostName":"gw.plant.test","deviceId":"cam-1","status":"disabled","authentication":{"type":"selfSigned","commonName":"cam-1","x509Thumbprint":{"primaryThumbprint":"AB12"}},"capabilities":{"iotEdge":false}}`
		if got := string(rc.devices["cam-1"]); got != want {
			t.Fatalf("body\n got %s\nwant %s", got, want)
		}
	})
}

func TestFailures(t *testing.T) {
	rc := newReceiver(t)
	dev := hub.Device{DeviceID: "d1", AuthType: hub.AuthSAS, Key: hub.SecretKey("0123456789abcdef")}
	t.Run("fail/wrong-secret-is-refused-at-once", func(t *testing.T) {
		d := rc.driver(t, []byte("some other secret, 32 bytes long"))
		if err := d.EnsureDevice(ctx, dev); !errors.Is(err, hub.ErrRefused) {
			t.Fatalf("EnsureDevice = %v, want ErrRefused", err)
		}
	})
	d := rc.driver(t, secret)
	t.Run("ok/503-is-retried", func(t *testing.T) {
		rc.mu.Lock()
		rc.calls, rc.status = nil, func(_ string, n int) int {
			if n == 1 {
				return http.StatusServiceUnavailable
			}
			return 0
		}
		rc.mu.Unlock()
		if err := d.EnsureDevice(ctx, dev); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("fail/422-is-a-refusal", func(t *testing.T) {
		rc.mu.Lock()
		rc.calls, rc.status = nil, func(string, int) int { return http.StatusUnprocessableEntity }
		rc.mu.Unlock()
		if err := d.EnsureDevice(ctx, dev); !errors.Is(err, hub.ErrRefused) || len(rc.calls) != 1 {
			t.Fatalf("EnsureDevice = %v after %d calls, want one refused call", err, len(rc.calls))
		}
	})
	t.Run("fail/read-not-supported", func(t *testing.T) {
		rc.mu.Lock()
		rc.status, rc.noGet = nil, true
		rc.mu.Unlock()
		if _, err := d.ReadDevice(ctx, "d1"); err == nil || errors.Is(err, hub.ErrNotFound) || !strings.Contains(err.Error(), "405") {
			t.Fatalf("ReadDevice = %v", err)
		}
	})
	t.Run("fail/http-url-refused", func(t *testing.T) {
		if _, err := webhook.New(webhook.Config{URL: "http://example.test/x", Secret: secret}); err == nil {
			t.Fatal("an http URL was accepted")
		}
	})
}

func TestSignatureBindsEverything(t *testing.T) {
	base := webhook.Sign(secret, "100", "POST", "/d/a", []byte("{}"))
	for name, other := range map[string]string{
		"timestamp": webhook.Sign(secret, "101", "POST", "/d/a", []byte("{}")),
		"method":    webhook.Sign(secret, "100", "DELETE", "/d/a", []byte("{}")),
		"path":      webhook.Sign(secret, "100", "POST", "/d/b", []byte("{}")),
		"body":      webhook.Sign(secret, "100", "POST", "/d/a", []byte("{ }")),
		"secret":    webhook.Sign([]byte("x"), "100", "POST", "/d/a", []byte("{}")),
	} {
		if other == base {
			t.Errorf("changing the %s keeps the signature", name)
		}
	}
}
