package e2e_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/testenv/e2e"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

// TestCAProofOfPossession uploads a CA certificate with edgeprovd ca, and
// checks that a group naming it in caReferences admits devices only once the
// uploader proved possession of the CA key, as in DPS.
func TestCAProofOfPossession(t *testing.T) {
	t.Parallel()
	ca := testpki.NewRoot(t, "e2e uploaded CA")
	d := e2e.NewDaemon(t, e2e.Options{Catalog: `version: 1
enrollmentGroups:
  - enrollmentGroupId: uploaded
    attestation: {type: x509, x509: {caReferences: {primary: vendor-ca}}}
`})
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	e2e.Write(t, caFile, ca.PEM())
	leaf := ca.Leaf(t, "pop-device-1")
	certFile, keyFile := leaf.WriteFiles(t, dir, "device", leaf.PEM())
	cfg := filepath.Join(dir, "agent.yaml")
	provision := func(t *testing.T) e2e.Result {
		t.Helper()
		e2e.Write(t, cfg, fmt.Sprintf("version: 1\nprovisioningHost: %s\nidScope: %s\nregistrationId: pop-device-1\ntrustBundle: %s\n"+
			"attestation: {type: x509, x509: {certFile: %s, keyFile: %s}}\nstateFile: %s\ntimeout: 30s\n",
			d.DeviceAddr, d.IDScope, d.CACert, certFile, keyFile, filepath.Join(dir, "state.json")))
		return e2e.Run(t, nil, "edgeprov-agent", "provision", "--force", "--config", cfg)
	}
	ca1 := func(t *testing.T, wantCode int, sub string, args ...string) e2e.Result {
		t.Helper()
		r := d.Run(t, append([]string{"ca", sub, "--config", d.Config}, args...)...)
		if r.Code != wantCode {
			t.Fatalf("edgeprovd ca %s %v: exit %d, want %d\n%s%s", sub, args, r.Code, wantCode, r.Stdout, r.Stderr)
		}
		return r
	}

	ca1(t, 0, "add", "vendor-ca", caFile)
	ca1(t, 1, "add", "VENDOR-CA", caFile) // names are case-insensitive
	ca1(t, 1, "add", "a-leaf", certFile)  // not a CA
	if r := ca1(t, 0, "list"); !strings.Contains(r.Stdout, "vendor-ca  false") {
		t.Fatalf("list: %s", r.Stdout)
	}

	// Uploaded but not verified: the group's devices are refused.
	d.Start(t)
	if r := provision(t); r.Code != 4 || !strings.Contains(r.Stderr, "401002") {
		t.Fatalf("before proof: exit %d %s", r.Code, r.Stderr)
	}
	d.Stop(t)

	code := strings.TrimSpace(ca1(t, 0, "verification-code", "vendor-ca").Stdout)
	if len(code) != 48 {
		t.Fatalf("verification code %q", code)
	}
	wrong := testpki.NewRoot(t, "e2e uploaded CA").Leaf(t, code) // same name, another key
	wrongFile, _ := wrong.WriteFiles(t, dir, "wrong-proof", wrong.PEM())
	if r := ca1(t, 1, "verify", "vendor-ca", wrongFile); !strings.Contains(r.Stderr, "not signed by the CA's key") {
		t.Fatalf("wrong proof: %s", r.Stderr)
	}
	proof := ca.Leaf(t, code)
	proofFile, _ := proof.WriteFiles(t, dir, "proof", proof.PEM())
	ca1(t, 0, "verify", "vendor-ca", proofFile)
	if r := ca1(t, 0, "list"); !strings.Contains(r.Stdout, "vendor-ca  true") {
		t.Fatalf("list after verify: %s", r.Stdout)
	}

	d.Start(t)
	if r := provision(t); r.Code != 0 || !strings.Contains(r.Stdout, `"status": "assigned"`) {
		t.Fatalf("after proof: exit %d\n%s%s\n%s", r.Code, r.Stdout, r.Stderr, d.Log())
	}
	// The store is the daemon's while it runs.
	if r := d.Run(t, "ca", "list", "--config", d.Config); r.Code == 0 || !strings.Contains(r.Stderr, "edgeprovd already running") {
		t.Fatalf("ca list while running: exit %d %s", r.Code, r.Stderr)
	}
}
