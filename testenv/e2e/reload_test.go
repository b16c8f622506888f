package e2e_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/adminclient"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/testenv/e2e"
)

// deviceClient registers devices over the HTTPS device API, as a stock SDK
// would, for tests that need many registrations quickly.
type deviceClient struct {
	d  *e2e.Daemon
	hc *http.Client
}

func newDeviceClient(t *testing.T, d *e2e.Daemon) *deviceClient {
	pem, err := os.ReadFile(d.CACert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &deviceClient{d: d, hc: &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 16}}}
}

// register runs register + poll and returns the final status.
func (c *deviceClient) register(ctx context.Context, regID string, key []byte) (string, error) {
	tok := sas.Build(key, sas.DeviceResource(c.d.IDScope, regID), time.Now().Add(time.Hour), "registration")
	base := "https://" + c.d.DeviceAddr + "/" + c.d.IDScope + "/registrations/" + regID
	do := func(method, url string, body []byte, out any) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, method, url+"?api-version=2021-06-01", bytes.NewReader(body))
		req.Header.Set("Authorization", tok)
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		resp, err := c.hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		return resp.StatusCode, json.NewDecoder(resp.Body).Decode(out)
	}
	var op struct{ OperationID, Status string }
	st, err := do("PUT", base+"/register", []byte(`{"registrationId":"`+regID+`"}`), &op)
	if err != nil {
		return "", err
	}
	if st != 202 {
		return fmt.Sprintf("register HTTP %d", st), nil
	}
	st, err = do("GET", base+"/operations/"+op.OperationID, nil, &op)
	if err != nil {
		return "", err
	}
	if st != 200 {
		return fmt.Sprintf("poll HTTP %d", st), nil
	}
	return op.Status, nil
}

type reloadStatus struct {
	Catalog struct {
		Individuals int `json:"individuals"`
		LastReload  struct {
			Time    time.Time `json:"time"`
			Trigger string    `json:"trigger"`
			OK      bool      `json:"ok"`
			Error   string    `json:"error"`
		} `json:"lastReload"`
		ReloadsOK     int `json:"reloadsOk"`
		ReloadsFailed int `json:"reloadsFailed"`
	} `json:"catalog"`
}

