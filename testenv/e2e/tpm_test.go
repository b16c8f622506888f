package e2e_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgeprov/edgeprov/agent/state"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/hub/local"
	"github.com/edgeprov/edgeprov/daemon/secrets"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/daemon/store/bolt"
	"github.com/edgeprov/edgeprov/testenv/e2e"
	pgtest "github.com/edgeprov/edgeprov/testenv/postgres"
	"github.com/edgeprov/edgeprov/testenv/swtpm"
	"github.com/edgeprov/edgeprov/tpm"
)

// tpmKeys reads a TPM's EK (creating and persisting EK and SRK, as a device's
// first boot does) the way an operator collects it for enrollment, and its
// derived registration ID. The connection is closed again: swtpm serves one.
func tpmKeys(t *testing.T, inst *swtpm.Instance) (ekB64, regID string) {
	t.Helper()
	d, err := tpm.Open(inst.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ek, err := d.EndorsementKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.StorageRootKey(); err != nil {
		t.Fatal(err)
	}
	regID, err = d.RegistrationID()
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(ek), regID
}

// tpmAgentConfig writes an agent config using the TPM at inst; regID may be
// empty (derived from the EK).
func tpmAgentConfig(t *testing.T, d *e2e.Daemon, inst *swtpm.Instance, regID string) (cfg, stateFile string) {
	dir := t.TempDir()
	cfg, stateFile = filepath.Join(dir, "agent.yaml"), filepath.Join(dir, "state.json")
	idLine := ""
	if regID != "" {
		idLine = "registrationId: " + regID
	}
	e2e.Write(t, cfg, fmt.Sprintf(`version: 1
provisioningHost: %s
idScope: %s
%s
trustBundle: %s
attestation:
  type: tpm
  tpm: {path: %q}
stateFile: %s
timeout: 30s
`, d.DeviceAddr, d.IDScope, idLine, d.CACert, inst.Path(), stateFile))
	return cfg, stateFile
}

// storedHubKey reads, from the stopped daemon's store (bbolt locks the
// file), the hub key the local hub keeps for the device - sealed, opened with
// the daemon's data key file, through the local driver's own read path - and
// the KeyRef of its identity.
func storedHubKey(t *testing.T, d *e2e.Daemon, hubName, deviceID string) (key []byte, keyRef string) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(d.StateDir, "edgeprov.db"), bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	box, err := secrets.LoadKeyFile(filepath.Join(d.StateDir, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	if key, err = local.New(hubName, st, box).DeviceKey(context.Background(), deviceID); err != nil {
		t.Fatal(err)
	}
	err = st.View(context.Background(), func(tx store.Tx) error {
		id, err := tx.Identity(hubName, deviceID)
		if err == nil {
			keyRef = id.KeyRef
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return key, keyRef
}

// tpmSAS signs a hub-style SAS token with the key persisted in the TPM.
func tpmSAS(t *testing.T, inst *swtpm.Instance, handle string, resource string) string {
	t.Helper()
	h, err := strconv.ParseUint(handle, 0, 32)
	if err != nil {
		t.Fatal(err)
	}
	d, err := tpm.Open(inst.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tok, err := sas.BuildWithMAC(func(s []byte) ([]byte, error) { return d.HMAC(tpm2.TPMHandle(h), s) },
		resource, time.Now().Add(time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// phaseLine matches the agent's debug log of one phase.
var phaseLine = regexp.MustCompile(`msg=phase kind=(\w+) name="?([^"=]+?)"? ms=([0-9.]+) ok=(\w+)`)

// logPhases reports the agent's phase timings (the measured numbers of the
// TPM flow against swtpm) and checks they cover the flow.
func logPhases(t *testing.T, stderr string) {
	t.Helper()
	sum := map[string]float64{}
	var names []string
	for _, m := range phaseLine.FindAllStringSubmatch(stderr, -1) {
		ms, _ := strconv.ParseFloat(m[3], 64)
		sum[m[1]] += ms
		names = append(names, fmt.Sprintf("%s/%s=%sms", m[1], m[2], m[3]))
	}
	t.Logf("agent phases: %s", strings.Join(names, ", "))
	t.Logf("agent split: tpm %.1f ms, network %.1f ms, wait %.1f ms", sum["tpm"], sum["network"], sum["wait"])
	for _, want := range []string{"tpm/import challenge key", "tpm/import hub key", "tpm/sign SAS token", "network/register (unsigned, for the challenge)", "network/register (signed)", "network/poll"} {
		if !strings.Contains(strings.Join(names, ","), want) {
			t.Errorf("agent did not log phase %s:\n%s", want, stderr)
		}
	}
}

// TestAgentTPMIndividual provisions a swtpm-backed device through the built
// binaries with an individual TPM enrollment, then checks that the key in
// the TPM is the one the daemon registered for the hub.
func TestAgentTPMIndividual(t *testing.T) {
	t.Parallel()
	derived := swtpm.Start(t) // registers under the ID derived from its EK
	named := swtpm.Start(t)   // registers under an ID the operator chose
	derivedEK, derivedID := tpmKeys(t, derived)
	namedEK, _ := tpmKeys(t, named)
	d := e2e.NewDaemon(t, e2e.Options{Catalog: fmt.Sprintf(`version: 1
enrollments:
  - registrationId: %s
    deviceId: tpm-derived
    attestation: {type: tpm, tpm: {endorsementKey: %s}}
  - registrationId: tpm-named-01
    attestation: {type: tpm, tpm: {endorsementKey: %s}}
    allocationPolicy: static
    iotHubs: [hub-b.e2e.local]
  - registrationId: tpm-wrong-ek
    attestation: {type: tpm, tpm: {endorsementKey: %s}}
`, derivedID, derivedEK, namedEK, derivedEK)})
	d.Start(t)

	type run struct {
		res   *state.Result
		key   []byte
		ref   string
		token string
	}
	provision := func(t *testing.T, inst *swtpm.Instance, regID string, force bool) run {
		t.Helper()
		cfg, stateFile := tpmAgentConfig(t, d, inst, regID)
		args := []string{"provision", "--config", cfg, "--log-level", "debug"}
		if force {
			args = append(args, "--force")
		}
		r := e2e.Run(t, nil, "edgeprov-agent", args...)
		if r.Code != 0 {
			t.Fatalf("agent: exit %d\n%s%s\n%s", r.Code, r.Stdout, r.Stderr, d.Log())
		}
		logPhases(t, r.Stderr)
		res, err := state.Load(stateFile)
		if err != nil {
			t.Fatal(err)
		}
		if res.TPM == nil || res.TPM.HubKeyHandle != "0x81000100" || res.TPM.Path != inst.Path() {
			t.Fatalf("result file does not say where the hub key is: %+v", res.TPM)
		}
		// The key the device holds: a hub SAS token signed inside the TPM.
		return run{res: res, token: tpmSAS(t, inst, res.TPM.HubKeyHandle, res.AssignedHub+"/devices/"+res.DeviceID)}
	}

	first := provision(t, derived, "", false)
	if first.res.RegistrationID != derivedID || first.res.DeviceID != "tpm-derived" || first.res.Status != "assigned" {
		t.Fatalf("derived-ID device: %+v", first.res)
	}
	second := provision(t, named, "tpm-named-01", false)
	if second.res.DeviceID != "tpm-named-01" || second.res.AssignedHub != "hub-b.e2e.local" {
		t.Fatalf("named device: %+v", second.res)
	}
	// A device claiming another enrollment's registration ID with its own EK
	// gets the unknown-device answer (no challenge).
	cfg, _ := tpmAgentConfig(t, d, named, "tpm-wrong-ek")
	if r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg); r.Code != 4 || !strings.Contains(r.Stderr, "401002") {
		t.Fatalf("TPM with another device's registration ID: exit %d, want 4 (refused, 401002)\n%s", r.Code, r.Stderr)
	}
	// Re-registration issues a new hub key, as DPS does.
	again := provision(t, derived, "", true)

	d.Stop(t)
	for _, c := range []struct {
		name string
		run  *run
	}{{"derived", &first}, {"named", &second}, {"re-registered", &again}} {
		c.run.key, c.run.ref = storedHubKey(t, d, c.run.res.AssignedHub, c.run.res.DeviceID)
		if len(c.run.key) != 32 {
			t.Fatalf("%s: the daemon stored a %d-byte hub key", c.name, len(c.run.key))
		}
		if !strings.HasPrefix(c.run.ref, "tpm:"+c.run.res.RegistrationID+"#issued-") {
			t.Errorf("%s: identity KeyRef %q does not name a TPM-issued key", c.name, c.run.ref)
		}
	}
	// Only the latest registration's key is stored for the derived device.
	if !bytes.Equal(first.key, again.key) {
		t.Fatal("reading the store twice gave two keys")
	}
	for _, c := range []struct {
		name string
		run  run
		ok   bool
	}{
		{"re-registered device's TPM key verifies with the stored key", again, true},
		{"named device's TPM key verifies with its stored key", second, true},
		{"the key imported before re-registration no longer does", first, false},
	} {
		tok, err := sas.Parse(c.run.token)
		if err != nil {
			t.Fatal(err)
		}
		if err := tok.Verify(c.run.key); (err == nil) != c.ok {
			t.Errorf("%s: Verify = %v", c.name, err)
		}
	}
	if bytes.Equal(second.key, again.key) {
		t.Error("two devices got the same hub key")
	}
}

// testCA is a TPM manufacturer CA for EK certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{name}, CommonName: name + " EK CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// TestAgentTPMGroupByEKCertificate provisions devices of a TPM enrollment
// group (edgeprov extension) by the EK certificate in their TPM's NV: one
// whose certificate chains to the trusted CA succeeds, one from another CA is
// refused.
func TestAgentTPMGroupByEKCertificate(t *testing.T) {
	t.Parallel()
	vendor, other := newTestCA(t, "Vendor A"), newTestCA(t, "Vendor B")
	good := swtpm.Start(t, swtpm.WithEKCertificate(vendor.cert, vendor.key))
	foreign := swtpm.Start(t, swtpm.WithEKCertificate(other.cert, other.key))
	d := e2e.NewDaemon(t, e2e.Options{
		Catalog: `version: 1
enrollmentGroups:
  - enrollmentGroupId: vendor-a-fleet
    attestation:
      type: tpm
      tpm: {ekCACertificateFiles: [vendor-a.pem]}
    initialTwin: {tags: {fleet: vendor-a}}
`,
		CatalogFiles: map[string]string{"vendor-a.pem": vendor.pem},
	})
	d.Start(t)

	cfg, stateFile := tpmAgentConfig(t, d, good, "")
	r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg, "--log-level", "debug")
	if r.Code != 0 {
		t.Fatalf("agent with a vendor-A TPM: exit %d\n%s%s\n%s", r.Code, r.Stdout, r.Stderr, d.Log())
	}
	logPhases(t, r.Stderr)
	res, err := state.Load(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	_, wantID := tpmKeys(t, good)
	if res.RegistrationID != wantID || res.DeviceID != wantID || res.TPM == nil {
		t.Fatalf("group device: %+v, want registration ID %s", res, wantID)
	}

	cfg, _ = tpmAgentConfig(t, d, foreign, "")
	r = e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg)
	if r.Code != 4 || !strings.Contains(r.Stderr, "401002") {
		t.Fatalf("agent with a vendor-B TPM: exit %d, want 4 (refused, 401002)\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if !strings.Contains(d.Log(), "certificate signed by unknown authority") {
		t.Errorf("daemon did not log why the vendor-B EK certificate was refused:\n%s", d.Log())
	}
}

// TestTPMChallengeAcrossReplicas: two edgeprovd replicas on one PostgreSQL.
// The challenge issued by one replica is answered on the other (the
// challenge lives in the store), the operation polls on the first, and the
// same answer replayed on the first replica is refused.
func TestTPMChallengeAcrossReplicas(t *testing.T) {
	t.Parallel()
	inst := swtpm.Start(t)
	ek, regID := tpmKeys(t, inst)
	pg := pgtest.Start(t)
	dsn := pg.CreateDB(t, "edgeprov")
	a := e2e.NewDaemon(t, e2e.Options{Catalog: fmt.Sprintf(`version: 1
enrollments:
  - registrationId: %s
    attestation: {type: tpm, tpm: {endorsementKey: %s}}
`, regID, ek), CatalogFiles: map[string]string{"pg.dsn": dsn + "\n"},
		Store: "  type: postgres\n  postgres: {dsnFile: pg.dsn, maxConns: 4}\n"})
	b := e2e.NewReplica(t, a)
	a.Start(t)
	b.Start(t)

	dev, err := tpm.Open(inst.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	srk, err := dev.StorageRootKey()
	if err != nil {
		t.Fatal(err)
	}
	client := httpsClient(t, a.CACert)
	path := "/" + a.IDScope + "/registrations/" + regID
	send := func(d *e2e.Daemon, method, suffix, auth string, body any) (int, []byte) {
		t.Helper()
		data, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, "https://"+d.DeviceAddr+path+suffix+"?api-version=2021-06-01", bytes.NewReader(data))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	reg := dpsapi.DeviceRegistration{RegistrationID: regID, TPM: &dpsapi.TPMAttestation{EndorsementKey: ek, StorageRootKey: base64.StdEncoding.EncodeToString(srk)}}

	status, body := send(a, "PUT", "/register", "", reg)
	var ch dpsapi.TPMChallenge
	if err := json.Unmarshal(body, &ch); status != 401 || err != nil || ch.AuthenticationKey == "" {
		t.Fatalf("challenge from replica a: %d %s", status, body)
	}
	blob, _ := base64.StdEncoding.DecodeString(ch.AuthenticationKey)
	if err := dev.ImportAuthenticationKey(blob, tpm.AuthKeyHandle); err != nil {
		t.Fatal(err)
	}
	tok, err := sas.BuildWithMAC(func(s []byte) ([]byte, error) { return dev.HMAC(tpm.AuthKeyHandle, s) },
		url.QueryEscape(sas.DeviceResource(a.IDScope, regID)), time.Now().Add(time.Hour), sas.DeviceKeyName)
	if err != nil {
		t.Fatal(err)
	}
	status, body = send(b, "PUT", "/register", tok, reg)
	var op dpsapi.RegistrationOperationStatus
	if err := json.Unmarshal(body, &op); status != 202 || err != nil {
		t.Fatalf("answer on replica b: %d %s\n%s", status, body, b.Log())
	}
	status, body = send(a, "GET", "/operations/"+op.OperationID, tok, struct{}{})
	var final dpsapi.RegistrationOperationStatus
	if err := json.Unmarshal(body, &final); status != 200 || err != nil || final.Status != "assigned" || final.RegistrationState.TPM == nil {
		t.Fatalf("poll on replica a: %d %s", status, body)
	}
	hubBlob, _ := base64.StdEncoding.DecodeString(final.RegistrationState.TPM.AuthenticationKey)
	if err := dev.ImportAuthenticationKey(hubBlob, tpm.AuthKeyHandle); err != nil {
		t.Fatalf("importing the hub key issued by replica b: %v", err)
	}
	if status, body = send(a, "PUT", "/register", tok, reg); status != 401 {
		t.Fatalf("replayed answer on replica a: %d %s", status, body)
	}
	if n := count(t, pg, "SELECT count(*) FROM records"); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
}
