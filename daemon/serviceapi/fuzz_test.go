package serviceapi_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/serviceapi"
)

// FuzzServiceBodies feeds arbitrary bodies to every route that decodes JSON
// (PUT of both kinds, bulk of both kinds, queries): never a 5xx, never a panic.
func FuzzServiceBodies(f *testing.F) {
	for _, s := range []string{
		enrollmentBody("dev-1", devKey),
		`{"enrollmentGroupId":"g","attestation":{"type":"symmetricKey","symmetricKey":{}},"registrationIdPrefixes":["g-"]}`,
		`{"mode":"create","enrollments":[` + enrollmentBody("dev-2", devKey) + `]}`,
		`{"mode":"delete","enrollmentGroups":[{"enrollmentGroupId":"g"}]}`,
		`{"query":"*"}`,
		`{"registrationId":"x","attestation":{"type":"tpm","tpm":{"endorsementKey":"AA=="}},"initialTwin":{"tags":{"a":[1,{}]}}}`,
		`{"attestation":{"type":"x509","x509":{"signingCertificates":{"primary":{"certificate":"abc"}}}},"allocationPolicy":"custom","customAllocationDefinition":{"webhookUrl":"https://x","apiVersion":"2021-10-01"}}`,
		`[]`, `null`, `{"mode":"update","enrollments":[null]}`,
	} {
		f.Add([]byte(s), uint8(0))
	}
	e := newEnv(f)
	routes := []struct{ method, path string }{
		{"PUT", "/enrollments/dev-1"}, {"PUT", "/enrollmentGroups/g"}, {"POST", "/enrollments"}, {"POST", "/enrollmentGroups/"},
		{"POST", "/enrollments/query"}, {"POST", "/registrations/g/query"},
	}
	tok := ownerTok()
	f.Fuzz(func(t *testing.T, body []byte, route uint8) {
		r := routes[int(route)%len(routes)]
		req := httptest.NewRequest(r.method, r.path, bytes.NewReader(body))
		req.Host = "dps.example"
		req.Header.Set("Authorization", tok)
		req.Header.Set("If-Match", "*")
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s with %q: %d %s", r.method, r.path, body, w.Code, w.Body)
		}
		if w.Code >= 400 && w.Header().Get("x-ms-error-code") == "" {
			t.Fatalf("error without x-ms-error-code: %d %s", w.Code, w.Body)
		}
	})
}

// FuzzContinuationToken: a token that was not issued never decodes, whatever
// its bytes; a real one decodes only for its own query.
func FuzzContinuationToken(f *testing.F) {
	p := serviceapi.NewPaging([]byte("continuation key for the fuzzer, 32+ bytes"))
	now := time.Unix(1_800_000_000, 0)
	real := p.Encode("enrollments/", "dev-0042", now)
	f.Add(real)
	f.Add(real[:len(real)-2])
	f.Add(strings.Replace(real, ".", "..", 1))
	f.Add("eyJ2IjoxLCJxIjoiZW5yb2xsbWVudHMvIiwiYSI6IngiLCJ4Ijo5OTk5OTk5OTk5fQ.AAAA")
	f.Add("")
	f.Add(".")
	f.Fuzz(func(t *testing.T, tok string) {
		after, err := p.Decode(tok, "enrollments/", now)
		if err == nil && tok != real {
			// Base64 has several spellings of the same bytes only in padding
			// bits; anything else means a forgery was accepted.
			if after != "dev-0042" {
				t.Fatalf("token %q decoded to %q", tok, after)
			}
		}
		if _, err := p.Decode(tok, "enrollmentgroups/", now); err == nil {
			t.Fatalf("token %q accepted for another query", tok)
		}
	})
}

func TestPagingRoundTripAndExpiry(t *testing.T) {
	p := serviceapi.NewPaging([]byte("continuation key for the tests, 32+ bytes"))
	now := time.Now()
	tok := p.Encode("q", "after-me", now)
	if a, err := p.Decode(tok, "q", now); err != nil || a != "after-me" {
		t.Fatalf("round trip: %q %v", a, err)
	}
	if _, err := p.Decode(tok, "q", now.Add(2*time.Hour)); err == nil {
		t.Fatal("expired token accepted")
	}
	other := serviceapi.NewPaging([]byte("another key, another daemon......"))
	if _, err := other.Decode(tok, "q", now); err == nil {
		t.Fatal("token of another key accepted")
	}
	if _, err := p.Decode(strings.Repeat("a", serviceapi.MaxContinuationLen+1), "q", now); err == nil {
		t.Fatal("oversized token accepted")
	}
	_ = http.StatusOK
}
