package nodesdk

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The versions pinned in testenv/node/package.json.
var pinned = map[string]string{
	"azure-iot-provisioning-device":      "1.9.1",
	"azure-iot-provisioning-device-http": "1.9.1",
	"azure-iot-provisioning-device-mqtt": "1.8.1",
	"azure-iot-security-symmetric-key":   "1.8.2",
	"azure-iot-security-x509":            "1.7.12",
	"azure-iot-provisioning-service":     "1.11.2",
}

const testKey = "c2VjcmV0LWRldmljZS1rZXktZm9yLXRlc3RzLW9ubHk=" // base64, any bytes do

func TestEnsure(t *testing.T) {
	dir := Ensure(t)
	if again := Ensure(t); again != dir {
		t.Fatalf("second Ensure = %q, first = %q", again, dir)
	}
	if stale, err := needsInstall(dir); err != nil || stale {
		t.Fatalf("needsInstall after Ensure = %v, %v; want false, nil", stale, err)
	}
	for name, want := range pinned {
		t.Run("ok/"+name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, "node_modules", name, "package.json"))
			if err != nil {
				t.Fatal(err)
			}
			var pkg struct{ Version string }
			if err := json.Unmarshal(b, &pkg); err != nil {
				t.Fatal(err)
			}
			if pkg.Version != want {
				t.Errorf("installed %s@%s, want %s", name, pkg.Version, want)
			}
		})
	}
}

// The committed lockfile must not name a registry: .npmrc sets
// omit-lockfile-registry-resolved, and `npm install` without it would undo that.
func TestLockfileHasNoResolvedURLs(t *testing.T) {
	dir := Ensure(t)
	b, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), `"resolved"`); n != 0 {
		t.Errorf("package-lock.json has %d \"resolved\" entries; regenerate it in testenv/node (whose .npmrc omits them)", n)
	}
}

