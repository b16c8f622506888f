package allocation_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/allocation"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/testenv/golden"
)

const functionKey = "function-key-not-for-logs"

func boolp(b bool) *bool { return &b }

var created = time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)

func symGroup() *enrollment.Group {
	return &enrollment.Group{EnrollmentGroupID: "line-7-sensors", RegistrationIDPrefixes: []string{"line7-"}, Common: enrollment.Common{
		Attestation:        enrollment.Attestation{Type: enrollment.AttestationSymmetricKey, SymmetricKey: &enrollment.SymmetricKeyAttestation{PrimaryKey: "c2VjcmV0IGdyb3VwIGtleSBub3QgZm9yIHdlYmhvb2tz"}},
		Capabilities:       &enrollment.Capabilities{IoTEdge: false},
		ETag:               `"4410a2bb-0000-0100-0000-66334d110000"`,
		ProvisioningStatus: enrollment.StatusEnabled,
		ReprovisionPolicy:  &enrollment.ReprovisionPolicy{UpdateHubAssignment: boolp(true), MigrateDeviceData: boolp(true)},
		CreatedDateTimeUTC: &created, LastUpdatedDateTimeUTC: &created,
		AllocationPolicy: enrollment.AllocationCustom,
		IoTHubs:          []string{"hub-west.example.internal", "hub-east.example.internal"},
		CustomAllocationDefinition: &enrollment.CustomAllocationDefinition{
			WebhookURL: "https://alloc.example.internal/api/allocate?code=" + functionKey, APIVersion: "2021-10-01"},
	}}
}

func westEast() []*hub.Linked {
	return []*hub.Linked{
		{Name: "west", HostName: "hub-west.example.internal", Weight: 1, ApplyAllocationPolicy: true},
		{Name: "east", HostName: "hub-east.example.internal", Weight: 1, ApplyAllocationPolicy: true},
	}
}

