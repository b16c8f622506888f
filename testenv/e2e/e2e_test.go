package e2e_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/agent/state"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/testenv/e2e"
	"github.com/edgeprov/edgeprov/testenv/softhsm"
)

// hsmEnv holds the SoftHSM2 tokens of the agent and daemon tests; the
// binaries get it through hsmEnv.EnvVar().
var hsmEnv *softhsm.Env

// SoftHSM2 tokens: the device's, the daemon's issuing CA (a second token) and
// the daemon's secrets key.
const (
	tokDevice  = "agent-device"
	tokCA      = "issuing-ca"
	tokSecrets = "daemon-secrets"
)

func TestMain(m *testing.M) {
	hsmEnv = softhsm.Setup(m, tokDevice, tokCA, tokSecrets)
	code := m.Run()
	e2e.Cleanup()
	hsmEnv.Close()
	os.Exit(code)
}

var (
	groupKey      = []byte("e2e group key, thirty-two bytes!")
	individualKey = []byte("e2e individual key: 32 bytes....")
	b64           = base64.StdEncoding.EncodeToString
)

// catalog has a group (line-), an individual device, and a disabled entry that
// blocks one group device (its key is the group-derived one).
var catalog = fmt.Sprintf(`version: 1
enrollments:
  - registrationId: solo-01
    deviceId: solo-device
    attestation: {type: symmetricKey, symmetricKey: {primaryKey: %s}}
    allocationPolicy: static
    iotHubs: [hub-b.e2e.local]
  - registrationId: line-blocked
    attestation: {type: symmetricKey, symmetricKey: {keyFile: blocked.key}}
    provisioningStatus: disabled
enrollmentGroups:
  - enrollmentGroupId: line
    registrationIdPrefixes: [line-]
    attestation: {type: symmetricKey, symmetricKey: {keyFile: group.key}}
`, b64(individualKey))

func newDaemon(t *testing.T) *e2e.Daemon {
	return e2e.NewDaemon(t, e2e.Options{Catalog: catalog, CatalogFiles: map[string]string{
		"group.key":   b64(groupKey) + "\n",
		"blocked.key": b64(sas.DeriveDeviceKey(groupKey, "line-blocked")) + "\n",
	}})
}

// agentConfig writes an agent config for regID; key is "group" (derive from the
// group key file) or a base64 device key.
func agentConfig(t *testing.T, d *e2e.Daemon, regID, key string) (cfg, stateFile string) {
	return agentConfigFor(t, d, regID, key, "https")
}

// agentConfigFor is agentConfig over a transport (https or mqtt).
func agentConfigFor(t *testing.T, d *e2e.Daemon, regID, key, transport string) (cfg, stateFile string) {
	dir := t.TempDir()
	host := d.DeviceAddr
	if transport == "mqtt" {
		host = d.MQTTAddr
	}
	cfg, stateFile = filepath.Join(dir, "agent.yaml"), filepath.Join(dir, "state.json")
	sk := "groupKeyFile: " + filepath.Join(d.Dir, "group.key")
	if key != "group" {
		e2e.Write(t, filepath.Join(dir, "device.key"), key+"\n")
		sk = "keyFile: device.key"
	}
	e2e.Write(t, cfg, fmt.Sprintf(`version: 1
provisioningHost: %s
idScope: %s
registrationId: %s
trustBundle: %s
transport: %s
attestation:
  type: symmetricKey
  symmetricKey: {%s}
payload: {line: 7, shift: night}
stateFile: %s
timeout: 30s
`, host, d.IDScope, regID, d.CACert, transport, sk, stateFile))
	return cfg, stateFile
}

func TestAgentProvisionsAndSurvivesRestart(t *testing.T) {
	t.Parallel()
	d := newDaemon(t)
	d.Start(t)

	cfg, stateFile := agentConfig(t, d, "line-0001", "group")
	r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg)
	if r.Code != 0 {
		t.Fatalf("agent: exit %d\n%s%s\n%s", r.Code, r.Stdout, r.Stderr, d.Log())
	}
	first, err := state.Load(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if first.Status != "assigned" || first.DeviceID != "line-0001" || first.Substatus != "initialAssignment" ||
		!strings.HasSuffix(first.AssignedHub, ".e2e.local") || compact(first.Payload) != `{"line":7,"shift":"night"}` {
		t.Fatalf("result file: %+v", first)
	}

	// The next start uses the cached result and does not register.
	r = e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg)
	var out struct{ Cached bool }
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &out) != nil || !out.Cached {
		t.Fatalf("second run: exit %d %s", r.Code, r.Stdout)
	}
	if n := strings.Count(d.Log(), "registrationId=line-0001 attestation"); n != 1 {
		t.Fatalf("daemon logged %d registrations of line-0001, want 1", n)
	}

	// Restart the daemon: the record survives, and a forced re-registration
	// returns the same hub.
	d.Stop(t)
	d.Start(t)
	cfg, stateFile = agentConfig(t, d, "line-0001", "group")
	r = e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg, "--force")
	if r.Code != 0 {
		t.Fatalf("agent after restart: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	second, err := state.Load(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if second.AssignedHub != first.AssignedHub || second.DeviceID != first.DeviceID || second.Substatus != "initialAssignment" {
		t.Fatalf("after restart: %+v, before: %+v", second, first)
	}

	// init refuses to overwrite the instance.
	d.Stop(t)
	r = e2e.Run(t, nil, "edgeprovd", "init", "--config", d.Config)
	if r.Code == 0 || !strings.Contains(r.Stderr, "refusing to overwrite") {
		t.Fatalf("second init: exit %d %s", r.Code, r.Stderr)
	}
}

