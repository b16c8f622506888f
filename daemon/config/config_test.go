package config_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/config"
	"github.com/edgeprov/edgeprov/testenv/golden"
)

// TestLoad loads testdata/<name>.yaml and compares the outcome with
// testdata/<name>.golden: for ok/ cases a JSON dump of the config after
// defaults, with the paths it derives; for fail/ cases the exact error.
func TestLoad(t *testing.T) {
	tests := []string{
		"ok/defaults",
		"ok/full",
		"ok/postgres",
		"ok/issuance",
		"ok/issuance-files",
		"ok/mqtt",
		"ok/mqtt-defaults",

		"fail/missing-version",
		"fail/wrong-version",
		"fail/syntax",
		"fail/unknown-field",
		"fail/bad-duration",
		"fail/duration-out-of-range",
		"fail/negative-duration",
		"fail/bad-listen-no-port",
		"fail/bad-listen-ipv6-unbracketed",
		"fail/weight-out-of-range",
		"fail/duplicate-hubs",
		"fail/unknown-driver",
		"fail/issuing-ca",
		"fail/no-hubs",
		"fail/hub-missing-fields",
		"fail/multiple-errors",
		"fail/bad-store",
		"fail/bad-mqtt",
		"fail/service-policies",
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

func dump(t *testing.T, c *config.Config) []byte {
	t.Helper()
	out := struct {
		Config *config.Config
		Paths  map[string]string
	}{c, map[string]string{
		"File":           c.File(),
		"Catalog":        c.Path(c.Catalog),
		"StorePath":      c.StorePath(),
		"TLSDir":         c.TLSDir(),
		"CACertPath":     c.CACertPath(),
		"CAKeyPath":      c.CAKeyPath(),
		"ServerCertPath": c.ServerCertPath(),
		"ServerKeyPath":  c.ServerKeyPath(),
		"PolicyDir":      c.PolicyDir(),
		"SecretsKeyPath": c.SecretsKeyPath(),
	}}
	for k, v := range out.Paths {
		out.Paths[k] = filepath.ToSlash(v)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// TestDefaults checks, beyond the golden dump, that a duration written as 0s is
// kept (the file said so) while an absent one gets its default.
func TestDefaults(t *testing.T) {
	const hubs = "linkedHubs: [{name: h, hostName: h.example.net}]\n"
	tests := []struct {
		name string
		yaml string
		skew time.Duration
	}{
		{"ok/absent", "version: 1\nstateDir: s\n" + hubs, 5 * time.Minute},
		{"ok/null", "version: 1\nstateDir: s\ndevice: {sasClockSkew: null}\n" + hubs, 5 * time.Minute},
		{"ok/explicit-zero", "version: 1\nstateDir: s\ndevice: {sasClockSkew: 0s}\n" + hubs, 0},
		{"ok/explicit", "version: 1\nstateDir: s\ndevice: {sasClockSkew: 90s}\n" + hubs, 90 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse("c.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if c.Device.SASClockSkew.Duration != tt.skew {
				t.Fatalf("sasClockSkew = %v, want %v", c.Device.SASClockSkew.Duration, tt.skew)
			}
		})
	}
	t.Run("fail/explicit-zero-retention-is-not-defaulted", func(t *testing.T) {
		_, err := config.Parse("c.yaml", []byte("version: 1\nstateDir: s\noperations: {retention: 0s}\n"+hubs))
		if err == nil || err.Error() != "c.yaml:3: operations.retention: must be at least 1m" {
			t.Fatalf("Parse = %v", err)
		}
	})
}

func TestPaths(t *testing.T) {
	const hubs = "linkedHubs: [{name: h, hostName: h.example.net}]\n"
	abs := t.TempDir()
	tests := []struct {
		name      string
		file      string
		stateDir  string
		arg       string
		wantPath  string
		wantStore string
	}{
		{"ok/relative-to-a-relative-config", "etc/edgeprov/edgeprovd.yaml", "state", "cat.yaml", "etc/edgeprov/cat.yaml", "etc/edgeprov/state/edgeprov.db"},
		{"ok/parent-directory", "etc/edgeprov/edgeprovd.yaml", "../lib/edgeprov", "../cat.yaml", "etc/cat.yaml", "etc/lib/edgeprov/edgeprov.db"},
		{"ok/config-in-working-directory", "edgeprovd.yaml", "state", "cat.yaml", "cat.yaml", "state/edgeprov.db"},
		{"ok/absolute-kept", "etc/edgeprovd.yaml", abs, filepath.Join(abs, "cat.yaml"), filepath.Join(abs, "cat.yaml"), filepath.Join(abs, "edgeprov.db")},
		{"ok/relative-to-an-absolute-config", filepath.Join(abs, "edgeprovd.yaml"), "state", "keys/k", filepath.Join(abs, "keys/k"), filepath.Join(abs, "state/edgeprov.db")},
		{"ok/empty-stays-empty", "etc/edgeprovd.yaml", "s", "", "", "etc/s/edgeprov.db"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse(tt.file, []byte("version: 1\nstateDir: "+tt.stateDir+"\n"+hubs))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Path(tt.arg); got != filepath.FromSlash(tt.wantPath) {
				t.Errorf("Path(%q) = %q, want %q", tt.arg, got, tt.wantPath)
			}
			if got := c.StorePath(); got != filepath.FromSlash(tt.wantStore) {
				t.Errorf("StorePath() = %q, want %q", got, tt.wantStore)
			}
			if c.File() != tt.file {
				t.Errorf("File() = %q, want %q", c.File(), tt.file)
			}
		})
	}

	t.Run("ok/load-from-temp-dir", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "edgeprovd.yaml")
		if err := os.WriteFile(file, []byte("version: 1\nstateDir: state\ncatalog: enrollments.yaml\n"+hubs), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := config.Load(file)
		if err != nil {
			t.Fatal(err)
		}
		if c.Path(c.Catalog) != filepath.Join(dir, "enrollments.yaml") || c.TLSDir() != filepath.Join(dir, "state", "tls") {
			t.Fatalf("catalog %q, TLS dir %q", c.Path(c.Catalog), c.TLSDir())
		}
	})
	t.Run("fail/load-missing-file", func(t *testing.T) {
		_, err := config.Load(filepath.Join(t.TempDir(), "nope.yaml"))
		if err == nil || !strings.HasPrefix(err.Error(), "read config: ") || !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Load of a missing file = %v", err)
		}
	})
}
