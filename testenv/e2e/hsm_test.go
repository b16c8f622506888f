package e2e_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/agent/state"
	"github.com/edgeprov/edgeprov/hsm"
	"github.com/edgeprov/edgeprov/testenv/e2e"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

// hsmIssuingCA creates the daemon's issuing CA with its key in the second
// SoftHSM2 token and writes its certificate to dir/issuing-ca.pem.
func hsmIssuingCA(t *testing.T, dir string) (*x509.Certificate, string) {
	t.Helper()
	ctx := context.Background()
	m, err := hsm.OpenURI(ctx, hsmEnv.URI(tokCA))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	key, err := m.GenerateKey(ctx, hsm.ECDSAP256, "issuing-ca")
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "e2e HSM issuing CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "issuing-ca.pem")
	e2e.Write(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	return cert, path
}

// signCSR certifies a CSR the agent wrote, as a factory CA would.
func signCSR(t *testing.T, csrPEM []byte, ca *testpki.Cert) (*x509.CertificateRequest, string) {
	t.Helper()
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("keygen wrote no CSR: %q", csrPEM)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("the CSR's signature (made in the token) does not verify: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: csr.Subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return csr, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// TestAgentWithHSM runs the agent with every key in SoftHSM2 against a daemon
// whose issuing CA key and secrets key are in two other tokens: X.509
// attestation with the device key in the token and a CSR for an operational
// key, then symmetric-key attestation with the key held as a generic secret.
// The steps share tokens, so they run one after another.
func TestAgentWithHSM(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	factory := testpki.NewRoot(t, "e2e HSM factory root")
	issuing, issuingFile := hsmIssuingCA(t, dir)
	symKey := make([]byte, 32)
	rand.Read(symKey)
	d := e2e.NewDaemon(t, e2e.Options{
		Catalog: fmt.Sprintf(`version: 1
enrollments:
  - registrationId: hsm-sym-01
    attestation: {type: symmetricKey, symmetricKey: {primaryKey: %s}}
enrollmentGroups:
  - enrollmentGroupId: hsm-cams
    attestation:
      type: x509
      x509: {signingCertificates: {primary: {certificateFile: factory.pem}}}
    clientCertificateIssuancePolicy: {lifetime: 240h, keyTypes: [ecdsa-p256]}
`, b64(symKey)),
		CatalogFiles: map[string]string{"factory.pem": factory.PEM()},
		Extra: fmt.Sprintf("issuingCA: {certFile: %s, keyURI: %q}\nsecrets: {keyURI: %q}\n",
			issuingFile, hsmEnv.KeyURI(tokCA, "issuing-ca"), hsmEnv.KeyURI(tokSecrets, "data-key")),
		Env:  []string{hsmEnv.EnvVar()},
		MQTT: true,
	})
	d.Start(t)
	env := []string{hsmEnv.EnvVar()}
	run := func(t *testing.T, wantCode int, args ...string) e2e.Result {
		t.Helper()
		r := e2e.Run(t, env, "edgeprov-agent", args...)
		if r.Code != wantCode {
			t.Fatalf("edgeprov-agent %v: exit %d, want %d\n%s%s\ndaemon:\n%s", args, r.Code, wantCode, r.Stdout, r.Stderr, d.Log())
		}
		return r
	}
	agentYAML := func(regID, attestation, extra string) (cfg, stateFile string) {
		ad := t.TempDir()
		cfg, stateFile = filepath.Join(ad, "agent.yaml"), filepath.Join(ad, "state.json")
		host := d.DeviceAddr
		if strings.Contains(extra, "transport: mqtt") {
			host = d.MQTTAddr
		}
		e2e.Write(t, cfg, fmt.Sprintf("version: 1\nprovisioningHost: %s\nidScope: %s\nregistrationId: %s\ntrustBundle: %s\n%s\n%sstateFile: %s\ntimeout: 30s\n",
			host, d.IDScope, regID, d.CACert, attestation, extra, stateFile))
		return cfg, stateFile
	}

	t.Run("ok/x509-key-in-token-with-issued-certificate", func(t *testing.T) {
		certFile := filepath.Join(dir, "hsm-cam-01.pem")
		chainFile := filepath.Join(dir, "hsm-cam-01-operational.pem")
		cfg, stateFile := agentYAML("hsm-cam-01",
			fmt.Sprintf("attestation:\n  type: x509\n  x509: {certFile: %s, keyURI: %q}", certFile, hsmEnv.KeyURI(tokDevice, "hsm-cam-01")),
			fmt.Sprintf("csr: {keyURI: %q, chainFile: %s}\n", hsmEnv.KeyURI(tokDevice, "hsm-cam-01-op"), chainFile))

		// The factory: the device makes its key in the token and a CSR; the
		// factory CA certifies it.
		csrFile := filepath.Join(dir, "hsm-cam-01.csr")
		run(t, 0, "keygen", "--config", cfg, "--for", "x509", "--out", csrFile)
		csrPEM, err := os.ReadFile(csrFile)
		if err != nil {
			t.Fatal(err)
		}
		devCSR, certPEM := signCSR(t, csrPEM, factory)
		if devCSR.Subject.CommonName != "hsm-cam-01" {
			t.Fatalf("CSR subject %s", devCSR.Subject)
		}
		e2e.Write(t, certFile, certPEM)
		// keygen again finds the key rather than making another.
		r := run(t, 0, "keygen", "--config", cfg, "--for", "x509")
		again, _ := signCSR(t, []byte(r.Stdout), factory)
		if !again.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(devCSR.PublicKey) {
			t.Fatal("a second keygen made a new device key")
		}
		// The operational key, made in the token ahead of provisioning.
		r = run(t, 0, "keygen", "--config", cfg)
		opCSR, _ := signCSR(t, []byte(r.Stdout), factory)

		run(t, 0, "provision", "--config", cfg)
		res, err := state.Load(stateFile)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != "assigned" || res.DeviceID != "hsm-cam-01" || res.IssuedCertificateFile != chainFile {
			t.Fatalf("result %+v", res)
		}
		chain := readChain(t, chainFile)
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		roots.AddCert(issuing)
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("issued chain does not verify to the HSM CA: %v", err)
		}
		if !chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(opCSR.PublicKey) || chain[0].Subject.CommonName != "hsm-cam-01" {
			t.Fatalf("issued %s for another key", chain[0].Subject)
		}
		if life := chain[0].NotAfter.Sub(chain[0].NotBefore); life > 241*time.Hour {
			t.Fatalf("issued for %s, the policy says 240h", life)
		}
		// Cached while the chain file is there.
		r = run(t, 0, "provision", "--config", cfg)
		if !strings.Contains(r.Stdout, `"cached": true`) {
			t.Fatalf("second run registered again: %s", r.Stdout)
		}
	})

	// The same device over MQTT: its token key authenticates the MQTT
	// listener's TLS handshake, and the CSR rides on the username's
	// issuance api-version.
	t.Run("ok/x509-key-in-token-over-mqtt-with-issued-certificate", func(t *testing.T) {
		certFile := filepath.Join(dir, "hsm-cam-01.pem")
		chainFile := filepath.Join(dir, "hsm-cam-01-operational-mqtt.pem")
		cfg, stateFile := agentYAML("hsm-cam-01",
			fmt.Sprintf("attestation:\n  type: x509\n  x509: {certFile: %s, keyURI: %q}", certFile, hsmEnv.KeyURI(tokDevice, "hsm-cam-01")),
			fmt.Sprintf("transport: mqtt\ncsr: {keyURI: %q, chainFile: %s}\n", hsmEnv.KeyURI(tokDevice, "hsm-cam-01-op"), chainFile))
		run(t, 0, "provision", "--config", cfg)
		res, err := state.Load(stateFile)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != "assigned" || res.DeviceID != "hsm-cam-01" || res.IssuedCertificateFile != chainFile {
			t.Fatalf("result %+v", res)
		}
		chain := readChain(t, chainFile)
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		roots.AddCert(issuing)
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("issued chain does not verify to the HSM CA: %v", err)
		}
		if !strings.Contains(d.Log(), "mqtt client connected") {
			t.Fatal("the daemon saw no MQTT client")
		}
	})

	t.Run("ok/symmetric-key-in-token", func(t *testing.T) {
		keyFile := filepath.Join(t.TempDir(), "device.key")
		e2e.Write(t, keyFile, b64(symKey)+"\n")
		cfg, stateFile := agentYAML("hsm-sym-01",
			fmt.Sprintf("attestation:\n  type: symmetricKey\n  symmetricKey: {keyURI: %q}", hsmEnv.KeyURI(tokDevice, "hsm-sym-01")), "")
		run(t, 0, "import-key", "--config", cfg, "--key-file", keyFile)
		run(t, 1, "import-key", "--config", cfg, "--key-file", keyFile) // the label is taken
		run(t, 0, "provision", "--config", cfg)
		if res, err := state.Load(stateFile); err != nil || res.Status != "assigned" || res.DeviceID != "hsm-sym-01" {
			t.Fatalf("result %+v, %v", res, err)
		}

		// The daemon keeps the device's key for its local hub, sealed with
		// the key derived in its token: the store file does not hold it.
		raw, err := os.ReadFile(filepath.Join(d.StateDir, "edgeprov.db"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(raw, []byte(`"sealedKey"`)) {
			t.Fatal("no sealed key in the store")
		}
		if bytes.Contains(raw, symKey) || bytes.Contains(raw, []byte(b64(symKey))) {
			t.Fatal("the store file holds the device key in the clear")
		}
	})

	t.Run("fail/symmetric-key-in-token-is-another", func(t *testing.T) {
		other := make([]byte, 32)
		rand.Read(other)
		keyFile := filepath.Join(t.TempDir(), "device.key")
		e2e.Write(t, keyFile, base64.StdEncoding.EncodeToString(other)+"\n")
		cfg, _ := agentYAML("hsm-sym-01",
			fmt.Sprintf("attestation:\n  type: symmetricKey\n  symmetricKey: {keyURI: %q}", hsmEnv.KeyURI(tokDevice, "hsm-sym-wrong")), "")
		run(t, 0, "import-key", "--config", cfg, "--key-file", keyFile)
		r := run(t, 4, "provision", "--config", cfg)
		if !strings.Contains(r.Stderr, "401002") {
			t.Fatalf("refusal: %s", r.Stderr)
		}
	})
}

func readChain(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) < 2 {
		t.Fatalf("%s holds %d certificates, want the device's and its CA", path, len(out))
	}
	return out
}
