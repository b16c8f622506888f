package e2e_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/testenv/e2e"
)

// ctlEnv is the environment edgeprovctl reads its connection from.
func ctlEnv(t *testing.T, d *e2e.Daemon) []string {
	return []string{"EDGEPROV_CONNECTION_STRING=" + d.ConnectionString(t, d.ServiceAddr), "EDGEPROV_CA_FILE=" + d.CACert}
}

func ctl(t *testing.T, d *e2e.Daemon, args ...string) e2e.Result {
	t.Helper()
	return e2e.Run(t, ctlEnv(t, d), "edgeprovctl", args...)
}

func TestCtlImportListExport(t *testing.T) {
	t.Parallel()
	d := newServiceDaemon(t)
	key := b64([]byte("edgeprovctl import test key 32 b"))

	// 27 good rows, a bad key, a bad ID, a catalog entry, a bad iotEdge.
	var b strings.Builder
	b.WriteString("registrationId,primaryKey,iotHubs,allocationPolicy,iotEdge,tags\n")
	for i := range 27 {
		fmt.Fprintf(&b, "imp-%03d,%s,hub-a.e2e.local,static,false,\"{\"\"line\"\":7}\"\n", i, key)
	}
	b.WriteString("imp-badkey,bm9wZQ==,,,,\nbad id!,,,,,\nsolo-01," + key + ",,,,\nimp-edge," + key + ",,,maybe,\n")
	csvFile := filepath.Join(t.TempDir(), "devices.csv")
	e2e.Write(t, csvFile, b.String())

	r := ctl(t, d, "import", csvFile, "-o", "json")
	var sum struct {
		Rows, Created, Updated, Failed int
		Failures                       []struct {
			Row   int
			ID    string
			Error string
		}
	}
	if err := json.Unmarshal([]byte(r.Stdout), &sum); err != nil || r.Code != 1 {
		t.Fatalf("import: exit %d %v\n%s%s", r.Code, err, r.Stdout, r.Stderr)
	}
	if sum.Rows != 31 || sum.Created != 27 || sum.Updated != 0 || sum.Failed != 4 {
		t.Fatalf("import summary: %+v", sum)
	}
	reasons := map[string]string{}
	for _, f := range sum.Failures {
		reasons[f.ID] = fmt.Sprintf("row %d: %s", f.Row, f.Error)
	}
	for id, want := range map[string]string{"imp-badkey": "row 29: enrollment.attestation.symmetricKey.primaryKey", "bad id!": "row 30:",
		"solo-01": "enrollments.yaml", "imp-edge": "row 32: iotEdge"} {
		if !strings.Contains(reasons[id], want) {
			t.Errorf("failure of %s = %q, want it to contain %q", id, reasons[id], want)
		}
	}

	// Again with --update: the existing ones are replaced.
	r = ctl(t, d, "import", csvFile, "--update", "--batch-size", "10", "-o", "json")
	json.Unmarshal([]byte(r.Stdout), &sum)
	if sum.Created != 0 || sum.Updated != 27 || sum.Failed != 4 {
		t.Fatalf("import --update: %+v\n%s", sum, r.Stderr)
	}
	// A table summary on a non-terminal: no progress bar, the reasons listed.
	r = ctl(t, d, "import", csvFile)
	if r.Code != 1 || !strings.Contains(r.Stdout, "created: 0  updated: 0  failed: 31") || strings.Contains(r.Stderr, "rows/s") {
		t.Fatalf("table summary: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}

	r = ctl(t, d, "enrollment", "list", "--source", "api", "-o", "json")
	var list []map[string]any
	if err := json.Unmarshal([]byte(r.Stdout), &list); err != nil || len(list) != 27 {
		t.Fatalf("list: %d entries, %v\n%s", len(list), err, r.Stderr)
	}
	r = ctl(t, d, "enrollment", "list")
	if r.Code != 0 || !strings.Contains(r.Stdout, "REGISTRATION ID") || !strings.Contains(r.Stdout, "solo-01") || !strings.Contains(r.Stdout, "imp-026") {
		t.Fatalf("table list: %s %s", r.Stdout, r.Stderr)
	}
	r = ctl(t, d, "enrollment", "show", "imp-003")
	if r.Code != 0 || strings.Contains(r.Stdout, key) || !strings.Contains(r.Stdout, "source: api") {
		t.Fatalf("show: %s %s", r.Stdout, r.Stderr)
	}
	r = ctl(t, d, "enrollment", "show", "imp-003", "--keys", "-o", "json")
	if r.Code != 0 || !strings.Contains(r.Stdout, key) {
		t.Fatalf("show --keys: %s %s", r.Stdout, r.Stderr)
	}

	// Groups through flags; a refused create says why.
	r = ctl(t, d, "group", "create", "--group-id", "ctl-grp", "--registration-id-prefix", "ctl-")
	if r.Code != 0 {
		t.Fatalf("group create: %d %s", r.Code, r.Stderr)
	}
	r = ctl(t, d, "group", "create", "--group-id", "ctl-grp")
	if r.Code != 4 || !strings.Contains(r.Stderr, "already exists") {
		t.Fatalf("second group create: %d %s", r.Code, r.Stderr)
	}
	r = ctl(t, d, "group", "list")
	if !strings.Contains(r.Stdout, "ctl-grp") || !strings.Contains(r.Stdout, "line") {
		t.Fatalf("group list: %s", r.Stdout)
	}

	// Export the API-made entries as a catalog: it validates as one.
	out := filepath.Join(t.TempDir(), "exported", "catalog.yaml")
	r = ctl(t, d, "enrollment", "export", "--file", out)
	if r.Code != 0 {
		t.Fatalf("export: %d %s", r.Code, r.Stderr)
	}
	r = e2e.Run(t, nil, "edgeprovd", "check-catalog", out)
	if r.Code != 0 || !strings.Contains(r.Stdout, "27 individual enrollments, 1 enrollment groups") {
		t.Fatalf("check-catalog of the export: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	data, _ := os.ReadFile(out)
	if strings.Contains(string(data), key) || !strings.Contains(string(data), "keyFile: keys/imp-000.key") {
		t.Fatalf("export puts keys inline or names no key file:\n%s", data)
	}
	if fi, err := os.Stat(filepath.Join(filepath.Dir(out), "keys", "imp-000.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}

	// Deletes, with and without the etag.
	r = ctl(t, d, "enrollment", "delete", "imp-000", "--etag", `"stale"`)
	if r.Code != 4 || !strings.Contains(r.Stderr, "412") {
		t.Fatalf("delete with a stale etag: %d %s", r.Code, r.Stderr)
	}
	if r = ctl(t, d, "enrollment", "delete", "imp-000"); r.Code != 0 {
		t.Fatalf("delete: %d %s", r.Code, r.Stderr)
	}
	if r = ctl(t, d, "enrollment", "delete", "solo-01"); r.Code != 4 || !strings.Contains(r.Stderr, "catalog") {
		t.Fatalf("delete of a catalog entry: %d %s", r.Code, r.Stderr)
	}
}

func TestCtlRegistrationsDevicesAndCheck(t *testing.T) {
	t.Parallel()
	d := newServiceDaemon(t)
	cfg, _ := agentConfig(t, d, "line-ctl-1", "group")
	if r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg); r.Code != 0 {
		t.Fatalf("agent: %d %s", r.Code, r.Stderr)
	}
	r := ctl(t, d, "registration", "list", "--group", "line", "-o", "json")
	var regs []struct{ RegistrationID, AssignedHub, DeviceID string }
	if err := json.Unmarshal([]byte(r.Stdout), &regs); err != nil || len(regs) != 1 || regs[0].RegistrationID != "line-ctl-1" {
		t.Fatalf("registration list: %s %s", r.Stdout, r.Stderr)
	}
	hub := regs[0].AssignedHub
	r = ctl(t, d, "device", "list", "--hub", hub)
	if r.Code != 0 || !strings.Contains(r.Stdout, "line-ctl-1") || !strings.Contains(r.Stdout, "group:line#primary-derived") {
		t.Fatalf("device list: %s %s", r.Stdout, r.Stderr)
	}
	r = ctl(t, d, "device", "show", "--hub", hub, "line-ctl-1", "-o", "json")
	if r.Code != 0 || !strings.Contains(r.Stdout, `"deviceId": "line-ctl-1"`) {
		t.Fatalf("device show: %s %s", r.Stdout, r.Stderr)
	}
	r = ctl(t, d, "device", "hubs")
	if !strings.Contains(r.Stdout, "hub-a.e2e.local") || !strings.Contains(r.Stdout, "hub-b.e2e.local") {
		t.Fatalf("device hubs: %s", r.Stdout)
	}
	if r = ctl(t, d, "registration", "delete", "line-ctl-1"); r.Code != 0 {
		t.Fatalf("registration delete: %d %s", r.Code, r.Stderr)
	}
	if r = ctl(t, d, "registration", "show", "line-ctl-1"); r.Code != 4 || !strings.Contains(r.Stderr, "404") {
		t.Fatalf("show after delete: %d %s", r.Code, r.Stderr)
	}

	r = ctl(t, d, "check", "--config", d.Config)
	if r.Code != 0 {
		t.Fatalf("check: %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, want := range []string{"config", "catalog file", "service endpoint", "clock", "served certificate", "store", "device listener", "service listener"} {
		if !strings.Contains(r.Stdout, "ok      "+want) {
			t.Errorf("check output lacks an ok %q line:\n%s", want, r.Stdout)
		}
	}

	// Connection from a file; errors of usage and of trust.
	csFile := filepath.Join(t.TempDir(), "cs")
	e2e.Write(t, csFile, d.ConnectionString(t, d.ServiceAddr)+"\n")
	if r = e2e.Run(t, nil, "edgeprovctl", "--connection-string-file", csFile, "--ca-file", d.CACert, "group", "show", "line"); r.Code != 0 || !strings.Contains(r.Stdout, "source: catalog") {
		t.Fatalf("connection string file: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	if r = e2e.Run(t, nil, "edgeprovctl", "enrollment", "list"); r.Code != 2 || !strings.Contains(r.Stderr, "no connection string") {
		t.Fatalf("without a connection string: %d %s", r.Code, r.Stderr)
	}
	if r = e2e.Run(t, []string{"EDGEPROV_CONNECTION_STRING=" + d.ConnectionString(t, d.ServiceAddr)}, "edgeprovctl", "enrollment", "list"); r.Code != 5 {
		t.Fatalf("without the CA: %d %s", r.Code, r.Stderr)
	}
	wrong := strings.Replace(d.ConnectionString(t, d.ServiceAddr), "SharedAccessKey=", "SharedAccessKey=AAAA", 1)
	if r = e2e.Run(t, []string{"EDGEPROV_CONNECTION_STRING=" + wrong, "EDGEPROV_CA_FILE=" + d.CACert}, "edgeprovctl", "enrollment", "list"); r.Code != 4 || !strings.Contains(r.Stderr, "401") {
		t.Fatalf("with a wrong key: %d %s", r.Code, r.Stderr)
	}
	for _, args := range [][]string{{"--help"}, {"enrollment", "--help"}, {"import", "--help"}, {"registration", "list", "--help"}, {"keys", "derive", "--help"}} {
		if r = e2e.Run(t, nil, "edgeprovctl", args...); r.Code != 0 || !strings.Contains(r.Stdout, "Usage:") {
			t.Errorf("%v: %d %s %s", args, r.Code, r.Stdout, r.Stderr)
		}
	}
	if r = e2e.Run(t, nil, "edgeprovctl", "completion", "bash"); r.Code != 0 || !strings.Contains(r.Stdout, "edgeprovctl") {
		t.Errorf("completion: %d", r.Code)
	}
	if r = e2e.Run(t, nil, "edgeprovctl", "frobnicate"); r.Code != 2 {
		t.Errorf("unknown command: %d", r.Code)
	}
}
