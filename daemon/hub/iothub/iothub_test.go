package iothub_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/daemon/hub/iothub"
)

var ctx = context.Background()

// fakeHub is an IoT Hub registry built from the public REST contract
// (api-version 2021-04-12): devices with etags (409 on re-create, 412 on a
// stale If-Match), twins patched as JSON merge patches, SAS-authenticated
// requests. The cloud is unreachable from here, so this is what the driver
// is tested against.
type fakeHub struct {
	t       *testing.T
	host    string
	keyName string
	key     []byte
	srv     *httptest.Server

	mu      sync.Mutex
	devices map[string]*fakeDevice
	seq     int
	calls   []string
	// hook runs before a request is served; a non-zero status answers it.
	hook func(r *http.Request, n int) int
}

type fakeDevice struct {
	Device   map[string]any
	ETag     string
	Tags     map[string]any
	Desired  map[string]any
	TwinETag string
	Version  int
}

func newFakeHub(t *testing.T) *fakeHub {
	f := &fakeHub{t: t, host: "edgeprov-test.azure-devices.net", keyName: "registryReadWrite",
		key: []byte("iothub policy key, 32 bytes long"), devices: map[string]*fakeDevice{}}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeHub) connectionString(key []byte) string {
	return fmt.Sprintf("HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s", f.host, f.keyName, base64.StdEncoding.EncodeToString(key))
}

func (f *fakeHub) driver(t *testing.T, key []byte, calls hub.Calls) *iothub.Driver {
	t.Helper()
	cs, err := iothub.ParseConnectionString(f.connectionString(key))
	if err != nil {
		t.Fatal(err)
	}
	pool := f.srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	d, err := iothub.New(iothub.Config{Connection: cs, Endpoint: f.srv.URL, TLS: &tls.Config{RootCAs: pool}, Calls: calls})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func (f *fakeHub) setHook(h func(r *http.Request, n int) int) {
	f.mu.Lock()
	f.hook = h
	f.mu.Unlock()
}

func (f *fakeHub) nextETag() string {
	f.seq++
	return base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("etag-%d", f.seq)))
}

func (f *fakeHub) log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.calls
	f.calls = nil
	return out
}

func hubError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"Message": "ErrorCode:" + code + ";" + msg, "ExceptionMessage": ""})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// authorized checks the SAS token as IoT Hub does: sr names this hub,
// skn the policy, se is in the future and sig is HMAC-SHA256(key,
// sr + "\n" + se) with sr as it appears in the token.
func (f *fakeHub) authorized(h string) bool {
	tok, ok := strings.CutPrefix(h, "SharedAccessSignature ")
	if !ok {
		return false
	}
	fields := map[string]string{}
	for _, kv := range strings.Split(tok, "&") {
		k, v, _ := strings.Cut(kv, "=")
		fields[k] = v
	}
	sr, err := url.QueryUnescape(fields["sr"])
	if err != nil || !strings.EqualFold(sr, f.host) || fields["skn"] != f.keyName {
		return false
	}
	var se int64
	if _, err := fmt.Sscan(fields["se"], &se); err != nil || time.Unix(se, 0).Before(time.Now()) {
		return false
	}
	sig, err := url.QueryUnescape(fields["sig"])
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, f.key)
	m.Write([]byte(fields["sr"] + "\n" + fields["se"]))
	return hmac.Equal([]byte(sig), []byte(base64.StdEncoding.EncodeToString(m.Sum(nil))))
}

