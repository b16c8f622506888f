package catalog_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/catalog"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/testenv/golden"
)

// TestLoad loads testdata/<name>.yaml and compares the outcome with
// testdata/<name>.golden: for ok/ cases a JSON dump of the parsed catalog with
// the keys replaced by their decoded length, for fail/ cases the exact error.
func TestLoad(t *testing.T) {
	tests := []string{
		"ok/full",
		"ok/keyfile-two-keys",
		"ok/empty-lists",
		"ok/x509",
		"ok/tpm-group",

		"fail/syntax",
		"fail/unknown-field-top",
		"fail/unknown-field-entry",
		"fail/unknown-field-symmetric-key",
		"fail/unknown-field-deep",
		"fail/missing-version",
		"fail/wrong-version",
		"fail/duplicate-registration-id",
		"fail/duplicate-group-id",
		"fail/registration-id-bad-char",
		"fail/registration-id-bad-last-char",
		"fail/registration-id-129-chars",
		"fail/registration-id-empty",
		"fail/key-not-base64",
		"fail/key-too-short",
		"fail/keyfile-missing",
		"fail/keyfile-and-inline",
		"fail/keyfile-three-keys",
		"fail/keyfile-empty",
		"fail/bad-provisioning-status",
		"fail/unknown-allocation-policy",
		"fail/static-without-one-hub",
		"fail/custom-without-definition",
		"fail/tpm-group",
		"fail/tpm-group-ca-not-a-ca",
		"fail/tpm-group-prefixes",
		"fail/tpm-individual-bad-keys",
		"fail/multiple-errors",
		"fail/x509-certificate-file-missing",
		"fail/x509-garbage",
		"fail/x509-signing-not-ca",
		"fail/x509-file-and-inline",
		"fail/x509-type-mismatch",
		"fail/ca-entries",
		"fail/issuance-policy",
	}
	golden.NoOrphans(t, "yaml", tests)
	for _, name := range tests {
		t.Run(name, func(t *testing.T) {
			f, err := catalog.Load(filepath.Join("testdata", name+".yaml"))
			var got []byte
			switch {
			case strings.HasPrefix(name, "ok/"):
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				got = dump(t, f)
			case err == nil:
				t.Fatalf("Load succeeded, want an error")
			default:
				if f != nil {
					t.Errorf("Load returned a catalog with its error")
				}
				got = []byte(err.Error() + "\n")
			}
			golden.Check(t, filepath.Join("testdata", name+".golden"), got)
		})
	}
}

