package serviceapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/catalog"
	"github.com/edgeprov/edgeprov/daemon/directory"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/secrets"
	"github.com/edgeprov/edgeprov/daemon/serviceapi"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/daemon/store/bolt"
)

const scope = "0ne00C0FFEE"

var (
	b64       = base64.StdEncoding.EncodeToString
	ownerKey  = []byte("owner policy key for the tests..")
	owner2    = []byte("owner secondary key for tests...")
	readerKey = []byte("reader policy key for the tests.")
	devKey    = b64([]byte("an enrollment key, thirty-two by"))
)

type env struct {
	h   *serviceapi.Handler
	st  store.Store
	dir *directory.Directory
	url string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "edgeprov.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f, err := catalog.Parse(filepath.Join(dir, "enrollments.yaml"), []byte(`version: 1
enrollments:
  - registrationId: cat-dev
    attestation: {type: symmetricKey, symmetricKey: {primaryKey: `+devKey+`}}
`))
	if err != nil {
		t.Fatal(err)
	}
	box, err := secrets.New([]byte("service API test data key, 32 b."))
	if err != nil {
		t.Fatal(err)
	}
	d, err := directory.New(context.Background(), directory.Config{Scope: scope, Catalog: catalog.NewSource(scope, f), Store: st, Sealer: box})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	st.Update(context.Background(), func(tx store.Tx) error {
		for i, g := range []string{"grp", "grp", "other"} {
			id := fmt.Sprintf("rec-%d", i)
			if err := tx.PutRecord(&store.Record{Scope: scope, RegistrationID: id, DeviceID: id, AssignedHub: "hub.test", Status: "assigned",
				EnrollmentGroupID: g, CreatedAt: now, UpdatedAt: now, ETag: "ZXRhZy0" + strconv.Itoa(i)}); err != nil {
				return err
			}
		}
		return tx.PutIdentity(&store.Identity{Hub: "hub.test", DeviceID: "rec-0", AuthType: "sas", Status: "enabled", SealedKey: []byte("sealed device key")})
	})
	h := serviceapi.New(serviceapi.Config{Directory: d, Store: st, Hubs: []string{"hub.test"},
		Policies: []*serviceapi.Policy{
			{Name: "provisioningserviceowner", Keys: [][]byte{ownerKey, owner2}, Rights: serviceapi.AllRights},
			{Name: "reader", Keys: [][]byte{readerKey}, Rights: []serviceapi.Right{serviceapi.EnrollmentRead, serviceapi.RegistrationStatusRead}},
		},
		HostNames: []string{"dps.example"}, ContinuationKey: []byte("continuation key for the tests, 32+ bytes"),
		MaxBodyBytes: 64 << 10, MaxBulkItems: 50,
		Status: func(context.Context) any { return map[string]string{"ok": "yes"} },
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{h: h, st: st, dir: d, url: srv.URL}
}

func token(key []byte, sr, policy string, exp time.Time) string {
	return sas.Build(key, sr, exp, policy)
}

var ownerTok = func() string {
	return token(ownerKey, "dps.example", "provisioningserviceowner", time.Now().Add(time.Hour))
}

type req struct {
	method, path, body string
	auth               string
	hdr                map[string]string
}

func (e *env) do(t testing.TB, r req) (*http.Response, []byte) {
	t.Helper()
	hr, err := http.NewRequest(r.method, e.url+r.path, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if r.auth == "" {
		r.auth = ownerTok()
	}
	if r.auth != "none" {
		hr.Header.Set("Authorization", r.auth)
	}
	if r.body != "" {
		hr.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	for k, v := range r.hdr {
		hr.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

// snapshot is everything the API can write.
func (e *env) snapshot(t testing.TB) string {
	var b bytes.Buffer
	e.st.View(context.Background(), func(tx store.Tx) error {
		for _, k := range []store.EnrollmentKind{store.KindIndividual, store.KindGroup} {
			es, _ := tx.Enrollments(scope, k, "", 0)
			for _, x := range es {
				fmt.Fprintf(&b, "%s %s %s %s\n", k, x.ID, x.ETag, x.Data)
			}
		}
		rs, _ := tx.Records(scope, "", 0)
		for _, r := range rs {
			fmt.Fprintf(&b, "record %s %s\n", r.RegistrationID, r.ETag)
		}
		return nil
	})
	return b.String()
}

func enrollmentBody(id, key string) string {
	return `{"registrationId":"` + id + `","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"` + key + `"}}}`
}

func TestBadInputWritesNothing(t *testing.T) {
	e := newEnv(t)
	resp, body := e.do(t, req{method: "PUT", path: "/enrollments/dev-1", body: enrollmentBody("dev-1", devKey)})
	if resp.StatusCode != 200 {
		t.Fatalf("setup: %d %s", resp.StatusCode, body)
	}
	now := time.Now()
	// A continuation token of a real query, to tamper with.
	resp, _ = e.do(t, req{method: "POST", path: "/registrations/grp/query", hdr: map[string]string{"x-ms-max-item-count": "1"}})
	cont := resp.Header.Get("x-ms-continuation")
	if cont == "" {
		t.Fatal("no continuation token on a first page")
	}
	tampered := []byte(cont)
	tampered[3] ^= 1
	var items []string
	for i := range 51 {
		items = append(items, enrollmentBody(fmt.Sprintf("many-%d", i), devKey))
	}
	tooMany := `{"mode":"create","enrollments":[` + strings.Join(items, ",") + `]}`
	huge := `{"mode":"create","enrollments":[` + strings.Repeat(" ", 70<<10) + `]}`

	tests := []struct {
		name   string
		r      req
		status int
		code   int
		msg    string
	}{
		{"fail/malformed-json", req{method: "PUT", path: "/enrollments/dev-2", body: `{"registrationId":`}, 400, 400004, "truncated"},
		{"fail/wrong-field-type", req{method: "PUT", path: "/enrollments/dev-2", body: `{"attestation": 5}`}, 400, 400004, "attestation"},
		{"fail/trailing-data", req{method: "PUT", path: "/enrollments/dev-2", body: enrollmentBody("dev-2", devKey) + `{}`}, 400, 400004, "more than one"},
		{"fail/empty-body", req{method: "PUT", path: "/enrollments/dev-2"}, 400, 400004, "required"},
		{"fail/id-mismatch", req{method: "PUT", path: "/enrollments/dev-2", body: enrollmentBody("dev-3", devKey)}, 400, 400005, "differs"},
		{"fail/invalid-id", req{method: "PUT", path: "/enrollments/bad%21id", body: `{"attestation":{"type":"symmetricKey"}}`}, 400, 400002, "registration ID"},
		{"fail/invalid-key", req{method: "PUT", path: "/enrollments/dev-2", body: enrollmentBody("dev-2", "bm9wZQ==")}, 400, 400004, "primaryKey"},
		{"fail/unknown-attestation", req{method: "PUT", path: "/enrollments/dev-2", body: `{"attestation":{"type":"none"}}`}, 400, 400004, "attestation.type"},
		{"fail/content-type", req{method: "PUT", path: "/enrollments/dev-2", body: enrollmentBody("dev-2", devKey), hdr: map[string]string{"Content-Type": "text/plain"}}, 415, 415001, "application/json"},
		{"fail/exists-without-etag", req{method: "PUT", path: "/enrollments/dev-1", body: enrollmentBody("dev-1", devKey)}, 409, 409001, "already exists"},
		{"fail/wrong-etag", req{method: "PUT", path: "/enrollments/dev-1", body: enrollmentBody("dev-1", devKey), hdr: map[string]string{"If-Match": `"wrong"`}}, 412, 412001, "etag"},
		{"fail/delete-wrong-etag", req{method: "DELETE", path: "/enrollments/dev-1", hdr: map[string]string{"If-Match": `"wrong"`}}, 412, 412001, "etag"},
		{"fail/catalog-entry", req{method: "PUT", path: "/enrollments/cat-dev", body: enrollmentBody("cat-dev", devKey), hdr: map[string]string{"If-Match": "*"}}, 409, 409002, "enrollments.yaml"},
		{"fail/catalog-entry-delete", req{method: "DELETE", path: "/enrollments/CAT-DEV"}, 409, 409002, "catalog file"},
		{"fail/no-authorization", req{method: "GET", path: "/enrollments/dev-1", auth: "none"}, 401, 401002, "Unauthorized"},
		{"fail/unknown-policy", req{method: "GET", path: "/enrollments/dev-1", auth: token(ownerKey, "dps.example", "nobody", now.Add(time.Hour))}, 401, 401002, "Unauthorized"},
		{"fail/bad-signature", req{method: "GET", path: "/enrollments/dev-1", auth: token(readerKey, "dps.example", "provisioningserviceowner", now.Add(time.Hour))}, 401, 401002, "Unauthorized"},
		{"fail/expired", req{method: "GET", path: "/enrollments/dev-1", auth: token(ownerKey, "dps.example", "provisioningserviceowner", now.Add(-10*time.Minute))}, 401, 401002, "Unauthorized"},
		{"fail/other-host", req{method: "GET", path: "/enrollments/dev-1", auth: token(ownerKey, "evil.example", "provisioningserviceowner", now.Add(time.Hour))}, 401, 401002, "Unauthorized"},
		{"fail/other-resource", req{method: "DELETE", path: "/enrollments/dev-1", auth: token(ownerKey, "dps.example/registrations", "provisioningserviceowner", now.Add(time.Hour))}, 401, 401002, "Unauthorized"},
		{"fail/not-a-sas", req{method: "GET", path: "/enrollments/dev-1", auth: "Bearer abc"}, 401, 401002, "Unauthorized"},
		{"fail/missing-right-write", req{method: "PUT", path: "/enrollments/dev-2", body: enrollmentBody("dev-2", devKey), auth: token(readerKey, "dps.example", "reader", now.Add(time.Hour))}, 403, 403001, "EnrollmentWrite"},
		{"fail/missing-right-delete-registration", req{method: "DELETE", path: "/registrations/rec-0", auth: token(readerKey, "dps.example", "reader", now.Add(time.Hour))}, 403, 403001, "RegistrationStatusWrite"},
		{"fail/missing-right-status", req{method: "GET", path: "/edgeprov/status", auth: token(readerKey, "dps.example", "reader", now.Add(time.Hour))}, 403, 403001, "ServiceConfig"},
		{"fail/bulk-oversized-body", req{method: "POST", path: "/enrollments", body: huge}, 413, 413001, "limit"},
		{"fail/bulk-too-many-items", req{method: "POST", path: "/enrollments/", body: tooMany}, 413, 413001, "limit is 50"},
		{"fail/bulk-unknown-mode", req{method: "POST", path: "/enrollments", body: `{"mode":"upsert","enrollments":[` + enrollmentBody("dev-5", devKey) + `]}`}, 400, 400004, "mode"},
		{"fail/bulk-malformed", req{method: "POST", path: "/enrollments", body: `{"mode":"create","enrollments":[{]}`}, 400, 400004, "malformed"},
		{"fail/bulk-not-a-list", req{method: "POST", path: "/enrollments", body: `{"mode":"create","enrollments":{}}`}, 400, 400004, "enrollments"},
		{"fail/bulk-empty", req{method: "POST", path: "/enrollments", body: `{"mode":"create","enrollments":[]}`}, 400, 400004, "no items"},
		{"fail/tampered-continuation", req{method: "POST", path: "/registrations/grp/query", hdr: map[string]string{"x-ms-continuation": string(tampered)}}, 400, 400006, "continuation"},
		{"fail/continuation-of-another-query", req{method: "POST", path: "/registrations/other/query", hdr: map[string]string{"x-ms-continuation": cont}}, 400, 400006, "another query"},
		{"fail/garbage-continuation", req{method: "POST", path: "/enrollments/query", hdr: map[string]string{"x-ms-continuation": "abc"}}, 400, 400006, "continuation"},
		{"fail/unsupported-query", req{method: "POST", path: "/enrollments/query", body: `{"query":"SELECT * FROM enrollments WHERE x = 1"}`}, 400, 400007, "everything"},
		{"fail/bad-page-size", req{method: "POST", path: "/enrollments/query", hdr: map[string]string{"x-ms-max-item-count": "-1"}}, 400, 400008, "positive"},
		{"fail/delete-registration-wrong-etag", req{method: "DELETE", path: "/registrations/rec-0", hdr: map[string]string{"If-Match": "bm9wZQ=="}}, 412, 412001, "etag"},
		{"fail/method", req{method: "PATCH", path: "/enrollments/dev-1"}, 405, 405001, "not allowed"},
		{"fail/route", req{method: "GET", path: "/nothing/here"}, 404, 404001, "No such"},
		{"fail/unknown-enrollment", req{method: "GET", path: "/enrollments/nobody"}, 404, 404202, "nobody"},
		{"fail/unknown-registration", req{method: "GET", path: "/registrations/nobody"}, 404, 404201, "nobody"},
		{"fail/unknown-hub", req{method: "GET", path: "/edgeprov/hubs/elsewhere/devices"}, 404, 404001, "elsewhere"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.snapshot(t)
			resp, body := e.do(t, tt.r)
			var det struct {
				ErrorCode  int
				TrackingID string
				Message    string
			}
			if err := json.Unmarshal(body, &det); err != nil {
				t.Fatalf("body is not JSON: %s", body)
			}
			if resp.StatusCode != tt.status || det.ErrorCode != tt.code || resp.Header.Get("x-ms-error-code") != strconv.Itoa(tt.code) ||
				!strings.Contains(det.Message, tt.msg) || det.TrackingID == "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				t.Fatalf("got %d %s (x-ms-error-code %s), want %d %d containing %q", resp.StatusCode, body, resp.Header.Get("x-ms-error-code"), tt.status, tt.code, tt.msg)
			}
			if strings.Contains(string(body), devKey) {
				t.Fatalf("an error body shows a key: %s", body)
			}
			if after := e.snapshot(t); after != before {
				t.Fatalf("a refused request wrote:\nbefore %s\nafter %s", before, after)
			}
		})
	}
}