func (f *fakeHub) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path+ifMatch(r))
	n := len(f.calls)
	hook := f.hook
	f.mu.Unlock()
	if r.URL.Query().Get("api-version") != "2021-04-12" {
		hubError(w, http.StatusBadRequest, "InvalidProtocolVersion", "api-version missing or unsupported")
		return
	}
	if !f.authorized(r.Header.Get("Authorization")) {
		hubError(w, http.StatusUnauthorized, "IotHubUnauthorizedAccess", "Unauthorized")
		return
	}
	if hook != nil {
		if s := hook(r, n); s != 0 {
			hubError(w, s, "ServerError", "injected")
			return
		}
	}
	kind, id, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if !ok || id == "" {
		hubError(w, http.StatusNotFound, "NotFound", "no such path")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch kind + " " + r.Method {
	case "devices GET":
		d := f.devices[id]
		if d == nil {
			hubError(w, http.StatusNotFound, "DeviceNotFound", "Device "+id+" not registered")
			return
		}
		writeJSON(w, http.StatusOK, f.deviceJSON(d))
	case "devices PUT":
		f.putDevice(w, r, id)
	case "devices DELETE":
		if r.Header.Get("If-Match") == "" {
			hubError(w, http.StatusBadRequest, "ArgumentInvalid", "If-Match header required")
			return
		}
		if f.devices[id] == nil {
			hubError(w, http.StatusNotFound, "DeviceNotFound", "Device "+id+" not registered")
			return
		}
		delete(f.devices, id)
		w.WriteHeader(http.StatusNoContent)
	case "twins GET":
		d := f.devices[id]
		if d == nil {
			hubError(w, http.StatusNotFound, "DeviceNotFound", "Device "+id+" not registered")
			return
		}
		writeJSON(w, http.StatusOK, f.twinJSON(id, d))
	case "twins PATCH":
		f.patchTwin(w, r, id)
	default:
		hubError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", r.Method)
	}
}

func ifMatch(r *http.Request) string {
	if v := r.Header.Get("If-Match"); v != "" {
		return " If-Match:" + v
	}
	return ""
}

func (f *fakeHub) deviceJSON(d *fakeDevice) map[string]any {
	out := map[string]any{}
	for k, v := range d.Device {
		out[k] = v
	}
	out["etag"] = d.ETag
	out["generationId"] = "638000000000000000"
	out["connectionState"] = "Disconnected"
	auth := map[string]any{}
	for k, v := range out["authentication"].(map[string]any) {
		auth[k] = v
	}
	out["authentication"] = auth
	// IoT Hub answers with every mechanism's members, unused ones null.
	if _, ok := auth["x509Thumbprint"]; !ok {
		auth["x509Thumbprint"] = map[string]any{"primaryThumbprint": nil, "secondaryThumbprint": nil}
	}
	if _, ok := auth["symmetricKey"]; !ok {
		auth["symmetricKey"] = map[string]any{"primaryKey": nil, "secondaryKey": nil}
	}
	return out
}

func (f *fakeHub) twinJSON(id string, d *fakeDevice) map[string]any {
	desired := map[string]any{"$metadata": map[string]any{"$lastUpdated": "2026-01-01T00:00:00Z"}, "$version": d.Version}
	for k, v := range d.Desired {
		desired[k] = v
	}
	tags := d.Tags
	if tags == nil {
		tags = map[string]any{}
	}
	return map[string]any{"deviceId": id, "etag": d.TwinETag, "version": d.Version + 1, "tags": tags,
		"properties": map[string]any{"desired": desired, "reported": map[string]any{"$version": 1}}}
}

func (f *fakeHub) putDevice(w http.ResponseWriter, r *http.Request, id string) {
	var body map[string]any
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&body); err != nil {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", err.Error())
		return
	}
	if body["deviceId"] != id {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", "deviceId in the body differs from the path")
		return
	}
	if s, _ := body["status"].(string); s != "enabled" && s != "disabled" {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", "status must be enabled or disabled")
		return
	}
	if msg := checkAuth(body["authentication"]); msg != "" {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", msg)
		return
	}
	cur := f.devices[id]
	im := r.Header.Get("If-Match")
	switch {
	case cur != nil && im == "":
		hubError(w, http.StatusConflict, "DeviceAlreadyExists", "A device with ID '"+id+"' is already registered.")
		return
	case cur != nil && im != "*" && im != `"`+cur.ETag+`"`:
		hubError(w, http.StatusPreconditionFailed, "PreconditionFailed", "Precondition failed: etag mismatch")
		return
	case cur == nil && im != "" && im != "*":
		hubError(w, http.StatusNotFound, "DeviceNotFound", "Device "+id+" not registered")
		return
	case cur == nil:
		cur = &fakeDevice{TwinETag: f.nextETag(), Version: 1}
		f.devices[id] = cur
	}
	delete(body, "etag")
	cur.Device, cur.ETag = body, f.nextETag()
	writeJSON(w, http.StatusOK, f.deviceJSON(cur))
}

