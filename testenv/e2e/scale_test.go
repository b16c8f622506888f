package e2e_test

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/edgeprov/edgeprov/testenv/e2e"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

// The load generator through the binary, with its ceiling run.
func TestBenchCommand(t *testing.T) {
	t.Parallel()
	d := newDaemon(t)
	d.Start(t)
	r := e2e.Run(t, nil, "edgeprovctl", "bench", "--addr", d.DeviceAddr, "--ca-file", d.CACert, "--id-scope", d.IDScope,
		"--group-key-file", filepath.Join(d.Dir, "group.key"), "--prefix", "line-bench-", "--devices", "60", "--concurrency", "8",
		"--poll-wait", "0s", "--ceiling")
	if r.Code != 0 {
		t.Fatalf("bench: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	var sum struct {
		Devices, Succeeded, Failed int
		RegistrationsPerSecond     float64
		P99Ms                      float64
		CeilingPerSecond           float64
		FractionOfCe               float64 `json:"fractionOfCeiling"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &sum); err != nil {
		t.Fatalf("summary: %v\n%s", err, r.Stdout)
	}
	if sum.Devices != 60 || sum.Succeeded != 60 || sum.RegistrationsPerSecond <= 0 || sum.P99Ms <= 0 || sum.CeilingPerSecond <= 0 || sum.FractionOfCe <= 0 {
		t.Fatalf("summary %+v\n%s", sum, r.Stdout)
	}
	// The same devices are counted in the daemon's metrics.
	if got := metric(t, d, `edgeprov_registrations_total\{attestation="symmetricKey",enrollment="line",hub="[^"]+",result="assigned"\}`); got < 60 {
		t.Fatalf("registrations metric %v, want at least 60", got)
	}
	// A wrong key makes the bench fail and the failure counted by code.
	r = e2e.Run(t, nil, "edgeprovctl", "bench", "--addr", d.DeviceAddr, "--ca-file", d.CACert, "--id-scope", d.IDScope,
		"--group-key-file", filepath.Join(d.Dir, "blocked.key"), "--prefix", "line-x-", "--devices", "3", "--concurrency", "3", "--poll-wait", "0s")
	if r.Code != 4 || !regexp.MustCompile(`"401002": 3`).MatchString(r.Stdout) {
		t.Fatalf("bench with a wrong key: exit %d\n%s", r.Code, r.Stdout)
	}
}

// The load generator's X.509 devices over MQTT: it issues each a certificate
// from the group's CA and registers them with mTLS, and its ceiling speaks
// MQTT and verifies the same certificates.
func TestBenchCommandX509OverMQTT(t *testing.T) {
	t.Parallel()
	root := testpki.NewRoot(t, "e2e bench factory")
	d := e2e.NewDaemon(t, e2e.Options{MQTT: true, Catalog: `version: 1
enrollmentGroups:
  - enrollmentGroupId: bench-x509
    attestation:
      type: x509
      x509: {signingCertificates: {primary: {certificateFile: root.pem}}}
`, CatalogFiles: map[string]string{"root.pem": root.PEM()}})
	d.Start(t)
	caCert, caKey := root.WriteFiles(t, t.TempDir(), "factory", root.PEM())
	r := e2e.Run(t, nil, "edgeprovctl", "bench", "--addr", d.MQTTAddr, "--transport", "mqtt", "--ca-file", d.CACert, "--id-scope", d.IDScope,
		"--x509-ca-cert", caCert, "--x509-ca-key", caKey, "--prefix", "line-mx-", "--devices", "40", "--concurrency", "8",
		"--poll-wait", "0s", "--key-exchange", "p256", "--ceiling")
	if r.Code != 0 {
		t.Fatalf("bench: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	var sum struct {
		Succeeded        int
		CeilingPerSecond float64
	}
	if err := json.Unmarshal([]byte(r.Stdout), &sum); err != nil || sum.Succeeded != 40 || sum.CeilingPerSecond <= 0 {
		t.Fatalf("summary %+v (%v)\n%s", sum, err, r.Stdout)
	}
	if got := metric(t, d, `edgeprov_registrations_total\{attestation="x509",enrollment="bench-x509",hub="[^"]+",result="assigned"\}`); got != 40 {
		t.Fatalf("X.509 registrations metric %v, want 40", got)
	}
	// Certificates from another CA are refused at the handshake: counted as
	// failures, exit 4.
	other := testpki.NewRoot(t, "e2e bench factory")
	caCert, caKey = other.WriteFiles(t, t.TempDir(), "other", other.PEM())
	r = e2e.Run(t, nil, "edgeprovctl", "bench", "--addr", d.MQTTAddr, "--transport", "mqtt", "--ca-file", d.CACert, "--id-scope", d.IDScope,
		"--x509-ca-cert", caCert, "--x509-ca-key", caKey, "--prefix", "line-mx-", "--devices", "3", "--concurrency", "3", "--poll-wait", "0s")
	if r.Code != 4 || !regexp.MustCompile(`"failed": 3`).MatchString(r.Stdout) {
		t.Fatalf("bench with an untrusted CA: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
}

func TestMetricsAndProbes(t *testing.T) {
	t.Parallel()
	d := newDaemon(t)
	d.Start(t)
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, "http://"+d.MetricsAddr+p); code != 200 {
			t.Fatalf("%s: %d %s", p, code, body)
		}
	}
	cfg, _ := agentConfig(t, d, "solo-01", b64(groupKey)) // wrong key
	e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg)
	if got := metric(t, d, `edgeprov_registrations_total\{attestation="unknown",enrollment="",hub="",result="unauthorized"\}`); got != 1 {
		t.Fatalf("unauthorized metric = %v, want 1", got)
	}
	if got := metric(t, d, `edgeprov_operations_total`); got != 0 {
		t.Fatalf("a refused registration was billed: operations = %v", got)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the sum of the series matching the pattern.
func metric(t *testing.T, d *e2e.Daemon, series string) float64 {
	t.Helper()
	_, body := get(t, "http://"+d.MetricsAddr+"/metrics")
	ms := regexp.MustCompile(`(?m)^`+series+` ([0-9.e+]+)$`).FindAllStringSubmatch(body, -1)
	if ms == nil {
		t.Fatalf("no series %s in\n%s", series, body)
	}
	sum := 0.0
	for _, m := range ms {
		v, _ := strconv.ParseFloat(m[1], 64)
		sum += v
	}
	return sum
}
