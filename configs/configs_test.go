// Package configs_test loads and validates every example in configs/ (STYLE
// rule 15), and checks that the examples agree with one another.
package configs_test

import (
	"bytes"
	"crypto/x509"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	agentconfig "github.com/edgeprov/edgeprov/agent/config"
	"github.com/edgeprov/edgeprov/daemon/attestation/symkey"
	"github.com/edgeprov/edgeprov/daemon/catalog"
	"github.com/edgeprov/edgeprov/daemon/config"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
)

const (
	daemonExample   = "edgeprovd.example.yaml"
	catalogExample  = "enrollments.example.yaml"
	agentExample    = "agent.example.yaml"
	agentTPMExample = "agent.tpm.example.yaml"
)

// TestEveryFileIsChecked fails when configs/ holds a file no test here loads, so
// that a new example cannot go untested.
func TestEveryFileIsChecked(t *testing.T) {
	checked := []string{daemonExample, catalogExample, agentExample, agentTPMExample}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		path = filepath.ToSlash(path)
		switch {
		case strings.HasSuffix(path, "_test.go"):
		case strings.HasPrefix(path, "keys/") && strings.HasSuffix(path, ".key"):
			// TestKeyFiles.
		case strings.HasPrefix(path, "certs/") && strings.HasSuffix(path, ".pem"):
			// TestCertFiles; the TPM group's CA also TestCatalogExampleTPM.
		case slices.Contains(checked, path):
		default:
			t.Errorf("configs/%s is not loaded by any test in configs_test.go", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDaemonExample(t *testing.T) {
	cfg, err := config.Load(daemonExample)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if len(cfg.LinkedHubs) == 0 {
		t.Fatalf("the example links no hub")
	}
	if cfg.MQTT == nil || !cfg.MQTT.WebSocketEnabled() {
		t.Errorf("the example does not serve MQTT and MQTT over WebSockets")
	}
	// The catalog it names is the example catalog, and it loads the way
	// edgeprovd loads it (relative to the config file).
	if cfg.Catalog == "" {
		t.Fatalf("the example names no catalog")
	}
	if got := filepath.Clean(cfg.Path(cfg.Catalog)); got != catalogExample {
		t.Errorf("catalog resolves to %s, want %s", got, catalogExample)
	}
	f, err := catalog.Load(cfg.Path(cfg.Catalog))
	if err != nil {
		t.Fatalf("%v", err)
	}
	// Every hub an enrollment names is linked in the daemon example.
	for _, c := range commons(f) {
		for _, h := range append(slices.Clone(c.IoTHubs), c.IoTHubHostName) {
			if h == "" {
				continue
			}
			if !slices.ContainsFunc(cfg.LinkedHubs, func(l config.Hub) bool {
				return strings.EqualFold(l.HostName, h) || strings.EqualFold(l.Name, h)
			}) {
				t.Errorf("the catalog names hub %q, which the daemon example does not link", h)
			}
		}
	}
}

func commons(f *catalog.File) []*enrollment.Common {
	var out []*enrollment.Common
	for _, e := range f.Individuals {
		out = append(out, &e.Common)
	}
	for _, g := range f.Groups {
		out = append(out, &g.Common)
	}
	return out
}

func TestCatalogExample(t *testing.T) {
	f, err := catalog.Load(catalogExample)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if len(f.Individuals) == 0 || len(f.Groups) == 0 {
		t.Fatalf("the example has %d individual enrollments and %d groups; it should show both", len(f.Individuals), len(f.Groups))
	}

	// The catalog promises: the disabled individual entry inside the enabled
	// group has the key the device derives from the group key, so the device
	// attests, then is refused as disabled.
	var disabled []*enrollment.Individual
	for _, e := range f.Individuals {
		if !e.Enabled() {
			disabled = append(disabled, e)
		}
	}
	if len(disabled) == 0 {
		t.Fatalf("the example has no disabled individual enrollment")
	}
	for _, e := range disabled {
		t.Run(e.RegistrationID, func(t *testing.T) {
			groups := f.Set.SymmetricKeyCandidates(e.RegistrationID)
			if len(groups) == 0 {
				t.Fatalf("no symmetric-key group covers %s", e.RegistrationID)
			}
			g := groups[0]
			if !g.Enabled() {
				t.Errorf("group %s is disabled; the example means an enabled group", g.EnrollmentGroupID)
			}
			gp, _ := g.Attestation.SymmetricKey.Keys()
			p, _ := e.Attestation.SymmetricKey.Keys()
			if want := sas.DeriveDeviceKey(gp, e.RegistrationID); !bytes.Equal(p, want) {
				t.Fatalf("%s's key is not HMAC-SHA256(group %s key, %q)", e.RegistrationID, g.EnrollmentGroupID, e.RegistrationID)
			}
			// And so a token the device makes with its derived key matches the
			// disabled individual entry, not the group.
			const scope = "0ne00000000"
			tok, err := sas.Parse(sas.Build(sas.DeriveDeviceKey(gp, e.RegistrationID), sas.DeviceResource(scope, e.RegistrationID), time.Now().Add(time.Hour), sas.DeviceKeyName))
			if err != nil {
				t.Fatal(err)
			}
			m, err := (&symkey.Verifier{}).Verify(scope, e.RegistrationID, tok, time.Now(), f.Set, "")
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if m.Individual != e {
				t.Fatalf("the token matched %+v, want the disabled individual enrollment", m)
			}
		})
	}
}

// TestCatalogExampleTPM: the example's TPM entries parse, the individual's
// registration ID is the one derived from its EK (as the comment says), and
// the TPM group read every certificate in configs/certs.
func TestCatalogExampleTPM(t *testing.T) {
	f, err := catalog.Load(catalogExample)
	if err != nil {
		t.Fatal(err)
	}
	var ind *enrollment.Individual
	for _, e := range f.Individuals {
		if e.Attestation.Type == enrollment.AttestationTPM {
			ind = e
		}
	}
	if ind == nil || ind.Attestation.TPM.EK() == nil || ind.Attestation.TPM.EK().RegistrationID() != ind.RegistrationID {
		t.Fatalf("the example's TPM enrollment is missing or not registered under its EK's derived ID: %+v", ind)
	}
	if len(f.Set.TPMGroups()) != 1 {
		t.Fatalf("the example has %d TPM groups, want 1", len(f.Set.TPMGroups()))
	}
	cas := f.Set.TPMGroups()[0].Attestation.TPM.EKCACerts()
	data, err := os.ReadFile(filepath.Join("certs", "example-tpm-ek-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := enrollment.ParseCertificate(string(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(cas) != 1 || !cas[0].Equal(want) {
		t.Fatalf("the TPM group read %d CA certificates, want certs/example-tpm-ek-ca.pem", len(cas))
	}
}

func TestAgentTPMExample(t *testing.T) {
	c, err := agentconfig.Load(agentTPMExample)
	if err != nil {
		t.Fatal(err)
	}
	if c.Attestation.Type != "tpm" || c.RegistrationID != "" || c.Attestation.TPM.Handle() != 0x81000100 {
		t.Fatalf("the TPM example is not a TPM config deriving its registration ID: %+v", c.Attestation)
	}
}

func TestAgentExample(t *testing.T) {
	if _, err := os.Stat(agentExample); os.IsNotExist(err) {
		t.Logf("configs/%s does not exist yet: skipping its check", agentExample)
		return
	}
	c, err := agentconfig.Load(agentExample)
	if err != nil {
		t.Fatalf("%v", err)
	}
	sk := c.Attestation.SymmetricKey
	keyFile := sk.KeyFile
	if keyFile == "" {
		keyFile = sk.GroupKeyFile
	}
	if strings.HasPrefix(keyFile, "/") {
		t.Logf("the key file %s is outside configs/: not checked", keyFile)
		return
	}
	key, err := readKey(c.Path(keyFile))
	if err != nil {
		t.Fatalf("the example's key file: %v", err)
	}

	// The example device registers against the example catalog: the key it
	// signs with verifies against an enrollment there.
	f, err := catalog.Load(catalogExample)
	if err != nil {
		t.Fatal(err)
	}
	if sk.GroupKeyFile != "" {
		key = sas.DeriveDeviceKey(key, c.RegistrationID)
	}
	tok, err := sas.Parse(sas.Build(key, sas.DeviceResource(c.IDScope, c.RegistrationID), time.Now().Add(time.Hour), sas.DeviceKeyName))
	if err != nil {
		t.Fatal(err)
	}
	m, err := (&symkey.Verifier{}).Verify(c.IDScope, c.RegistrationID, tok, time.Now(), f.Set, "")
	if err != nil {
		t.Fatalf("the agent example's device does not attest against %s: %v", catalogExample, err)
	}
	if (m.Individual != nil && !m.Individual.Enabled()) || (m.Group != nil && !m.Group.Enabled()) {
		t.Fatalf("the agent example's device matches a disabled enrollment (%s)", m.KeyRef)
	}
}

// TestKeyFiles checks every key file holds one or two base64 keys of a size DPS
// accepts.
func TestKeyFiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("keys", "*.key"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no key files in configs/keys")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := readKey(f); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// readKey reads the first key of a key file, as the catalog and the agent do,
// and checks the rest of the file.
func readKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, err := sas.DecodeKey(l)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 || len(keys) > 2 {
		return nil, &fs.PathError{Op: "read key", Path: path, Err: fs.ErrInvalid}
	}
	return keys[0], nil
}

// TestCertFiles checks that every certificate in certs/ is a CA the example
// catalog uses: a group's signing certificate or a declared CA.
func TestCertFiles(t *testing.T) {
	f, err := catalog.Load(catalogExample)
	if err != nil {
		t.Fatal(err)
	}
	var used []*x509.Certificate
	for _, ca := range f.CertificateAuthorities {
		used = append(used, ca.Cert)
	}
	for _, g := range f.Groups {
		if x := g.Attestation.X509; x != nil {
			for _, c := range x.SigningCertificates.Certs() {
				used = append(used, c.Cert())
			}
		}
		if tp := g.Attestation.TPM; tp != nil {
			used = append(used, tp.EKCACerts()...)
		}
	}
	files, err := filepath.Glob("certs/*.pem")
	if err != nil || len(files) == 0 {
		t.Fatalf("no certs/*.pem: %v", err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := enrollment.ParseCertificate(string(data))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !enrollment.IsCA(cert) {
			t.Errorf("%s is not a CA certificate", name)
		}
		if !slices.ContainsFunc(used, cert.Equal) {
			t.Errorf("%s is not used by %s", name, catalogExample)
		}
	}
	// The caReferences of the example name CAs it declares.
	for _, g := range f.Groups {
		if x := g.Attestation.X509; x != nil {
			for _, n := range x.CAReferences.Names() {
				if !slices.ContainsFunc(f.CertificateAuthorities, func(ca *catalog.CertificateAuthority) bool { return strings.EqualFold(ca.Name, n) }) {
					t.Errorf("group %s names CA %q, which the example does not declare", g.EnrollmentGroupID, n)
				}
			}
		}
	}
}