func checkAuth(v any) string {
	a, _ := v.(map[string]any)
	switch a["type"] {
	case "sas":
		k, _ := a["symmetricKey"].(map[string]any)
		for _, name := range []string{"primaryKey", "secondaryKey"} {
			s, _ := k[name].(string)
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil || len(b) < 16 || len(b) > 64 {
				return "symmetricKey." + name + " must be base64 of 16 to 64 bytes"
			}
		}
	case "selfSigned":
		tp, _ := a["x509Thumbprint"].(map[string]any)
		s, _ := tp["primaryThumbprint"].(string)
		if _, err := hex.DecodeString(s); err != nil || len(s) != 40 && len(s) != 64 {
			return "x509Thumbprint.primaryThumbprint must be a SHA-1 or SHA-256 hex thumbprint"
		}
	case "certificateAuthority":
		if a["symmetricKey"] != nil || a["x509Thumbprint"] != nil {
			return "certificateAuthority takes no keys or thumbprints"
		}
	default:
		return fmt.Sprintf("unknown authentication type %v", a["type"])
	}
	return ""
}

func (f *fakeHub) patchTwin(w http.ResponseWriter, r *http.Request, id string) {
	d := f.devices[id]
	if d == nil {
		hubError(w, http.StatusNotFound, "DeviceNotFound", "Device "+id+" not registered")
		return
	}
	im := r.Header.Get("If-Match")
	if im == "" || im != "*" && im != `"`+d.TwinETag+`"` {
		hubError(w, http.StatusPreconditionFailed, "PreconditionFailed", "twin etag mismatch")
		return
	}
	var patch struct {
		Tags       map[string]any `json:"tags"`
		Properties *struct {
			Desired map[string]any `json:"desired"`
		} `json:"properties"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&patch); err != nil {
		hubError(w, http.StatusBadRequest, "ArgumentInvalid", err.Error())
		return
	}
	d.Tags = applyPatch(d.Tags, patch.Tags)
	if patch.Properties != nil {
		for k := range patch.Properties.Desired {
			if strings.HasPrefix(k, "$") {
				hubError(w, http.StatusBadRequest, "ArgumentInvalid", "$ properties are read-only")
				return
			}
		}
		d.Desired = applyPatch(d.Desired, patch.Properties.Desired)
	}
	d.Version++
	d.TwinETag = f.nextETag()
	writeJSON(w, http.StatusOK, f.twinJSON(id, d))
}

// applyPatch applies a JSON merge patch (RFC 7386).
func applyPatch(cur, patch map[string]any) map[string]any {
	if cur == nil {
		cur = map[string]any{}
	}
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(cur, k)
		case map[string]any:
			cm, _ := cur[k].(map[string]any)
			cur[k] = applyPatch(cm, pv)
		default:
			cur[k] = v
		}
	}
	return cur
}

func key(b byte) hub.SecretKey {
	k := make([]byte, 32)
	for i := range k {
		k[i] = b
	}
	return k
}

var fast = hub.Calls{Timeout: 2 * time.Second, Retries: 2, Backoff: time.Millisecond}

func TestEnsureDevice(t *testing.T) {
	f := newFakeHub(t)
	d := f.driver(t, f.key, fast)
	k := key(1)
	dev := hub.Device{DeviceID: "sensor-1", AuthType: hub.AuthSAS, Key: k, IoTEdge: true,
		Twin: &hub.Twin{Tags: map[string]any{"site": "w7", "line": map[string]any{"n": 7.0, "shift": "night"}}, Desired: map[string]any{"interval": 30.0}}}

	steps := []struct {
		name string
		// change edits dev and says which calls the driver must make.
		change func() []string
	}{
		{"ok/create-with-twin", func() []string {
			return []string{"GET /devices/sensor-1", "PUT /devices/sensor-1", "PATCH /twins/sensor-1 If-Match:*"}
		}},
		{"ok/same-again-writes-nothing", func() []string { dev.Twin = nil; return []string{"GET /devices/sensor-1"} }},
		{"ok/disable-updates-with-etag", func() []string {
			dev.Disabled = true
			return []string{"GET /devices/sensor-1", `PUT /devices/sensor-1 If-Match:"` + f.etagOf("sensor-1") + `"`}
		}},
		{"ok/reset-twin-patches-with-the-twin-etag", func() []string {
			dev.Disabled = false
			dev.Twin = &hub.Twin{Tags: map[string]any{"line": map[string]any{"n": 7.0}}}
			return []string{"GET /devices/sensor-1", `PUT /devices/sensor-1 If-Match:"` + f.etagOf("sensor-1") + `"`,
				"GET /twins/sensor-1", `PATCH /twins/sensor-1 If-Match:"` + f.devices["sensor-1"].TwinETag + `"`}
		}},
	}
	for _, s := range steps {
		want := s.change()
		f.log()
		if err := d.EnsureDevice(ctx, dev); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := f.log(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: calls %q, want %q", s.name, got, want)
		}
	}
	dv := f.devices["sensor-1"]
	b64 := base64.StdEncoding.EncodeToString(k)
	wantAuth := map[string]any{"type": "sas", "symmetricKey": map[string]any{"primaryKey": b64, "secondaryKey": b64}}
	if !reflect.DeepEqual(dv.Device["authentication"], wantAuth) || dv.Device["status"] != "enabled" ||
		!reflect.DeepEqual(dv.Device["capabilities"], map[string]any{"iotEdge": true}) {
		t.Errorf("device = %v", dv.Device)
	}
	if !reflect.DeepEqual(dv.Tags, map[string]any{"line": map[string]any{"n": 7.0}}) || len(dv.Desired) != 0 {
		t.Errorf("after reset: tags %v desired %v", dv.Tags, dv.Desired)
	}

	t.Run("ok/read-back", func(t *testing.T) {
		data, err := d.ReadDevice(ctx, "sensor-1")
		if err != nil || data.IoTEdge == nil || !*data.IoTEdge || !reflect.DeepEqual(data.Twin.Tags, dv.Tags) || len(data.Twin.Desired) != 0 {
			t.Fatalf("ReadDevice = %+v, %v", data, err)
		}
		if _, err := d.ReadDevice(ctx, "nobody"); !errors.Is(err, hub.ErrNotFound) {
			t.Fatalf("ReadDevice(nobody) = %v", err)
		}
	})
	t.Run("ok/delete-is-idempotent", func(t *testing.T) {
		f.log()
		for range 2 {
			if err := d.DeleteDevice(ctx, "sensor-1"); err != nil {
				t.Fatal(err)
			}
		}
		if got := f.log(); !reflect.DeepEqual(got, []string{"DELETE /devices/sensor-1 If-Match:*", "DELETE /devices/sensor-1 If-Match:*"}) || f.devices["sensor-1"] != nil {
			t.Fatalf("calls %q", got)
		}
	})
}

// etagOf is the current etag of a device in the fake.
func (f *fakeHub) etagOf(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := f.devices[id]; d != nil {
		return d.ETag
	}
	return ""
}

func TestAuthKinds(t *testing.T) {
	f := newFakeHub(t)
	d := f.driver(t, f.key, fast)
	thumb := strings.Repeat("AB", 32) // SHA-256
	tests := []struct {
		name     string
		dev      hub.Device
		wantAuth map[string]any
		wantErr  error
	}{
		{"ok/self-signed", hub.Device{DeviceID: "cam-1", AuthType: hub.AuthSelfSigned, CommonName: "cam-1", Thumbprint: thumb},
			map[string]any{"type": "selfSigned", "x509Thumbprint": map[string]any{"primaryThumbprint": thumb}}, nil},
		{"ok/certificate-authority", hub.Device{DeviceID: "cam-2", AuthType: hub.AuthCertificateAuthority, CommonName: "cam-2"},
			map[string]any{"type": "certificateAuthority"}, nil},
		{"fail/self-signed-without-thumbprint", hub.Device{DeviceID: "cam-3", AuthType: hub.AuthSelfSigned, CommonName: "cam-3"}, nil, hub.ErrRefused},
		{"fail/sas-without-key", hub.Device{DeviceID: "s-1", AuthType: hub.AuthSAS}, nil, hub.ErrRefused},
		{"fail/hub-refuses-the-body", hub.Device{DeviceID: "cam-4", AuthType: hub.AuthSelfSigned, CommonName: "cam-4", Thumbprint: "not-hex"}, nil, hub.ErrRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d.EnsureDevice(ctx, tt.dev)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("EnsureDevice = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.devices[tt.dev.DeviceID].Device["authentication"]; !reflect.DeepEqual(got, tt.wantAuth) {
				t.Fatalf("authentication = %v, want %v", got, tt.wantAuth)
			}
			// Read back with IoT Hub's null members, it is the same identity:
			// nothing is written again.
			f.log()
			if err := d.EnsureDevice(ctx, tt.dev); err != nil {
				t.Fatal(err)
			}
			if got := f.log(); len(got) != 1 {
				t.Fatalf("second EnsureDevice made calls %q", got)
			}
		})
	}
}

func TestConcurrentWriters(t *testing.T) {
	f := newFakeHub(t)
	d := f.driver(t, f.key, fast)
	dev := hub.Device{DeviceID: "d1", AuthType: hub.AuthSAS, Key: key(1), Twin: &hub.Twin{Tags: map[string]any{"a": 1.0}}}

	t.Run("ok/created-meanwhile-409", func(t *testing.T) {
		// Another writer creates the device between our GET and PUT.
		f.setHook(func(r *http.Request, _ int) int {
			if r.Method == http.MethodPut && r.Header.Get("If-Match") == "" {
				f.mu.Lock()
				f.devices["d1"] = &fakeDevice{Device: map[string]any{"deviceId": "d1", "status": "enabled",
					"authentication": map[string]any{"type": "sas", "symmetricKey": map[string]any{"primaryKey": "x", "secondaryKey": "x"}}},
					ETag: f.nextETag(), TwinETag: f.nextETag()}
				f.hook = nil
				f.mu.Unlock()
			}
			return 0
		})
		if err := d.EnsureDevice(ctx, dev); err != nil {
			t.Fatal(err)
		}
		if k := f.devices["d1"].Device["authentication"].(map[string]any)["symmetricKey"].(map[string]any)["primaryKey"]; k != base64.StdEncoding.EncodeToString(key(1)) {
			t.Fatalf("key = %v", k)
		}
	})
	t.Run("ok/changed-meanwhile-412", func(t *testing.T) {
		dev.Key = key(2)
		f.setHook(func(r *http.Request, _ int) int {
			if r.Method == http.MethodPut && r.Header.Get("If-Match") != "" {
				f.mu.Lock()
				f.devices["d1"].ETag = f.nextETag()
				f.hook = nil
				f.mu.Unlock()
			}
			return 0
		})
		f.log()
		if err := d.EnsureDevice(ctx, dev); err != nil {
			t.Fatal(err)
		}
		if got := f.log(); len(got) != 5 || !strings.HasPrefix(got[3], "PUT") {
			t.Fatalf("calls %q, want GET PUT(412) GET PUT GET-twin…", got)
		}
	})
}

func TestFailures(t *testing.T) {
	f := newFakeHub(t)
	dev := hub.Device{DeviceID: "d1", AuthType: hub.AuthSAS, Key: key(1)}

	t.Run("fail/wrong-policy-key-is-refused-at-once", func(t *testing.T) {
		d := f.driver(t, []byte("not the policy key, 32 bytes lon"), fast)
		f.log()
		if err := d.EnsureDevice(ctx, dev); !errors.Is(err, hub.ErrRefused) || !strings.Contains(err.Error(), "IotHubUnauthorizedAccess") {
			t.Fatalf("EnsureDevice = %v, want ErrRefused", err)
		}
		if got := f.log(); len(got) != 1 {
			t.Fatalf("a refusal was retried: %q", got)
		}
	})
	t.Run("ok/503-is-retried", func(t *testing.T) {
		d := f.driver(t, f.key, fast)
		f.setHook(func(_ *http.Request, n int) int {
			if n == 1 {
				return http.StatusServiceUnavailable
			}
			return 0
		})
		defer f.setHook(nil)
		f.log()
		if err := d.EnsureDevice(ctx, dev); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("fail/slow-hub-times-out-after-retries", func(t *testing.T) {
		d := f.driver(t, f.key, hub.Calls{Timeout: 100 * time.Millisecond, Retries: 1, Backoff: time.Millisecond})
		release := make(chan struct{})
		defer close(release)
		f.setHook(func(r *http.Request, _ int) int {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return http.StatusServiceUnavailable
		})
		defer f.setHook(nil)
		err := d.EnsureDevice(ctx, hub.Device{DeviceID: "d2", AuthType: hub.AuthSAS, Key: key(1)})
		if err == nil || errors.Is(err, hub.ErrRefused) || !strings.Contains(err.Error(), "after 2 attempts") {
			t.Fatalf("EnsureDevice = %v, want a timeout after 2 attempts", err)
		}
	})
}

func TestTokenRenewal(t *testing.T) {
	f := newFakeHub(t)
	cs, _ := iothub.ParseConnectionString(f.connectionString(f.key))
	var now atomic.Pointer[time.Time]
	start := time.Now()
	now.Store(&start)
	var seen []string
	var mu sync.Mutex
	f.setHook(func(r *http.Request, _ int) int {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		return 0
	})
	pool := f.srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	d, err := iothub.New(iothub.Config{Connection: cs, Endpoint: f.srv.URL, TLS: &tls.Config{RootCAs: pool}, Calls: fast,
		Now: func() time.Time { return *now.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	d.DeleteDevice(ctx, "a")
	d.DeleteDevice(ctx, "b")
	later := start.Add(56 * time.Minute)
	now.Store(&later)
	d.DeleteDevice(ctx, "c")
	if len(seen) != 3 || seen[0] != seen[1] || seen[1] == seen[2] {
		t.Fatalf("tokens: reused %v, renewed %v", seen[0] == seen[1], seen[1] != seen[2])
	}
}

func TestParseConnectionString(t *testing.T) {
	const secret = "c2VjcmV0LWtleS1ieXRlcy1mb3ItdGVzdA=="
	tests := []struct {
		name, in string
		wantErr  string
	}{
		{"ok/full", "HostName=h.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + secret, ""},
		{"ok/key-case-and-trailing-semicolon", "hostname=h.azure-devices.net;sharedaccesskeyname=p;sharedaccesskey=" + secret + ";", ""},
		{"fail/missing-key", "HostName=h;SharedAccessKeyName=p", "required"},
		{"fail/device-connection-string", "HostName=h;DeviceId=d;SharedAccessKey=" + secret, "service connection string"},
		{"fail/key-not-base64", "HostName=h;SharedAccessKeyName=p;SharedAccessKey=not*base64", "not base64"},
		{"fail/garbage-part-does-not-echo-the-secret", "HostName=h;" + secret[:20] + ";SharedAccessKeyName=p", "not key=value"},
		{"fail/unknown-key", "HostName=h;Endpoint=x;SharedAccessKeyName=p;SharedAccessKey=" + secret, "unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := iothub.ParseConnectionString(tt.in)
			if tt.wantErr == "" {
				if err != nil || c.HostName != "h.azure-devices.net" || len(c.Key) == 0 {
					t.Fatalf("Parse = %+v, %v", c, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse error = %v, want %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), secret[:20]) {
				t.Fatalf("error echoes the secret: %v", err)
			}
		})
	}
}
