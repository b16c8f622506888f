// Package deps enforces DESIGN.md's dependency rules with `go list`.
package deps

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/edgeprov/edgeprov/"

type pkg struct {
	ImportPath string
	Standard   bool
	Deps       []string
}

func list(t *testing.T, patterns ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-deps=false", "-json"}, patterns...)...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(bufio.NewReader(bytes.NewReader(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestDependencyRules(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		allowed func(dep string) bool
	}{
		{"dpsapi is stdlib only", "./daemon/dpsapi/...", func(dep string) bool {
			return !strings.Contains(strings.SplitN(dep, "/", 2)[0], ".") || strings.HasPrefix(dep, mod+"daemon/dpsapi")
		}},
		{"agent imports only dpsapi, hsm, tpm of edgeprov, and no server stores", "./agent/...", func(dep string) bool {
			switch {
			case strings.HasPrefix(dep, "go.etcd.io/bbolt"), strings.HasPrefix(dep, "github.com/jackc/"):
				return false
			case strings.HasPrefix(dep, mod):
				rest := strings.TrimPrefix(dep, mod)
				return strings.HasPrefix(rest, "agent/") || strings.HasPrefix(rest, "daemon/dpsapi") || strings.HasPrefix(rest, "hsm") || strings.HasPrefix(rest, "tpm")
			}
			return true
		}},
		{"registration imports interfaces, never drivers", "./daemon/registration", notDrivers},
		{"attestation imports no drivers", "./daemon/attestation/...", notDrivers},
		{"endpoints import no drivers", "./daemon/endpoint/...", notDrivers},
		{"the service API and the directory import no drivers", "./daemon/serviceapi/... ./daemon/directory/...", notDrivers},
		// (config, which edgeprovctl check reads, may name PKCS#11 keys: hsm is allowed.)
		{"edgeprovctl reaches the daemon only through its API client", "./daemon/ctl/... ./daemon/adminclient/... ./daemon/cmd/edgeprovctl", func(dep string) bool {
			return notDrivers(dep) || dep == mod+"hsm" || strings.HasPrefix(dep, mod+"hsm/")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkgs := list(t, strings.Fields(tt.pattern)...)
			if len(pkgs) == 0 {
				t.Fatalf("no packages match %s", tt.pattern)
			}
			for _, p := range pkgs {
				for _, d := range p.Deps {
					if !tt.allowed(d) {
						t.Errorf("%s depends on %s", p.ImportPath, d)
					}
				}
			}
		})
	}
}

// notDrivers refuses the concrete stores, hub drivers and hardware packages:
// only daemon/app wires those in.
func notDrivers(dep string) bool {
	for _, d := range []string{"daemon/store/bolt", "daemon/store/postgres", "daemon/hub/local", "daemon/hub/mosquitto", "daemon/hub/iothub", "daemon/hub/webhook", "daemon/app", "hsm"} {
		if dep == mod+d || strings.HasPrefix(dep, mod+d+"/") {
			return false
		}
	}
	return !strings.HasPrefix(dep, "go.etcd.io/bbolt") && !strings.HasPrefix(dep, "github.com/jackc/")
}

// The rule itself must be able to fail: the composition root does import drivers.
func TestRuleCatchesDrivers(t *testing.T) {
	for _, p := range list(t, "./daemon/app") {
		for _, d := range p.Deps {
			if !notDrivers(d) {
				return
			}
		}
	}
	t.Fatal("notDrivers accepted every dependency of daemon/app, which wires the bbolt store")
}
