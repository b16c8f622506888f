package ctl

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
)

func TestCommands(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{5}, 32)
	keyFile := filepath.Join(dir, "k")
	os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		check    func(t *testing.T, out string)
	}{
		{"ok/keys-derive", []string{"keys", "derive", "--group-key-file", keyFile, "--registration-id", "dev-1"}, 0, func(t *testing.T, out string) {
			if want := base64.StdEncoding.EncodeToString(sas.DeriveDeviceKey(key, "dev-1")); strings.TrimSpace(out) != want {
				t.Fatalf("derived %q, want %q", out, want)
			}
		}},
		{"ok/device-sas", []string{"sas", "--key-file", keyFile, "--scope", "0ne00ABCDEF", "--registration-id", "dev-1", "--ttl", "10m"}, 0, func(t *testing.T, out string) {
			tok, err := sas.Parse(strings.TrimSpace(out))
			if err != nil || tok.Verify(key) != nil || tok.Resource != "0ne00ABCDEF/registrations/dev-1" || tok.KeyName != "registration" ||
				tok.Expiry.Before(time.Now().Add(9*time.Minute)) {
				t.Fatalf("token %q: %+v %v", out, tok, err)
			}
		}},
		{"ok/service-sas", []string{"sas", "--key-file", keyFile, "--resource", "edge.local", "--key-name", "provisioningserviceowner"}, 0, func(t *testing.T, out string) {
			tok, err := sas.Parse(strings.TrimSpace(out))
			if err != nil || tok.Verify(key) != nil || tok.KeyName != "provisioningserviceowner" {
				t.Fatalf("token %q: %v", out, err)
			}
		}},
		{"fail/bad-registration-id", []string{"keys", "derive", "--group-key-file", keyFile, "--registration-id", "bad id"}, 2, nil},
		{"fail/missing-key-file", []string{"keys", "derive", "--registration-id", "dev-1"}, 3, nil},
		{"fail/sas-without-target", []string{"sas", "--key-file", keyFile}, 2, nil},
		{"fail/unknown-command", []string{"frobnicate"}, 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := Main(context.Background(), tt.args, &out, &errb)
			code := 0
			if ee, ok := err.(*ExitError); ok {
				code = ee.Code
			} else if err != nil {
				code = 1
			}
			if code != tt.wantCode {
				t.Fatalf("exit %d (%v), want %d; stderr %s", code, err, tt.wantCode, errb.String())
			}
			if tt.check != nil {
				tt.check(t, out.String())
			}
		})
	}
}
