package https_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/endpoint/https"
	"github.com/edgeprov/edgeprov/daemon/registration"
	rt "github.com/edgeprov/edgeprov/daemon/registration/registrationtest"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/daemon/throttle"
)

type env struct {
	f   *rt.Fixture
	srv *httptest.Server
}

func newEnv(t testing.TB) *env {
	f := rt.New(t)
	srv := httptest.NewServer(https.NewHandler(f.Service, 1, nil))
	t.Cleanup(srv.Close)
	return &env{f: f, srv: srv}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) do(t testing.TB, method, path, auth, ctype string, body []byte) resp {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	r, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, r.Header, b}
}

const jsonCT = "application/json; charset=utf-8"

func regPath(regID string) string {
	return "/" + rt.Scope + "/registrations/" + regID + "/register?api-version=2019-03-31"
}

func TestRegisterAndPoll(t *testing.T) {
	e := newEnv(t)
	tok := e.f.GroupToken("grp-http-1")
	r := e.do(t, "PUT", regPath("grp-http-1"), tok, jsonCT, []byte(`{"registrationId":"grp-http-1","payload":{"a":1}}`))
	if r.status != 202 || r.header.Get("retry-after") != "1" || r.header.Get("Content-Type") != jsonCT {
		t.Fatalf("register: %d %v %s", r.status, r.header, r.body)
	}
	var op dpsapi.RegistrationOperationStatus
	if err := json.Unmarshal(r.body, &op); err != nil || op.Status != "assigning" || op.OperationID == "" {
		t.Fatalf("register body %s", r.body)
	}
	// Node polls with a body "{}"; the C SDK URL-encodes every segment and sends none.
	for _, tc := range []struct {
		name, path string
		body       []byte
	}{
		{"node", "/" + rt.Scope + "/registrations/grp-http-1/operations/" + op.OperationID + "?api-version=2019-03-31", []byte("{}")},
		{"c-sdk", "/" + url.PathEscape(rt.Scope) + "/registrations/grp%2Dhttp%2D1/operations/" + strings.ReplaceAll(op.OperationID, ".", "%2E") + "?api-version=2021-06-01", nil},
	} {
		t.Run("ok/poll-"+tc.name, func(t *testing.T) {
			r := e.do(t, "GET", tc.path, tok, jsonCT, tc.body)
			var got dpsapi.RegistrationOperationStatus
			if r.status != 200 || json.Unmarshal(r.body, &got) != nil || got.Status != "assigned" ||
				got.RegistrationState.AssignedHub == "" || got.RegistrationState.DeviceID != "grp-http-1" ||
				string(got.RegistrationState.Payload) != `{"a":1}` {
				t.Fatalf("poll: %d %s", r.status, r.body)
			}
			if r.header.Get("retry-after") != "" {
				t.Errorf("terminal poll carries retry-after")
			}
		})
	}
	t.Run("ok/status-lookup", func(t *testing.T) {
		r := e.do(t, "POST", "/"+rt.Scope+"/registrations/grp-http-1?api-version=2021-06-01", tok, jsonCT, []byte(`{"registrationId":"grp-http-1"}`))
		var got dpsapi.DeviceRegistrationResult
		if r.status != 200 || json.Unmarshal(r.body, &got) != nil || got.Status != "assigned" {
			t.Fatalf("status lookup: %d %s", r.status, r.body)
		}
	})
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	good := e.f.GroupToken("grp-bad")
	op := e.do(t, "PUT", regPath("grp-other"), e.f.GroupToken("grp-other"), jsonCT, nil)
	var other dpsapi.RegistrationOperationStatus
	if err := json.Unmarshal(op.body, &other); err != nil {
		t.Fatal(err)
	}
	expired := sas.Build(sas.DeriveDeviceKey(rt.GroupKey, "grp-bad"), sas.DeviceResource(rt.Scope, "grp-bad"), time.Now().Add(-time.Hour), "registration")
	tests := []struct {
		name, method, path, auth, ctype string
		body                            []byte
		wantStatus, wantCode            int
	}{
		{"fail/malformed-json", "PUT", regPath("grp-bad"), good, jsonCT, []byte(`{"registrationId":`), 400, dpsapi.CodeInvalidBody},
		{"fail/wrong-field-type", "PUT", regPath("grp-bad"), good, jsonCT, []byte(`{"registrationId":7}`), 400, dpsapi.CodeInvalidBody},
		{"fail/body-over-96kb", "PUT", regPath("grp-bad"), good, jsonCT, []byte(`{"payload":"` + strings.Repeat("x", dpsapi.MaxMessageSize) + `"}`), 413, dpsapi.CodeTooLarge},
		{"fail/invalid-registration-id", "PUT", regPath("grp-bad!"), good, jsonCT, nil, 400, dpsapi.CodeInvalidRegistration},
		{"fail/registration-id-too-long", "PUT", regPath(strings.Repeat("a", 129)), good, jsonCT, nil, 400, dpsapi.CodeInvalidRegistration},
		{"fail/body-id-differs", "PUT", regPath("grp-bad"), good, jsonCT, []byte(`{"registrationId":"grp-else"}`), 400, dpsapi.CodeIDMismatch},
		{"fail/unknown-scope", "PUT", "/0ne00000BAD/registrations/grp-bad/register", good, jsonCT, nil, 401, dpsapi.CodeUnauthorized},
		{"fail/malformed-scope", "PUT", "/scope/registrations/grp-bad/register", good, jsonCT, nil, 400, dpsapi.CodeBadRequest},
		{"fail/missing-scope", "PUT", "/registrations/grp-bad/register", good, jsonCT, nil, 404, dpsapi.CodeNotFound},
		{"fail/expired-sas", "PUT", regPath("grp-bad"), expired, jsonCT, nil, 401, dpsapi.CodeUnauthorized},
		{"fail/sas-for-another-device", "PUT", regPath("grp-bad"), e.f.GroupToken("grp-else"), jsonCT, nil, 401, dpsapi.CodeUnauthorized},
		{"fail/malformed-sas", "PUT", regPath("grp-bad"), "SharedAccessSignature sr=&&", jsonCT, nil, 401, dpsapi.CodeUnauthorized},
		{"fail/unknown-device", "PUT", regPath("nobody"), e.f.Token("nobody", rt.OtherKey), jsonCT, nil, 401, dpsapi.CodeUnauthorized},
		{"fail/bad-api-version", "PUT", "/" + rt.Scope + "/registrations/grp-bad/register?api-version=yesterday", good, jsonCT, nil, 400, dpsapi.CodeInvalidAPIVersion},
		{"fail/unknown-operation", "GET", "/" + rt.Scope + "/registrations/grp-bad/operations/4.0.nope", good, "", nil, 404, dpsapi.CodeNotFound},
		{"fail/operation-of-another-device", "GET", "/" + rt.Scope + "/registrations/grp-bad/operations/" + other.OperationID, good, "", nil, 404, dpsapi.CodeNotFound},
		{"fail/wrong-method", "GET", regPath("grp-bad"), good, "", nil, 405, dpsapi.CodeMethodNotAllowed},
		{"fail/not-json", "PUT", regPath("grp-bad"), good, "text/plain", []byte(`{}`), 415, dpsapi.CodeUnsupportedMedia},
		{"fail/unknown-path", "PUT", "/" + rt.Scope + "/registrations/grp-bad/register/more", good, jsonCT, nil, 404, dpsapi.CodeNotFound},
		{"fail/escaped-slash-in-id", "PUT", regPath("grp%2Fbad"), good, jsonCT, nil, 400, dpsapi.CodeInvalidRegistration},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, tt.method, tt.path, tt.auth, tt.ctype, tt.body)
			var body dpsapi.ErrorDetails
			if err := json.Unmarshal(r.body, &body); err != nil {
				t.Fatalf("%d, body not JSON: %s", r.status, r.body)
			}
			if r.status != tt.wantStatus || body.ErrorCode != tt.wantCode || body.Message == "" || body.TrackingID == "" {
				t.Fatalf("got %d %s, want %d with code %d", r.status, r.body, tt.wantStatus, tt.wantCode)
			}
			if r.header.Get("Content-Type") != jsonCT || r.header.Get("x-ms-request-id") != body.TrackingID {
				t.Errorf("headers %v", r.header)
			}
			assertOnlyOneRecord(t, e.f)
		})
	}
}

