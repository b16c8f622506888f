package e2e_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/agent/state"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/testenv/e2e"
	pgtest "github.com/edgeprov/edgeprov/testenv/postgres"
)

// Two edgeprovd replicas on one PostgreSQL: the same devices register on both
// at once; each ends with exactly one record and one hub identity, and an
// operation started on one replica is pollable on the other.
func TestReplicasSharePostgres(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t)
	dsn := pg.CreateDB(t, "edgeprov")
	a := e2e.NewDaemon(t, e2e.Options{Catalog: catalog, CatalogFiles: map[string]string{
		"group.key":   b64(groupKey) + "\n",
		"blocked.key": b64(sas.DeriveDeviceKey(groupKey, "line-blocked")) + "\n",
		"pg.dsn":      dsn + "\n",
	}, Store: "  type: postgres\n  postgres: {dsnFile: pg.dsn, maxConns: 8}\n"})
	b := e2e.NewReplica(t, a)
	a.Start(t)
	b.Start(t)
	if a.IDScope != b.IDScope {
		t.Fatalf("replicas serve scopes %s and %s", a.IDScope, b.IDScope)
	}

	const devices = 8
	var wg sync.WaitGroup
	results := make(chan *state.Result, 2*devices)
	for i := range devices {
		for _, d := range []*e2e.Daemon{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cfg, stateFile := agentConfig(t, d, fmt.Sprintf("line-rep-%02d", i), "group")
				if r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg); r.Code != 0 {
					t.Errorf("agent on %s: exit %d %s", d.DeviceAddr, r.Code, r.Stderr)
					return
				}
				res, err := state.Load(stateFile)
				if err != nil {
					t.Error(err)
					return
				}
				results <- res
			}()
		}
	}
	wg.Wait()
	close(results)
	hubOf := map[string]string{}
	for r := range results {
		if h, seen := hubOf[r.RegistrationID]; seen && h != r.AssignedHub {
			t.Errorf("%s assigned to %s on one replica and %s on the other", r.RegistrationID, h, r.AssignedHub)
		}
		hubOf[r.RegistrationID] = r.AssignedHub
	}
	if len(hubOf) != devices {
		t.Fatalf("%d devices provisioned, want %d", len(hubOf), devices)
	}
	if n := count(t, pg, "SELECT count(*) FROM records WHERE registration_id LIKE 'line-rep-%'"); n != devices {
		t.Errorf("%d records, want %d", n, devices)
	}
	if n := count(t, pg, "SELECT count(*) FROM identities WHERE device_id LIKE 'line-rep-%'"); n != devices {
		t.Errorf("%d hub identities, want %d", n, devices)
	}

	// Register on a, poll on b.
	id := "line-cross-1"
	tok := sas.Build(sas.DeriveDeviceKey(groupKey, id), sas.DeviceResource(a.IDScope, id), time.Now().Add(time.Hour), "registration")
	client := httpsClient(t, a.CACert)
	var op dpsapi.RegistrationOperationStatus
	do(t, client, "PUT", "https://"+a.DeviceAddr+"/"+a.IDScope+"/registrations/"+id+"/register?api-version=2021-06-01", tok, 202, &op)
	var got dpsapi.RegistrationOperationStatus
	do(t, client, "GET", "https://"+b.DeviceAddr+"/"+a.IDScope+"/registrations/"+id+"/operations/"+op.OperationID+"?api-version=2021-06-01", tok, 200, &got)
	if got.Status != "assigned" || got.RegistrationState.DeviceID != id {
		t.Fatalf("poll on the other replica: %+v", got)
	}

	// Kill one replica: the other carries on.
	a.Kill(t)
	cfg, _ := agentConfig(t, b, "line-after-kill", "group")
	if r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg); r.Code != 0 {
		t.Fatalf("after killing a replica: exit %d %s", r.Code, r.Stderr)
	}
}

func count(t *testing.T, pg *pgtest.Server, q string) int {
	t.Helper()
	out, err := pg.Query("edgeprov", q)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscan(strings.TrimSpace(out), &n)
	return n
}

func httpsClient(t *testing.T, caFile string) *http.Client {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func do(t *testing.T, c *http.Client, method, url, auth string, want int, out any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader([]byte("{}")))
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d", method, url, resp.StatusCode, want)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}