func compact(raw []byte) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return "invalid JSON: " + string(raw)
	}
	return b.String()
}

func TestAgentOutcomes(t *testing.T) {
	t.Parallel()
	d := newDaemon(t)
	d.Start(t)
	tests := []struct {
		name, regID, key string
		wantCode         int
		wantOut          string
	}{
		{"ok/individual", "solo-01", b64(individualKey), 0, `"assignedHub": "hub-b.e2e.local"`},
		{"ok/group-derived", "line-0042", "group", 0, `"deviceId": "line-0042"`},
		{"fail/wrong-key", "solo-01", b64(groupKey), 4, "401002"},
		{"fail/unknown-device", "stranger-1", b64(groupKey), 4, "401002"},
		{"fail/disabled-inside-group", "line-blocked", "group", 4, "401003"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _ := agentConfig(t, d, tt.regID, tt.key)
			r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg)
			if r.Code != tt.wantCode || !strings.Contains(r.Stdout+r.Stderr, tt.wantOut) {
				t.Fatalf("exit %d, want %d with %q\n%s%s", r.Code, tt.wantCode, tt.wantOut, r.Stdout, r.Stderr)
			}
		})
	}
	t.Run("fail/daemon-down", func(t *testing.T) {
		cfg, _ := agentConfig(t, d, "line-0043", "group")
		d.Stop(t)
		r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg)
		if r.Code != 5 {
			t.Fatalf("exit %d, want 5 (unreachable)\n%s", r.Code, r.Stderr)
		}
	})
}

// TestAgentOverMQTT provisions with the agent's MQTT transport.
func TestAgentOverMQTT(t *testing.T) {
	t.Parallel()
	d := newMQTTDaemon(t, "")
	d.Start(t)
	tests := []struct {
		name, regID, key string
		wantCode         int
		wantOut          string
	}{
		{"ok/individual", "solo-01", b64(individualKey), 0, `"assignedHub": "hub-b.e2e.local"`},
		{"ok/group-derived", "line-mqtt-0042", "group", 0, `"deviceId": "line-mqtt-0042"`},
		{"fail/wrong-key", "solo-01", b64(groupKey), 4, "401002"},
		{"fail/unknown-device", "stranger-2", b64(groupKey), 4, "401002"},
		{"fail/disabled-inside-group", "line-blocked", "group", 4, "401003"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, stateFile := agentConfigFor(t, d, tt.regID, tt.key, "mqtt")
			r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg)
			if r.Code != tt.wantCode || !strings.Contains(r.Stdout+r.Stderr, tt.wantOut) {
				t.Fatalf("exit %d, want %d with %q\n%s%s\n%s", r.Code, tt.wantCode, tt.wantOut, r.Stdout, r.Stderr, d.Log())
			}
			if tt.wantCode != 0 {
				return
			}
			res, err := state.Load(stateFile)
			if err != nil {
				t.Fatal(err)
			}
			if compact(res.Payload) != `{"line":7,"shift":"night"}` || res.Status != "assigned" {
				t.Fatalf("result %+v", res)
			}
		})
	}
	t.Run("fail/daemon-down", func(t *testing.T) {
		cfg, _ := agentConfigFor(t, d, "line-mqtt-0043", "group", "mqtt")
		d.Stop(t)
		r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg)
		if r.Code != 5 {
			t.Fatalf("exit %d, want 5 (unreachable)\n%s", r.Code, r.Stderr)
		}
	})
}

func TestCheckCatalogReportsLines(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	e2e.Write(t, bad, "version: 1\nenrollments:\n  - registrationId: ok-1\n    attestation: {type: symmetricKey, symmetricKey: {primaryKey: "+b64(groupKey)+"}}\n  - registrationId: bad!\n    attestation: {type: symmetricKey, symmetricKey: {primaryKey: nope}}\n")
	r := e2e.Run(t, nil, "edgeprovd", "check-catalog", bad)
	if r.Code != 3 || !strings.Contains(r.Stderr, "bad.yaml:5: enrollments[1].registrationId") || !strings.Contains(r.Stderr, "bad.yaml:6: enrollments[1].attestation.symmetricKey.primaryKey") {
		t.Fatalf("exit %d\n%s", r.Code, r.Stderr)
	}
	r = e2e.Run(t, nil, "edgeprovd", "check-catalog", filepath.Join(e2e.RepoRoot(t), "configs", "enrollments.example.yaml"))
	if r.Code != 0 {
		t.Fatalf("example catalog: exit %d %s", r.Code, r.Stderr)
	}
}