// A .go file under node_modules would become part of `go vet ./...`.
func TestNodeModulesHasNoGoFiles(t *testing.T) {
	dir := Ensure(t)
	err := filepath.WalkDir(filepath.Join(dir, "node_modules"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".go") || d.Name() == "go.mod") {
			t.Errorf("%s would be seen by the go tool", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// writeDeviceCert writes a self-signed device certificate and its key.
func writeDeviceCert(t *testing.T, cn string) X509Files {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := X509Files{CertFile: filepath.Join(dir, "device.pem"), KeyFile: filepath.Join(dir, "device.key")}
	if err := os.WriteFile(f.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestRunDevice(t *testing.T) {
	Ensure(t)
	port := closedPort(t)
	certs := writeDeviceCert(t, "x509-device")
	base := DeviceArgs{Host: "127.0.0.1", Port: port, IDScope: "0ne00ABCDEF", RegistrationID: "dev-01", Timeout: 20 * time.Second}
	with := func(f func(*DeviceArgs)) DeviceArgs {
		a := base
		f(&a)
		return a
	}

	// The SDK reaches the (closed) port and reports the refusal as a result.
	sdkFailures := []struct {
		name string
		args DeviceArgs
	}{
		{"fail/http-closed-port", with(func(a *DeviceArgs) { a.Transport = HTTP; a.SymmetricKey = testKey })},
		{"fail/mqtt-closed-port", with(func(a *DeviceArgs) { a.Transport = MQTT; a.SymmetricKey = testKey })},
		{"fail/http-x509-closed-port", with(func(a *DeviceArgs) { a.Transport = HTTP; a.RegistrationID = "x509-device"; a.X509 = &certs })},
		{"fail/mqtt-x509-closed-port", with(func(a *DeviceArgs) {
			a.Transport = MQTT
			a.RegistrationID = "x509-device"
			a.X509 = &certs
			a.Payload = map[string]any{"modelId": "dtmi:test;1"}
		})},
	}
	for _, tc := range sdkFailures {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res, err := RunDevice(t, t.Context(), "", tc.args)
			if err != nil {
				t.Fatalf("RunDevice: %v", err)
			}
			if res.OK || res.Error == nil {
				t.Fatalf("RunDevice = %+v, want ok=false with an error", res)
			}
			if res.Error.Code != "ECONNREFUSED" {
				t.Errorf("error = %v, want code ECONNREFUSED", res.Error)
			}
		})
	}

	// Misuse of the harness is a Go error, not a result.
	harnessFailures := []struct {
		name    string
		caFile  string
		args    DeviceArgs
		wantErr string
	}{
		{"fail/harness/no-credentials", "", with(func(a *DeviceArgs) { a.Transport = HTTP }), "exactly one of"},
		{"fail/harness/two-credentials", "", with(func(a *DeviceArgs) { a.Transport = HTTP; a.SymmetricKey = testKey; a.X509 = &certs }), "exactly one of"},
		{"fail/harness/mqttws-port", "", with(func(a *DeviceArgs) { a.Transport = MQTTWS; a.SymmetricKey = testKey }), "443"},
		{"fail/harness/unknown-transport", "", with(func(a *DeviceArgs) { a.Transport = "amqp"; a.SymmetricKey = testKey }), "transport"},
		{"fail/harness/missing-ca-file", filepath.Join(t.TempDir(), "nope.pem"), with(func(a *DeviceArgs) { a.Transport = HTTP; a.SymmetricKey = testKey }), "CA file"},
	}
	for _, tc := range harnessFailures {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res, err := RunDevice(t, t.Context(), tc.caFile, tc.args)
			if err == nil {
				t.Fatalf("RunDevice = %+v, nil; want an error mentioning %q", res, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("RunDevice error = %v; want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestRunService(t *testing.T) {
	Ensure(t)
	port := closedPort(t)
	cs := "HostName=127.0.0.1;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=" + testKey

	t.Run("ok/no-ops", func(t *testing.T) {
		t.Parallel()
		res, err := RunService(t, t.Context(), "", ServiceArgs{Host: "127.0.0.1", Port: port, ConnectionString: cs})
		if err != nil {
			t.Fatalf("RunService: %v", err)
		}
		if !res.OK || len(res.Results) != 0 {
			t.Fatalf("RunService = %+v, want ok with no results", res)
		}
	})

	t.Run("fail/closed-port-and-bad-argument", func(t *testing.T) {
		t.Parallel()
		res, err := RunService(t, t.Context(), "", ServiceArgs{
			Port:             port,
			ConnectionString: cs,
			Ops: []ServiceOp{
				{Op: OpGetIndividualEnrollment, Arg: "dev-01"},
				{Op: OpGetIndividualEnrollment}, // the SDK throws: no ID
				{Op: OpCreateEnrollmentGroupQuery, Arg: map[string]any{"query": "*"}, PageSize: 2},
				{Op: OpDeleteEnrollmentGroup, Arg: "group-1", ETag: "*"},
			},
			Timeout: 20 * time.Second,
		})
		if err != nil {
			t.Fatalf("RunService: %v", err)
		}
		if !res.OK {
			t.Fatalf("RunService = %+v, want ok (per-op failures only)", res)
		}
		wantCodes := []string{"ECONNREFUSED", "", "ECONNREFUSED", "ECONNREFUSED"}
		for i, r := range res.Results {
			if r.OK || r.Error == nil {
				t.Errorf("result %d = %+v, want an error", i, r)
				continue
			}
			if r.Error.Code != wantCodes[i] {
				t.Errorf("result %d error = %v, want code %q", i, r.Error, wantCodes[i])
			}
		}
		if e := res.Results[1].Error; e != nil && e.Name != "ReferenceError" {
			t.Errorf("missing ID: error = %v, want the SDK's ReferenceError", e)
		}
	})

	t.Run("fail/bad-connection-string", func(t *testing.T) {
		t.Parallel()
		res, err := RunService(t, t.Context(), "", ServiceArgs{ConnectionString: "not a connection string"})
		if err != nil {
			t.Fatalf("RunService: %v", err)
		}
		if res.OK || res.Error == nil {
			t.Fatalf("RunService = %+v, want ok=false with an error", res)
		}
	})

	harnessFailures := []struct {
		name    string
		args    ServiceArgs
		wantErr string
	}{
		{"fail/harness/unknown-op", ServiceArgs{ConnectionString: cs, Ops: []ServiceOp{{Op: "getEverything"}}}, "unknown op"},
		{"fail/harness/host-mismatch", ServiceArgs{Host: "localhost", ConnectionString: cs}, "HostName"},
		{"fail/harness/page-size-on-get", ServiceArgs{ConnectionString: cs, Ops: []ServiceOp{{Op: OpGetEnrollmentGroup, Arg: "g", PageSize: 3}}}, "pageSize"},
	}
	for _, tc := range harnessFailures {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res, err := RunService(t, t.Context(), "", tc.args)
			if err == nil {
				t.Fatalf("RunService = %+v, nil; want an error mentioning %q", res, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("RunService error = %v; want it to mention %q", err, tc.wantErr)
			}
		})
	}
}