func TestAuthorizationAccepts(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	tests := []struct {
		name string
		r    req
	}{
		{"ok/host-of-the-request", req{method: "GET", path: "/enrollments/cat-dev", auth: token(ownerKey, strings.TrimPrefix(e.url, "http://"), "provisioningserviceowner", now.Add(time.Hour))}},
		{"ok/segment-prefix", req{method: "GET", path: "/enrollments/cat-dev", auth: token(ownerKey, "dps.example/enrollments", "provisioningserviceowner", now.Add(time.Hour))}},
		{"ok/full-resource", req{method: "GET", path: "/enrollments/cat-dev", auth: token(ownerKey, "dps.example/enrollments/cat-dev", "provisioningserviceowner", now.Add(time.Hour))}},
		{"ok/encoded-sr", req{method: "GET", path: "/enrollments/cat-dev", auth: token(ownerKey, "dps.example%2Fenrollments", "provisioningserviceowner", now.Add(time.Hour))}},
		{"ok/secondary-key", req{method: "GET", path: "/enrollments/cat-dev", auth: token(owner2, "dps.example", "provisioningserviceowner", now.Add(time.Hour))}},
		{"ok/policy-name-case", req{method: "GET", path: "/enrollments/cat-dev", auth: token(ownerKey, "dps.example", "ProvisioningServiceOwner", now.Add(time.Hour))}},
		{"ok/reader-reads", req{method: "GET", path: "/ENROLLMENTS/cat-dev", auth: token(readerKey, "dps.example", "reader", now.Add(time.Hour))}},
		{"ok/within-skew", req{method: "GET", path: "/enrollments/cat-dev", auth: token(ownerKey, "dps.example", "provisioningserviceowner", now.Add(-time.Minute))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.do(t, tt.r)
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
		})
	}
}