// waitReload waits for a reload after `after` and returns the status.
func waitReload(t *testing.T, cl *adminclient.Client, after time.Time) reloadStatus {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var st reloadStatus
		if _, err := cl.Status(t.Context(), &st); err != nil {
			t.Fatal(err)
		}
		if st.Catalog.LastReload.Time.After(after) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("no catalog reload after %s: %+v", after, st.Catalog)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCatalogReloadOnFileChange(t *testing.T) {
	t.Parallel()
	d := e2e.NewDaemon(t, e2e.Options{Catalog: catalog, Service: true, Extra: "catalogReload: {pollInterval: 200ms}",
		CatalogFiles: map[string]string{
			"group.key":   b64(groupKey) + "\n",
			"blocked.key": b64(sas.DeriveDeviceKey(groupKey, "line-blocked")) + "\n",
		}})
	d.Start(t)
	cl, err := adminclient.New(d.ConnectionString(t, d.ServiceAddr), adminclient.Options{CAFile: d.CACert})
	if err != nil {
		t.Fatal(err)
	}
	dev := newDeviceClient(t, d)
	catFile := filepath.Join(d.Dir, "enrollments.yaml")
	newKey := []byte("a device added by a catalog edit")
	if st, err := dev.register(t.Context(), "new-01", newKey); err != nil || st == "assigned" {
		t.Fatalf("new-01 before the edit: %q %v", st, err)
	}

	// Registrations keep flowing while a good edit is applied.
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var ok, bad atomic.Int64
	var firstBad atomic.Value
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil && i < 2000; i++ {
				id := fmt.Sprintf("line-flow-%d-%d", w, i%50)
				st, err := dev.register(ctx, id, sas.DeriveDeviceKey(groupKey, id))
				if ctx.Err() != nil {
					return
				}
				if err != nil || st != "assigned" {
					bad.Add(1)
					firstBad.CompareAndSwap(nil, fmt.Sprintf("%s: %q %v", id, st, err))
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	edit := time.Now()
	good := catalog + fmt.Sprintf("  - enrollmentGroupId: later\n    attestation: {type: symmetricKey, symmetricKey: {primaryKey: %s}}\n", b64(newKey))
	good = strings.Replace(good, "enrollments:\n", fmt.Sprintf("enrollments:\n  - registrationId: new-01\n    attestation: {type: symmetricKey, symmetricKey: {primaryKey: %s}}\n", b64(newKey)), 1)
	e2e.Write(t, catFile, good)
	st := waitReload(t, cl, edit)
	time.Sleep(300 * time.Millisecond)
	stop()
	wg.Wait()
	if !st.Catalog.LastReload.OK || st.Catalog.LastReload.Trigger != "file-change" || st.Catalog.Individuals != 3 {
		t.Fatalf("good edit: %+v", st.Catalog)
	}
	if bad.Load() != 0 || ok.Load() < 20 {
		t.Fatalf("registrations during the reload: %d ok, %d failed (first: %v)", ok.Load(), bad.Load(), firstBad.Load())
	}
	if st, err := dev.register(t.Context(), "new-01", newKey); err != nil || st != "assigned" {
		t.Fatalf("new-01 after the edit: %q %v", st, err)
	}
	// The API refuses to change what the catalog now declares.
	if _, err := cl.PutGroup(t.Context(), mustGroup("later"), "*"); !adminclient.IsStatus(err, 409) || !strings.Contains(err.Error(), "enrollments.yaml") {
		t.Fatalf("API change of a catalog entry: %v", err)
	}

	// Bad edits: each refused with file:line: field, the last good catalog
	// keeps serving (new-01 still provisions, the bad edit's device does not).
	bads := []struct {
		name, text, want string
	}{
		{"fail/yaml-syntax", good + "  - enrollmentGroupId: [unclosed\n", "enrollments.yaml:"},
		{"fail/unknown-field", strings.Replace(good, "  - registrationId: new-01\n", "  - registrationId: new-01\n    colour: blue\n", 1), "field colour not found"},
		{"fail/duplicate-registration-id", strings.Replace(good, "enrollments:\n", "enrollments:\n  - registrationId: NEW-01\n    attestation: {type: symmetricKey, symmetricKey: {primaryKey: "+b64(newKey)+"}}\n", 1), "duplicate registration ID"},
		{"fail/invalid-key", strings.Replace(good, "enrollments:\n", "enrollments:\n  - registrationId: bad-key-01\n    attestation: {type: symmetricKey, symmetricKey: {primaryKey: c2hvcnQ=}}\n", 1), "enrollments[0].attestation.symmetricKey.primaryKey"},
	}
	for i, tt := range bads {
		edit := time.Now()
		e2e.Write(t, catFile, tt.text)
		st := waitReload(t, cl, edit)
		lr := st.Catalog.LastReload
		if lr.OK || !strings.Contains(lr.Error, tt.want) || !strings.Contains(lr.Error, "enrollments.yaml:") || st.Catalog.ReloadsFailed != i+1 {
			t.Fatalf("%s: last reload %+v, want a refusal containing %q", tt.name, lr, tt.want)
		}
		if st.Catalog.Individuals != 3 {
			t.Fatalf("%s: the catalog served changed: %+v", tt.name, st.Catalog)
		}
		if s, err := dev.register(t.Context(), "new-01", newKey); err != nil || s != "assigned" {
			t.Fatalf("%s: the old catalog stopped serving: %q %v", tt.name, s, err)
		}
		if !strings.Contains(d.Log(), "catalog reload refused") {
			t.Fatalf("%s: the refusal was not logged", tt.name)
		}
	}
	if s, _ := dev.register(t.Context(), "bad-key-01", []byte("0123456789abcdef0123456789abcdef")); s == "assigned" {
		t.Fatal("an entry of a refused edit provisioned")
	}
}

func mustGroup(id string) *enrollment.Group {
	g := &enrollment.Group{EnrollmentGroupID: id}
	g.Attestation.Type = "symmetricKey"
	return g
}

func TestCatalogReloadOnSIGHUP(t *testing.T) {
	t.Parallel()
	d := e2e.NewDaemon(t, e2e.Options{Catalog: catalog, Service: true, Extra: "catalogReload: {pollInterval: 0s}",
		CatalogFiles: map[string]string{"group.key": b64(groupKey) + "\n", "blocked.key": b64(groupKey) + "\n"}})
	d.Start(t)
	cl, err := adminclient.New(d.ConnectionString(t, d.ServiceAddr), adminclient.Options{CAFile: d.CACert})
	if err != nil {
		t.Fatal(err)
	}
	e2e.Write(t, filepath.Join(d.Dir, "enrollments.yaml"), strings.Replace(catalog, "  - registrationId: line-blocked", "  - registrationId: line-blocked-2", 1))
	time.Sleep(300 * time.Millisecond) // polling is off: nothing happens by itself
	var st reloadStatus
	cl.Status(t.Context(), &st)
	if st.Catalog.LastReload.Trigger != "startup" {
		t.Fatalf("reloaded without a signal: %+v", st.Catalog)
	}
	edit := time.Now()
	d.Signal(t, syscall.SIGHUP)
	st = waitReload(t, cl, edit)
	if !st.Catalog.LastReload.OK || st.Catalog.LastReload.Trigger != "sighup" {
		t.Fatalf("SIGHUP reload: %+v", st.Catalog)
	}
	if _, src, err := cl.Individual(t.Context(), "line-blocked-2"); err != nil || src != "catalog" {
		t.Fatalf("the reloaded entry: %q %v", src, err)
	}
}
