package config_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/config"
	"github.com/edgeprov/edgeprov/testenv/golden"
)

// TestLoadHubs is TestLoad for the linked hubs' driver settings and the
// allocation settings (testdata/hubs/).
func TestLoadHubs(t *testing.T) {
	tests := []string{
		"ok/drivers",

		"fail/driver-settings",
		"fail/unknown-setting",
		"fail/allocation",
	}
	files, err := filepath.Glob(filepath.Join("testdata", "hubs", "*", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(tests) {
		t.Errorf("testdata/hubs has %d files, the table %d", len(files), len(tests))
	}
	for _, name := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := config.Load(filepath.Join("testdata", "hubs", name+".yaml"))
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
				got = []byte(err.Error() + "\n")
			}
			golden.Check(t, filepath.Join("testdata", "hubs", name+".golden"), got)
		})
	}
}
