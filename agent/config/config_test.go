package config_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/agent/config"
	"github.com/edgeprov/edgeprov/testenv/golden"
)

// TestLoad loads testdata/<name>.yaml and compares the outcome with
// testdata/<name>.golden: for ok/ cases a JSON dump of the config and what it
// derives, for fail/ cases the exact error.
func TestLoad(t *testing.T) {
	tests := []string{
		"ok/group-key",
		"ok/own-key-defaults",
		"ok/mqtt-default-port",
		"ok/x509-hsm-csr",
		"ok/x509-file",
		"ok/symkey-hsm",
		"ok/tpm-defaults",
		"ok/tpm-swtpm-handle",

		"fail/empty",
		"fail/missing-fields",
		"fail/both-key-files",
		"fail/no-key-file",
		"fail/bad-idscope",
		"fail/idscope-too-long",
		"fail/bad-timeout",
		"fail/negative-timeout",
		"fail/unknown-field",
		"fail/unknown-field-top",
		"fail/wrong-version",
		"fail/bad-values",
		"fail/x509-keys",
		"fail/x509-missing",
		"fail/bad-uris",
		"fail/csr-incomplete",
		"fail/tpm-bad-handle",
		"fail/tpm-with-symmetric-key",
	}
	golden.NoOrphans(t, "yaml", tests)
	for _, name := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := config.Load(filepath.Join("testdata", name+".yaml"))
			var got []byte
			switch {
			case strings.HasPrefix(name, "ok/"):
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				got = dump(t, c)
			case err == nil:
				t.Fatalf("Load succeeded, want an error")
			default:
				if c != nil {
					t.Errorf("Load returned a config with its error")
				}
				got = []byte(err.Error() + "\n")
			}
			golden.Check(t, filepath.Join("testdata", name+".golden"), got)
		})
	}
}

// TestUnknownFieldLine checks the line number of an unknown field without a
// golden file, so that it cannot be accepted by a careless -update.
func TestUnknownFieldLine(t *testing.T) {
	_, err := config.Load(filepath.Join("testdata", "fail", "unknown-field.yaml"))
	if err == nil || !strings.Contains(err.Error(), "line 9: field primaryKey not found") {
		t.Fatalf("Load = %v, want the unknown field primaryKey on line 9", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "agent.yaml"))
	if err == nil || !strings.HasPrefix(err.Error(), "read agent config: ") {
		t.Fatalf("Load of a missing file = %v", err)
	}
}

func dump(t *testing.T, c *config.Config) []byte {
	t.Helper()
	hp, err := c.HostPort()
	if err != nil {
		t.Fatalf("HostPort of a valid config: %v", err)
	}
	derived := map[string]string{
		"HostPort":        hp,
		"TimeoutDuration": c.TimeoutDuration().String(),
		"TrustBundle":     filepath.ToSlash(c.Path(c.TrustBundle)),
		"StateFile":       filepath.ToSlash(c.Path(c.StateFile)),
	}
	if sk := c.Attestation.SymmetricKey; sk != nil {
		derived["KeyFile"] = filepath.ToSlash(c.Path(sk.KeyFile))
		derived["GroupKeyFile"] = filepath.ToSlash(c.Path(sk.GroupKeyFile))
	}
	if x := c.Attestation.X509; x != nil {
		derived["X509CertFile"] = filepath.ToSlash(c.Path(x.CertFile))
		derived["X509KeyFile"] = filepath.ToSlash(c.Path(x.KeyFile))
	}
	if t := c.Attestation.TPM; t != nil {
		derived["TPMHandle"] = fmt.Sprintf("0x%08x", t.Handle())
	}
	if r := c.CSR; r != nil {
		derived["CSRKeyFile"] = filepath.ToSlash(c.Path(r.KeyFile))
		derived["CSRChainFile"] = filepath.ToSlash(c.Path(r.ChainFile))
	}
	out := struct {
		Config  *config.Config
		Derived map[string]string
	}{c, derived}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}