// dump renders a parsed catalog as JSON with every key replaced by its decoded
// length, so the golden shows which keys were read (inline or from keyFile)
// without holding them. Test keys have distinct lengths, so a primary/secondary
// swap shows too.
func dump(t *testing.T, f *catalog.File) []byte {
	t.Helper()
	type ca struct {
		Name    string `json:"name"`
		Subject string `json:"subject"`
	}
	type out struct {
		Path        string                   `json:"path"`
		Len         int                      `json:"len"`
		CAs         []ca                     `json:"certificateAuthorities,omitempty"`
		Individuals []*enrollment.Individual `json:"individuals"`
		Groups      []*enrollment.Group      `json:"groups"`
	}
	o := out{Path: filepath.ToSlash(f.Path), Len: f.Set.Len(), Individuals: []*enrollment.Individual{}, Groups: []*enrollment.Group{}}
	for _, c := range f.CertificateAuthorities {
		o.CAs = append(o.CAs, ca{c.Name, c.Cert.Subject.String()})
	}
	for _, e := range f.Individuals {
		c := *e
		c.Attestation.SymmetricKey = redact(t, c.Attestation.SymmetricKey)
		c.Attestation.X509 = shortCerts(c.Attestation.X509)
		c.Attestation.TPM = summarizeTPM(t, c.Attestation.TPM)
		o.Individuals = append(o.Individuals, &c)
	}
	for _, g := range f.Groups {
		c := *g
		c.Attestation.SymmetricKey = redact(t, c.Attestation.SymmetricKey)
		c.Attestation.X509 = shortCerts(c.Attestation.X509)
		c.Attestation.TPM = summarizeTPM(t, c.Attestation.TPM)
		o.Groups = append(o.Groups, &c)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(o); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// shortCerts replaces certificate text by its size: the info next to it says
// which certificate was read.
func shortCerts(x *enrollment.X509Attestation) *enrollment.X509Attestation {
	if x == nil {
		return nil
	}
	short := func(cs *enrollment.X509Certificates) *enrollment.X509Certificates {
		if cs == nil {
			return nil
		}
		out := &enrollment.X509Certificates{}
		for _, p := range []struct {
			in  *enrollment.X509CertificateWithInfo
			out **enrollment.X509CertificateWithInfo
		}{{cs.Primary, &out.Primary}, {cs.Secondary, &out.Secondary}} {
			if p.in == nil {
				continue
			}
			c := *p.in
			if c.Certificate != "" {
				c.Certificate = fmt.Sprintf("<%d characters>", len(c.Certificate))
			}
			*p.out = &c
		}
		return out
	}
	return &enrollment.X509Attestation{ClientCertificates: short(x.ClientCertificates), SigningCertificates: short(x.SigningCertificates), CAReferences: x.CAReferences}
}

func redact(t *testing.T, sk *enrollment.SymmetricKeyAttestation) *enrollment.SymmetricKeyAttestation {
	t.Helper()
	if sk == nil {
		return nil
	}
	p, s := sk.Keys()
	// The decoded keys must be those the base64 text says.
	for _, k := range []struct {
		b64 string
		raw []byte
	}{{sk.PrimaryKey, p}, {sk.SecondaryKey, s}} {
		if k.b64 == "" {
			if k.raw != nil {
				t.Errorf("a key is decoded without its base64 text")
			}
			continue
		}
		want, err := sas.DecodeKey(k.b64)
		if err != nil || !bytes.Equal(want, k.raw) {
			t.Errorf("decoded key does not match its base64 text (%v)", err)
		}
	}
	r := func(k []byte) string {
		if k == nil {
			return ""
		}
		return fmt.Sprintf("<redacted %d-byte key>", len(k))
	}
	return &enrollment.SymmetricKeyAttestation{PrimaryKey: r(p), SecondaryKey: r(s)}
}

// summarizeTPM replaces a TPM group's CA certificate texts by the subjects
// that were parsed from them, so the golden shows which certificates were read
// (from files and inline) without holding them; an individual's keys must
// have been parsed.
func summarizeTPM(t *testing.T, a *enrollment.TPMAttestation) *enrollment.TPMAttestation {
	t.Helper()
	if a == nil {
		return nil
	}
	if a.EndorsementKey != "" && a.EK() == nil || a.StorageRootKey != "" && a.SRK() == nil {
		t.Errorf("TPM keys not parsed")
	}
	c := *a
	if len(a.EKCACertificates) > 0 {
		c.EKCACertificates = nil
		for _, cert := range a.EKCACerts() {
			c.EKCACertificates = append(c.EKCACertificates, "<CA certificate "+cert.Subject.String()+">")
		}
	}
	return &c
}

// TestKeyFile checks what the golden dump cannot: the bytes read from a key
// file, primary on the first key line and secondary on the second.
func TestKeyFile(t *testing.T) {
	f, err := catalog.Load(filepath.Join("testdata", "ok", "keyfile-two-keys.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join("testdata", "keys", "two.key"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("testdata/keys/two.key has %d keys", len(lines))
	}
	e := f.Set.Individual("DEVICE-WITH-KEY-FILE")
	if e == nil {
		t.Fatal("the individual enrollment is not in the Set")
	}
	p, s := e.Attestation.SymmetricKey.Keys()
	wantP, _ := sas.DecodeKey(lines[0])
	wantS, _ := sas.DecodeKey(lines[1])
	if !bytes.Equal(p, wantP) || !bytes.Equal(s, wantS) {
		t.Fatalf("keys from keyFile: primary %d bytes, secondary %d bytes; want the file's first then second line", len(p), len(s))
	}
}

// TestParseAbsoluteKeyFile covers a keyFile given as an absolute path, which is
// not resolved against the catalog's directory.
func TestParseAbsoluteKeyFile(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "k.key")
	if err := os.WriteFile(key, []byte("Y2F0YWxvZy10ZXN0LXByaW1hcnkta2V5LTMyYnl0ZXM=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := fmt.Sprintf("version: 1\nenrollments:\n  - registrationId: d\n    attestation: {type: symmetricKey, symmetricKey: {keyFile: %q}}\n", key)
	f, err := catalog.Parse(filepath.Join("elsewhere", "catalog.yaml"), []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := f.Individuals[0].Attestation.SymmetricKey.Keys(); string(p) != "catalog-test-primary-key-32bytes" {
		t.Fatalf("primary key = %q", p)
	}
}

func TestSource(t *testing.T) {
	load := func(name string) *catalog.File {
		f, err := catalog.Load(filepath.Join("testdata", "ok", name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	full, two := load("full"), load("keyfile-two-keys")

	const scope = "0ne0000ABCD"
	s := catalog.NewSource("0NE0000abcd", full)
	tests := []struct {
		name  string
		scope string
		want  *enrollment.Set
	}{
		{"ok/same-scope", scope, full.Set},
		{"ok/scope-case-insensitive", "0NE0000abcd", full.Set},
		{"fail/other-scope", "0ne0000ABCE", nil},
		{"fail/empty-scope", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.Set(tt.scope); got != tt.want {
				t.Fatalf("Set(%q) = %p, want %p", tt.scope, got, tt.want)
			}
		})
	}
	t.Run("ok/swap", func(t *testing.T) {
		s := catalog.NewSource(scope, full)
		if s.Current() != full {
			t.Fatalf("Current is not the catalog given to NewSource")
		}
		s.Swap(two)
		if s.Set(scope) != two.Set || s.Current() != two {
			t.Fatalf("after Swap, Set/Current still serve the old catalog")
		}
		if s.Set(scope).Individual("device-with-key-file") == nil || s.Set(scope).Individual("Device-01") != nil {
			t.Fatalf("after Swap, lookups do not see the new catalog")
		}
		s.Swap(nil)
		if s.Set(scope) != nil || s.Current() != nil {
			t.Fatalf("after Swap(nil), the old catalog is still served")
		}
	})
	t.Run("ok/no-catalog", func(t *testing.T) {
		s := catalog.NewSource(scope, nil)
		if s.Set(scope) != nil || s.Current() != nil {
			t.Fatalf("a Source without catalog serves a Set")
		}
		s.Swap(full)
		if s.Set(scope) != full.Set {
			t.Fatalf("Swap into an empty Source did not install the catalog")
		}
	})
}