// The bad-input table started with exactly one registration (grp-other).
func assertOnlyOneRecord(t *testing.T, f *rt.Fixture) {
	t.Helper()
	err := f.Store.View(t.Context(), func(tx store.Tx) error {
		recs, err := tx.Records(rt.Scope, "", 0)
		if err != nil || len(recs) != 1 {
			return fmt.Errorf("records: %d, %v", len(recs), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// An unknown device and a known device with a bad signature get the same answer.
func TestUnknownAndBadSignatureLookAlike(t *testing.T) {
	e := newEnv(t)
	a := e.do(t, "PUT", regPath("nobody-here"), e.f.Token("nobody-here", rt.OtherKey), jsonCT, nil)
	b := e.do(t, "PUT", regPath("dev-individual"), e.f.Token("dev-individual", rt.OtherKey), jsonCT, nil)
	strip := func(r resp) string {
		var m map[string]any
		json.Unmarshal(r.body, &m)
		delete(m, "trackingId")
		delete(m, "timestampUtc")
		out, _ := json.Marshal(m)
		return fmt.Sprint(r.status, string(out))
	}
	if strip(a) != strip(b) || a.status != 401 {
		t.Fatalf("unknown device: %s\nbad signature: %s", strip(a), strip(b))
	}
}

func FuzzRegisterBody(f *testing.F) {
	e := newEnv(f)
	tok := e.f.GroupToken("grp-fuzz")
	f.Add([]byte(`{"registrationId":"grp-fuzz","payload":{"a":[1,2,{"b":null}]}}`))
	f.Add([]byte(`{"payload":null}`))
	f.Add([]byte(`{"tpm":{"endorsementKey":"AAAA","storageRootKey":""}}`))
	f.Add([]byte(`{"registrationId":"GRP-FUZZ","csr":"MIIB"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte("\x00\xff"))
	f.Fuzz(func(t *testing.T, body []byte) {
		r := e.do(t, "PUT", regPath("grp-fuzz"), tok, jsonCT, body)
		if r.status >= 500 {
			t.Fatalf("%d for body %q: %s", r.status, body, r.body)
		}
		if !json.Valid(r.body) {
			t.Fatalf("response is not JSON: %s", r.body)
		}
	})
}

func BenchmarkHTTPRegister(b *testing.B) {
	e := newEnv(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		id := fmt.Sprintf("grp-b%d", i)
		r := e.do(b, "PUT", regPath(id), e.f.GroupToken(id), jsonCT, []byte(`{}`))
		if r.status != 202 {
			b.Fatal(r.status, string(r.body))
		}
	}
}

// A device polling faster than the limit gets 429 with retry-after; another
// device is not slowed.
func TestPollThrottling(t *testing.T) {
	f := rt.New(t)
	f.Reconfigure(func(c *registration.Config) { c.PollLimit = throttle.NewWindow(5, 10*time.Second, 1000) })
	srv := httptest.NewServer(https.NewHandler(f.Service, 1, nil))
	t.Cleanup(srv.Close)
	e := &env{f: f, srv: srv}
	poll := func(id string) resp {
		tok := f.GroupToken(id)
		var op dpsapi.RegistrationOperationStatus
		r := e.do(t, "PUT", regPath(id), tok, jsonCT, nil)
		json.Unmarshal(r.body, &op)
		return e.do(t, "GET", "/"+rt.Scope+"/registrations/"+id+"/operations/"+op.OperationID, tok, "", nil)
	}
	for i := range 5 {
		if r := poll("grp-fast"); r.status != 200 {
			t.Fatalf("poll %d: %d %s", i, r.status, r.body)
		}
	}
	r := poll("grp-fast")
	var body dpsapi.ErrorDetails
	json.Unmarshal(r.body, &body)
	if r.status != 429 || body.ErrorCode != dpsapi.CodeThrottled || r.header.Get("retry-after") == "" {
		t.Fatalf("6th poll in 10 s: %d %v %s", r.status, r.header, r.body)
	}
	if r := poll("grp-calm"); r.status != 200 {
		t.Fatalf("another device was slowed: %d %s", r.status, r.body)
	}
}
