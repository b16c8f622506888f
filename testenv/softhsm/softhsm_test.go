package softhsm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/hsm"
)

func TestNew(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hsm")
	e, err := New(dir, "dev-agent", "with space/slash")
	if err != nil {
		t.Fatal(err)
	}

	conf, err := os.ReadFile(e.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(conf), "directories.tokendir = "+e.TokenDir+"\n") {
		t.Errorf("config does not use the private token dir:\n%s", conf)
	}
	for _, system := range []string{"/etc/softhsm", "/var/lib/softhsm"} {
		if strings.Contains(string(conf), system) {
			t.Errorf("config mentions %s:\n%s", system, conf)
		}
	}
	if !strings.HasPrefix(e.TokenDir, dir) {
		t.Errorf("TokenDir %s outside %s", e.TokenDir, dir)
	}
	if entries, _ := os.ReadDir(e.TokenDir); len(entries) != 2 {
		t.Errorf("token dir holds %d entries, want 2", len(entries))
	}

	fi, err := os.Stat(e.PINFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("PIN file mode %v, want 0600", fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(e.PINFile); strings.TrimSpace(string(b)) != e.PIN || e.PIN == "" {
		t.Errorf("PIN file holds %q, want the PIN", b)
	}
	if e.EnvVar() != "SOFTHSM2_CONF="+e.ConfigPath {
		t.Errorf("EnvVar() = %q", e.EnvVar())
	}

	// A child process with EnvVar sees exactly our tokens.
	cmd := exec.Command("softhsm2-util", "--show-slots")
	cmd.Env = append(withoutConf(os.Environ()), e.EnvVar())
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range e.Tokens {
		if tok.Serial == "" || !strings.Contains(string(out), tok.Serial) || !strings.Contains(string(out), tok.Label) {
			t.Errorf("token %+v not in --show-slots output:\n%s", tok, out)
		}
	}

	for _, label := range []string{"dev-agent", "with space/slash"} {
		tok := e.Token(label)
		u, err := hsm.ParseURI(tok.URI)
		if err != nil {
			t.Fatalf("Token(%q).URI: %v", label, err)
		}
		if u.Token != label || u.ModulePath != e.ModulePath || u.PINSource != "file:"+e.PINFile {
			t.Errorf("Token(%q).URI = %s parses to %+v", label, tok.URI, u)
		}
		k, err := hsm.ParseURI(e.KeyURI(label, "device key"))
		if err != nil {
			t.Fatalf("KeyURI: %v", err)
		}
		if k.Token != label || k.Object != "device key" {
			t.Errorf("KeyURI parses to %+v", k)
		}
	}
}

func TestNewFails(t *testing.T) {
	tests := []struct {
		name   string
		env    map[string]string
		labels []string
		want   string
	}{
		{name: "fail/no-softhsm2-util", env: map[string]string{"PATH": "/nonexistent"}, labels: []string{"a"}, want: InstallHint},
		{name: "fail/no-module", env: map[string]string{ModuleEnv: "/nonexistent/libsofthsm2.so"}, labels: []string{"a"}, want: InstallHint},
		{name: "fail/no-labels", want: "at least one token"},
		{name: "fail/duplicate-label", labels: []string{"a", "a"}, want: "no duplicates"},
		{name: "fail/label-too-long", labels: []string{strings.Repeat("x", 33)}, want: "1 to 32 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := New(t.TempDir(), tc.labels...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New() error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