// TestBuildRequest compares the AllocationRequest with golden files: the
// shape of protocol.md §7, the enrollment without its keys.
func TestBuildRequest(t *testing.T) {
	leaf := testCert(t, "cam-0007")
	tpmEnrollment := &enrollment.Individual{RegistrationID: "tpm-0001", DeviceID: "tpm-device", Common: enrollment.Common{
		Attestation:      enrollment.Attestation{Type: enrollment.AttestationTPM, TPM: &enrollment.TPMAttestation{EndorsementKey: "AToAAQALAAMAsgAg", StorageRootKey: "ARoAAQAL"}},
		AllocationPolicy: enrollment.AllocationCustom, CreatedDateTimeUTC: &created,
		CustomAllocationDefinition: &enrollment.CustomAllocationDefinition{WebhookURL: "https://a.example/x", APIVersion: "2021-10-01"},
	}}
	tests := []struct {
		name string
		req  allocation.Request
	}{
		{"group-symmetric-key-initial", allocation.Request{RegistrationID: "line7-0042", Candidates: westEast(), Group: symGroup(),
			Device: allocation.DeviceContext{RegistrationID: "Line7-0042", Attestation: enrollment.AttestationSymmetricKey, Payload: json.RawMessage(`{"siteCode":"W7"}`)}}},
		{"group-symmetric-key-reprovision", allocation.Request{RegistrationID: "line7-0042", Candidates: westEast(), Group: symGroup(),
			Device: allocation.DeviceContext{RegistrationID: "line7-0042", Attestation: enrollment.AttestationSymmetricKey,
				CurrentHub: "hub-east.example.internal", CurrentDeviceID: "line7-0042", Payload: json.RawMessage(`null`)}}},
		{"individual-tpm", allocation.Request{RegistrationID: "tpm-0001", Candidates: westEast()[:1], Individual: tpmEnrollment,
			Device: allocation.DeviceContext{RegistrationID: "tpm-0001", Attestation: enrollment.AttestationTPM,
				TPM: &dpsapi.TPMAttestation{EndorsementKey: "AToAAQALAAMAsgAg", StorageRootKey: "ARoAAQAL"}}}},
		{"individual-x509", allocation.Request{RegistrationID: "cam-0007", Candidates: westEast(), Individual: &enrollment.Individual{
			RegistrationID: "cam-0007", Common: enrollment.Common{Attestation: enrollment.Attestation{Type: enrollment.AttestationX509,
				X509: &enrollment.X509Attestation{CAReferences: &enrollment.X509CAReferences{Primary: "plant-ca"}}}, AllocationPolicy: enrollment.AllocationCustom}},
			Device: allocation.DeviceContext{RegistrationID: "cam-0007", Attestation: enrollment.AttestationX509, X509: leaf}}},
	}
	for _, tt := range tests {
		t.Run("ok/"+tt.name, func(t *testing.T) {
			r, err := allocation.BuildRequest(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.MarshalIndent(r, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			if tt.name == "individual-x509" {
				// The certificate is made per run: keep its stable parts.
				var v map[string]any
				json.Unmarshal(got, &v)
				info := v["deviceRuntimeContext"].(map[string]any)["x509"].(map[string]any)["clientCertificates"].(map[string]any)["primary"].(map[string]any)["info"].(map[string]any)
				sum := sha1Hex(leaf.Raw)
				if info["sha1Thumbprint"] != sum || info["subjectName"] != "CN=cam-0007" || info["issuerName"] != "CN=test device CA" || info["version"] != 3.0 {
					t.Fatalf("x509 info = %v", info)
				}
				for _, k := range []string{"sha1Thumbprint", "sha256Thumbprint", "serialNumber", "notBeforeUtc", "notAfterUtc"} {
					info[k] = "…"
				}
				got, _ = json.MarshalIndent(v, "", "  ")
				got = append(got, '\n')
			}
			if bytes.Contains(got, []byte("c2VjcmV0")) || bytes.Contains(got, []byte(functionKey)) {
				t.Fatal("the request carries the enrollment's key or the function key")
			}
			golden.Check(t, filepath.Join("testdata", "webhook", tt.name+".json"), got)
		})
	}
	t.Run("fail/no-enrollment", func(t *testing.T) {
		if _, err := allocation.BuildRequest(allocation.Request{RegistrationID: "x"}); err == nil {
			t.Fatal("built a request without an enrollment")
		}
	})
}

func testCert(t *testing.T, cn string) *x509.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test device CA"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: created, NotAfter: created.Add(365 * 24 * time.Hour), KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x7f3a), Subject: pkix.Name{CommonName: cn}, NotBefore: created, NotAfter: created.Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// allocServer is an allocation function behind HTTPS: what it answers depends
// on the path.
type allocServer struct {
	srv      *httptest.Server
	release  chan struct{}
	inflight atomic.Int32
	flaky    atomic.Int32
	mu       sync.Mutex
	last     allocation.AllocationRequest
	lastKey  string
}

func newAllocServer(t *testing.T) *allocServer {
	a := &allocServer{release: make(chan struct{})}
	a.srv = httptest.NewTLSServer(http.HandlerFunc(a.serve))
	t.Cleanup(func() {
		select {
		case <-a.release:
		default:
			close(a.release)
		}
		a.srv.Close()
	})
	return a
}

func (a *allocServer) serve(w http.ResponseWriter, r *http.Request) {
	var req allocation.AllocationRequest
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &req); err != nil || r.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.last, a.lastKey = req, r.URL.Query().Get("code")
	a.mu.Unlock()
	hubName := req.LinkedHubs[len(req.LinkedHubs)-1]
	ok := func() {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"iotHubHostName":%q,"initialTwin":{"tags":{"line":"7"},"properties":{"desired":{"interval":10}}},"payload":{"gateway":"gw-7","echo":%s}}`,
			hubName, orNull(req.DeviceRuntimeContext.Payload))
	}
	switch r.URL.Path {
	case "/ok":
		ok()
	case "/hostname-spelling":
		fmt.Fprintf(w, `{"iotHubHostname":%q}`, hubName)
	case "/wrong-hub":
		fmt.Fprint(w, `{"iotHubHostName":"hub-elsewhere.example.internal"}`)
	case "/garbage":
		fmt.Fprint(w, `<html>Function host is not running.</html>`)
	case "/array":
		fmt.Fprint(w, `[]`)
	case "/no-hub":
		fmt.Fprint(w, `{"payload":{"a":1}}`)
	case "/bad-twin":
		fmt.Fprintf(w, `{"iotHubHostName":%q,"initialTwin":{"tags":"not an object"}}`, hubName)
	case "/fail":
		http.Error(w, "boom", http.StatusInternalServerError)
	case "/refuse":
		http.Error(w, "forbidden", http.StatusForbidden)
	case "/flaky":
		if a.flaky.Add(1) == 1 {
			http.Error(w, "warming up", http.StatusServiceUnavailable)
			return
		}
		ok()
	case "/slow":
		a.inflight.Add(1)
		defer a.inflight.Add(-1)
		select {
		case <-a.release:
			ok()
		case <-r.Context().Done():
			// A function that never answers: no response at all, not
			// the empty 200 a handler that returns would send.
			panic(http.ErrAbortHandler)
		}
	case "/redirect":
		http.Redirect(w, r, "/ok", http.StatusFound)
	case "/big":
		fmt.Fprintf(w, `{"iotHubHostName":%q,"payload":"%s"}`, hubName, strings.Repeat("x", allocation.MaxWebhookResponse))
	default:
		http.NotFound(w, r)
	}
}

func orNull(b json.RawMessage) string {
	if len(b) == 0 {
		return "null"
	}
	return string(b)
}

func (a *allocServer) webhook(t *testing.T, timeout time.Duration, retries int) *allocation.Webhook {
	pool := x509.NewCertPool()
	pool.AddCert(a.srv.Certificate())
	w := allocation.NewWebhook(allocation.WebhookConfig{Timeout: timeout, Retries: retries, Backoff: time.Millisecond, RootCAs: pool})
	t.Cleanup(w.Close)
	return w
}

func (a *allocServer) request(path string) allocation.Request {
	g := symGroup()
	g.CustomAllocationDefinition.WebhookURL = a.srv.URL + path + "?code=" + functionKey
	return allocation.Request{RegistrationID: "line7-0042", Candidates: westEast(), Group: g,
		Device: allocation.DeviceContext{RegistrationID: "line7-0042", Attestation: enrollment.AttestationSymmetricKey, Payload: json.RawMessage(`{"siteCode":"W7"}`)}}
}

func TestWebhook(t *testing.T) {
	a := newAllocServer(t)
	w := a.webhook(t, 300*time.Millisecond, 1)
	tests := []struct {
		path    string
		wantErr error
		wantMsg string
	}{
		{"/ok", nil, ""},
		{"/hostname-spelling", nil, ""},
		{"/flaky", nil, ""},
		{"/wrong-hub", allocation.ErrWebhookResponse, `chose hub "hub-elsewhere.example.internal", which is not one of the linked hubs it was offered (hub-west.example.internal, hub-east.example.internal)`},
		{"/garbage", allocation.ErrWebhookResponse, "not a JSON object"},
		{"/array", allocation.ErrWebhookResponse, "not a JSON object"},
		{"/no-hub", allocation.ErrWebhookResponse, "names no iotHubHostName"},
		{"/bad-twin", allocation.ErrWebhookResponse, "not an AllocationResponse"},
		{"/refuse", allocation.ErrWebhookResponse, "answered HTTP 403"},
		{"/redirect", allocation.ErrWebhookResponse, "answered HTTP 302"},
		{"/big", allocation.ErrWebhookResponse, "larger than"},
		{"/fail", allocation.ErrWebhookUnavailable, "after 2 attempts: answered HTTP 500"},
		{"/slow", allocation.ErrWebhookUnavailable, "after 2 attempts: no answer within 300ms"},
		{"/nowhere", allocation.ErrWebhookResponse, "answered HTTP 404"},
	}
	for _, tt := range tests {
		name := "ok" + tt.path
		if tt.wantErr != nil {
			name = "fail" + tt.path
		}
		t.Run(name, func(t *testing.T) {
			d, err := w.Decide(context.Background(), a.request(tt.path))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if d.Hub.Name != "east" {
					t.Fatalf("hub %s, want east (the webhook's choice)", d.Hub.Name)
				}
				if tt.path == "/ok" {
					if d.InitialTwin == nil || d.InitialTwin.Tags["line"] != "7" || d.InitialTwin.Properties.Desired["interval"] != 10.0 ||
						string(d.Payload) != `{"gateway":"gw-7","echo":{"siteCode":"W7"}}` {
						t.Fatalf("decision %+v, payload %s", d, d.Payload)
					}
					if a.lastKey != functionKey {
						t.Fatalf("function key %q did not reach the webhook", a.lastKey)
					}
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Decide error = %v\nwant %v containing %q", err, tt.wantErr, tt.wantMsg)
			}
			if strings.Contains(err.Error(), functionKey) {
				t.Fatalf("the error shows the function key: %v", err)
			}
		})
	}
	t.Run("fail/untrusted-certificate-is-not-retried", func(t *testing.T) {
		w := allocation.NewWebhook(allocation.WebhookConfig{Timeout: time.Second, Retries: 3})
		_, err := w.Decide(context.Background(), a.request("/ok"))
		if !errors.Is(err, allocation.ErrWebhookUnavailable) || !strings.Contains(err.Error(), "not trusted") || strings.Contains(err.Error(), "attempts") {
			t.Fatalf("Decide = %v", err)
		}
	})
	t.Run("fail/not-https", func(t *testing.T) {
		r := a.request("/ok")
		r.Group.CustomAllocationDefinition.WebhookURL = strings.Replace(a.srv.URL, "https:", "http:", 1) + "/ok"
		if _, err := w.Decide(context.Background(), r); !errors.Is(err, allocation.ErrWebhookResponse) {
			t.Fatalf("Decide = %v", err)
		}
	})
	t.Run("fail/no-definition", func(t *testing.T) {
		r := a.request("/ok")
		r.Group.CustomAllocationDefinition = nil
		if _, err := w.Decide(context.Background(), r); !errors.Is(err, allocation.ErrWebhookResponse) {
			t.Fatalf("Decide = %v", err)
		}
	})
	t.Run("ok/allocate-returns-the-hub", func(t *testing.T) {
		h, err := w.Allocate(context.Background(), a.request("/ok"))
		if err != nil || h.Name != "east" {
			t.Fatalf("Allocate = %v, %v", h, err)
		}
	})
}

// TestWebhookDoesNotBlockOthers: while one device waits for a webhook that
// does not answer, others are allocated.
func TestWebhookDoesNotBlockOthers(t *testing.T) {
	a := newAllocServer(t)
	w := a.webhook(t, 30*time.Second, 0)
	slow := make(chan error, 1)
	go func() {
		_, err := w.Decide(context.Background(), a.request("/slow"))
		slow <- err
	}()
	for a.inflight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := w.Decide(context.Background(), a.request("/ok"))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-slow:
		t.Fatalf("the slow webhook answered before it was released: %v", err)
	default:
	}
	close(a.release)
	if err := <-slow; err != nil {
		t.Fatalf("the slow webhook, once released: %v", err)
	}
}

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name, body string
		wantHub    string
	}{
		{"ok/example", `{"iotHubHostName":"h","initialTwin":{"tags":{"a":1},"properties":{"desired":{"b":2}}},"payload":{"c":3}}`, "h"},
		{"ok/lower-case-n", `{"iotHubHostname":"h"}`, "h"},
		{"ok/null-twin-and-payload", `{"iotHubHostName":"h","initialTwin":null,"payload":null}`, "h"},
		{"ok/extra-members-ignored", `{"iotHubHostName":"h","x":[1,2]}`, "h"},
		{"fail/empty", ``, ""},
		{"fail/null", `null`, ""},
		{"fail/string", `"h"`, ""},
		{"fail/hub-not-a-string", `{"iotHubHostName":7}`, ""},
		{"fail/empty-hub", `{"iotHubHostName":""}`, ""},
		{"fail/twin-tags-not-object", `{"iotHubHostName":"h","initialTwin":{"tags":[]}}`, ""},
		{"fail/trailing-garbage", `{"iotHubHostName":"h"} x`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := allocation.ParseResponse([]byte(tt.body))
			if tt.wantHub == "" {
				if !errors.Is(err, allocation.ErrWebhookResponse) {
					t.Fatalf("ParseResponse = %+v, %v; want ErrWebhookResponse", r, err)
				}
				return
			}
			if err != nil || r.IoTHubHostName != tt.wantHub {
				t.Fatalf("ParseResponse = %+v, %v", r, err)
			}
			if tt.name == "ok/null-twin-and-payload" && (r.InitialTwin != nil || r.Payload != nil) {
				t.Fatalf("nulls kept: %+v", r)
			}
		})
	}
}

// FuzzParseResponse: a webhook's answer is untrusted bytes.
func FuzzParseResponse(f *testing.F) {
	for _, s := range []string{`{"iotHubHostName":"h"}`, `{"iotHubHostname":"h","initialTwin":{"tags":{}}}`, `[]`, `{"payload":`, "\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := allocation.ParseResponse(b)
		if err == nil && (r == nil || r.IoTHubHostName == "") {
			t.Fatalf("accepted %q without a hub", b)
		}
		if err != nil && !errors.Is(err, allocation.ErrWebhookResponse) {
			t.Fatalf("error %v is not ErrWebhookResponse", err)
		}
	})
}

func BenchmarkWebhook(b *testing.B) {
	a := &allocServer{release: make(chan struct{})}
	a.srv = httptest.NewTLSServer(http.HandlerFunc(a.serve))
	defer a.srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(a.srv.Certificate())
	w := allocation.NewWebhook(allocation.WebhookConfig{Timeout: 5 * time.Second, RootCAs: pool})
	defer w.Close()
	req := a.request("/ok")
	b.Run("round-trip", func(b *testing.B) {
		for b.Loop() {
			if _, err := w.Decide(context.Background(), req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("round-trip-parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := w.Decide(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

func sha1Hex(b []byte) string {
	s := sha1.Sum(b)
	return strings.ToUpper(hex.EncodeToString(s[:]))
}