func TestResponsesAndPaging(t *testing.T) {
	e := newEnv(t)
	// The Node SDK POSTs bulk operations to /enrollments/ (trailing slash); modes compare case-insensitively.
	resp, body := e.do(t, req{method: "POST", path: "/enrollments/", body: `{"mode":"CREATE","enrollments":[` + enrollmentBody("a-1", devKey) + `,` +
		enrollmentBody("b-1", devKey) + `,` + enrollmentBody("bad!", devKey) + `]}`})
	var bulk serviceapi.BulkEnrollmentOperationResult
	if json.Unmarshal(body, &bulk); resp.StatusCode != 200 || bulk.IsSuccessful || len(bulk.Errors) != 1 || bulk.Errors[0].RegistrationID != "bad!" || bulk.Errors[0].ErrorCode != 400004 {
		t.Fatalf("bulk: %d %s", resp.StatusCode, body)
	}
	// GET hides keys; attestationmechanism shows them.
	resp, body = e.do(t, req{method: "GET", path: "/enrollments/A-1"})
	if resp.StatusCode != 200 || strings.Contains(string(body), devKey) || !strings.Contains(string(body), `"symmetricKey":{}`) || resp.Header.Get(serviceapi.HeaderSource) != "api" {
		t.Fatalf("GET: %d %s", resp.StatusCode, body)
	}
	resp, body = e.do(t, req{method: "POST", path: "/enrollments/a-1/attestationMechanism"})
	if resp.StatusCode != 200 || !strings.Contains(string(body), devKey) {
		t.Fatalf("attestation mechanism: %d %s", resp.StatusCode, body)
	}
	// Pages of 2 over a-1, b-1, cat-dev: two pages, no continuation on the last.
	var ids []string
	cont := ""
	for pages := 1; ; pages++ {
		hdr := map[string]string{"x-ms-max-item-count": "2"}
		if cont != "" {
			hdr["x-ms-continuation"] = cont
		}
		resp, body = e.do(t, req{method: "POST", path: "/enrollments/query", body: `{"query":"*"}`, hdr: hdr})
		var page []struct{ RegistrationID string }
		if err := json.Unmarshal(body, &page); err != nil || resp.StatusCode != 200 || resp.Header.Get("x-ms-item-type") != "Enrollment" {
			t.Fatalf("page %d: %d %s", pages, resp.StatusCode, body)
		}
		for _, p := range page {
			ids = append(ids, p.RegistrationID)
		}
		_, more := resp.Header["X-Ms-Continuation"]
		if !more {
			if pages != 2 {
				t.Fatalf("%d pages, want 2", pages)
			}
			break
		}
		cont = resp.Header.Get("x-ms-continuation")
	}
	if strings.Join(ids, ",") != "a-1,b-1,cat-dev" {
		t.Fatalf("listed %v", ids)
	}
	resp, body = e.do(t, req{method: "POST", path: "/enrollments/query", hdr: map[string]string{serviceapi.HeaderSource: "api"}})
	if json.Unmarshal(body, &ids); resp.StatusCode != 200 || strings.Count(string(body), "registrationId") != 2 {
		t.Fatalf("API-only listing: %s", body)
	}
	// Registration states and the local hub registry.
	resp, body = e.do(t, req{method: "POST", path: "/edgeprov/registrations/query"})
	if resp.StatusCode != 200 || strings.Count(string(body), "registrationId") != 3 {
		t.Fatalf("all registrations: %d %s", resp.StatusCode, body)
	}
	resp, body = e.do(t, req{method: "GET", path: "/edgeprov/hubs/HUB.TEST/devices/rec-0"})
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"deviceId":"rec-0"`) || strings.Contains(string(body), "sealedKey") {
		t.Fatalf("device: %d %s", resp.StatusCode, body)
	}
	resp, body = e.do(t, req{method: "POST", path: "/edgeprov/hubs/hub.test/devices/query"})
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"deviceId":"rec-0"`) || strings.Contains(string(body), "sealedKey") {
		t.Fatalf("devices: %d %s", resp.StatusCode, body)
	}
	resp, body = e.do(t, req{method: "DELETE", path: "/registrations/rec-1", hdr: map[string]string{"If-Match": "ZXRhZy01"}})
	if resp.StatusCode != 204 {
		t.Fatalf("delete registration: %d %s", resp.StatusCode, body)
	}
	// Groups in bulk (not in the Node SDK, in the spec); unknown fields are
	// tolerated, as other SDKs send fields edgeprov does not model.
	resp, body = e.do(t, req{method: "POST", path: "/enrollmentGroups", body: `{"mode":"create","enrollmentGroups":[` +
		`{"enrollmentGroupId":"g-1","attestation":{"type":"symmetricKey","symmetricKey":{}},"clientCertificateIssuancePolicy":null},` +
		`{"enrollmentGroupId":"g-tpm","attestation":{"type":"tpm","tpm":{"endorsementKey":"AA=="}}}]}`})
	if json.Unmarshal(body, &bulk); resp.StatusCode != 200 || bulk.IsSuccessful || len(bulk.Errors) != 1 || bulk.Errors[0].EnrollmentGroupID != "g-tpm" ||
		!strings.Contains(bulk.Errors[0].ErrorStatus, "a TPM group trusts EK CA certificates") {
		t.Fatalf("group bulk: %d %s", resp.StatusCode, body)
	}
	resp, body = e.do(t, req{method: "GET", path: "/enrollmentgroups/G-1"})
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"enrollmentGroupId":"g-1"`) {
		t.Fatalf("group get: %d %s", resp.StatusCode, body)
	}
	resp, body = e.do(t, req{method: "POST", path: "/enrollmentGroups/", body: `{"mode":"Delete","enrollmentGroups":[{"enrollmentGroupId":"g-1"}]}`})
	if json.Unmarshal(body, &bulk); resp.StatusCode != 200 || !bulk.IsSuccessful {
		t.Fatalf("group bulk delete: %d %s", resp.StatusCode, body)
	}
	resp, body = e.do(t, req{method: "GET", path: "/edgeprov/status"})
	if resp.StatusCode != 200 || !strings.Contains(string(body), "yes") {
		t.Fatalf("status: %d %s", resp.StatusCode, body)
	}
}

// The scan bound of a group's registrations: a small group among many
// records answers with short pages and continuations, and still finds all.
func TestRegistrationQueryOfSmallGroupEnds(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	e.st.Update(context.Background(), func(tx store.Tx) error {
		for i := range 45000 {
			g := "big"
			if i%20000 == 19999 {
				g = "small"
			}
			id := fmt.Sprintf("many-%06d", i)
			tx.PutRecord(&store.Record{Scope: scope, RegistrationID: id, Status: "assigned", EnrollmentGroupID: g, CreatedAt: now, UpdatedAt: now, ETag: "x"})
		}
		return nil
	})
	found, cont := 0, ""
	for pages := 0; pages < 10; pages++ {
		hdr := map[string]string{}
		if cont != "" {
			hdr["x-ms-continuation"] = cont
		}
		resp, body := e.do(t, req{method: "POST", path: "/registrations/small/query", hdr: hdr})
		found += strings.Count(string(body), "registrationId")
		cont = resp.Header.Get("x-ms-continuation")
		if cont == "" {
			if found != 2 {
				t.Fatalf("found %d, want 2", found)
			}
			return
		}
	}
	t.Fatal("paging did not end")
}
