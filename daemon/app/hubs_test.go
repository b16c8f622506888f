package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeprov/edgeprov/daemon/config"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/registration"
	testbroker "github.com/edgeprov/edgeprov/testenv/mosquitto"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

var groupKey = []byte("app tests group key, 32 bytes ..")

// daemon is an in-process edgeprovd built from files in a temp dir.
type daemon struct {
	*Daemon
	dir, cfgFile, catFile string
	log                   *logBuffer
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const catalogYAML = `version: 1
enrollmentGroups:
  - enrollmentGroupId: fleet
    registrationIdPrefixes: [fleet-]
    provisioningStatus: %s
    attestation: {type: symmetricKey, symmetricKey: {primaryKey: %s}}
`

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func configYAML(hubs string) string {
	return "version: 1\nstateDir: state\ncatalog: enrollments.yaml\ndevice: {listen: \"127.0.0.1:0\"}\nlinkedHubs:\n" + hubs
}

func newDaemon(t *testing.T, hubs string, files map[string]string) *daemon {
	t.Helper()
	return newDaemonWithCatalog(t, hubs, files, fmt.Sprintf(catalogYAML, "enabled", base64.StdEncoding.EncodeToString(groupKey)))
}

func newDaemonWithCatalog(t *testing.T, hubs string, files map[string]string, catalog string) *daemon {
	t.Helper()
	dir := t.TempDir()
	d := &daemon{dir: dir, cfgFile: filepath.Join(dir, "edgeprovd.yaml"), catFile: filepath.Join(dir, "enrollments.yaml"), log: &logBuffer{}}
	for name, content := range files {
		writeFile(t, filepath.Join(dir, name), content)
	}
	writeFile(t, d.cfgFile, configYAML(hubs))
	writeFile(t, d.catFile, catalog)
	cfg, err := config.Load(d.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(context.Background(), cfg, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if d.Daemon, err = Build(context.Background(), cfg, slog.New(slog.NewTextHandler(d.log, &slog.HandlerOptions{Level: slog.LevelDebug}))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func (d *daemon) setEnabled(t *testing.T, on bool) {
	t.Helper()
	status := "enabled"
	if !on {
		status = "disabled"
	}
	writeFile(t, d.catFile, fmt.Sprintf(catalogYAML, status, base64.StdEncoding.EncodeToString(groupKey)))
}

// register registers a fleet device and polls once.
func (d *daemon) register(t *testing.T, regID string) *dpsapi.RegistrationOperationStatus {
	t.Helper()
	ctx := context.Background()
	tok := sas.Build(sas.DeriveDeviceKey(groupKey, regID), sas.DeviceResource(d.IDScope(), regID), time.Now().Add(time.Hour), "registration")
	op, err := d.Service().Register(ctx, registration.RegisterRequest{Scope: d.IDScope(), RegistrationID: regID, Authorization: tok})
	if err != nil {
		t.Fatal(err)
	}
	st, err := d.Service().OperationStatus(ctx, registration.PollRequest{Scope: d.IDScope(), RegistrationID: regID, OperationID: op.OperationID, Authorization: tok})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (d *daemon) spread(t *testing.T, prefix string, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for i := range n {
		st := d.register(t, fmt.Sprintf("fleet-%s-%03d", prefix, i))
		if st.Status != dpsapi.StatusAssigned {
			t.Fatalf("%+v", st.RegistrationState)
		}
		counts[st.RegistrationState.AssignedHub]++
	}
	return counts
}

// TestReloadLinkedHubs: hubs are added, reweighted and drained by editing
// the config and reloading, without a restart; a config that does not
// validate, or whose driver cannot be built, changes nothing.
func TestReloadLinkedHubs(t *testing.T) {
	const two = "  - {name: a, hostName: a.test}\n  - {name: b, hostName: b.test}\n"
	d := newDaemon(t, two, nil)
	driverA := d.hubs.Linked()[0].Driver

	steps := []struct {
		name    string
		hubs    string
		wantErr string
		check   func(counts map[string]int) bool
	}{
		{"ok/two-hubs", two, "", func(c map[string]int) bool { return c["a.test"] > 0 && c["b.test"] > 0 && c["c.test"] == 0 }},
		{"ok/add-a-heavy-hub", two + "  - {name: c, hostName: c.test, allocationWeight: 1000}\n", "",
			func(c map[string]int) bool { return c["c.test"] >= 90 }},
		{"fail/weight-out-of-range-keeps-the-current-hubs", two + "  - {name: c, hostName: c.test, allocationWeight: 0}\n", "allocationWeight: must be 1 to 1000",
			func(c map[string]int) bool { return c["c.test"] >= 90 }},
		{"fail/driver-that-cannot-be-built-keeps-the-current-hubs",
			two + "  - {name: c, hostName: c.test, allocationWeight: 1000}\n  - {name: m, hostName: m.test, driver: mosquitto, mosquitto: {url: \"mqtt://127.0.0.1:1\", username: u, passwordFile: missing.pass}}\n",
			"missing.pass", func(c map[string]int) bool { return c["c.test"] >= 90 && c["m.test"] == 0 }},
		{"ok/reweight", two + "  - {name: c, hostName: c.test, allocationWeight: 1}\n", "",
			func(c map[string]int) bool { return c["c.test"] > 0 && c["c.test"] < 60 }},
		{"ok/drain", two + "  - {name: c, hostName: c.test, applyAllocationPolicy: false}\n", "",
			func(c map[string]int) bool { return c["c.test"] == 0 && c["a.test"] > 0 && c["b.test"] > 0 }},
	}
	for i, s := range steps {
		writeFile(t, d.cfgFile, configYAML(s.hubs))
		err := d.ReloadConfig()
		if s.wantErr == "" && err != nil || s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)) {
			t.Fatalf("%s: ReloadConfig = %v, want %q", s.name, err, s.wantErr)
		}
		if counts := d.spread(t, fmt.Sprint(i), 100); !s.check(counts) {
			t.Fatalf("%s: 100 new devices went %v", s.name, counts)
		}
	}
	if d.hubs.Linked()[0].Driver != driverA {
		t.Error("the unchanged hub's driver was rebuilt")
	}
	if !strings.Contains(d.log.String(), "config reload refused") || !strings.Contains(d.log.String(), "c weight=1 drained") {
		t.Errorf("log:\n%s", d.log)
	}
}

// TestMosquittoHub runs the daemon, in process, with a Mosquitto hub: a
// provisioned device logs in to the broker with the credentials edgeprov
// created, is confined to its topics, and loses access when its registration
// is deleted or its enrollment disabled.
func TestMosquittoHub(t *testing.T) {
	b := testbroker.Start(t, testbroker.WithTLS())
	hubs := fmt.Sprintf("  - name: broker\n    hostName: broker.plant.test\n    driver: mosquitto\n    mosquitto: {url: %q, username: %s, passwordFile: broker.pass, caFile: %s}\n",
		b.TLSURL(), testbroker.AdminUser, b.CAFile)
	d := newDaemon(t, hubs, map[string]string{"broker.pass": b.AdminPassword + "\n"})
	devKey := func(id string) []byte { return sas.DeriveDeviceKey(groupKey, id) }
	login := func(id string) (*testbroker.Client, error) {
		return testbroker.Connect(b.Addr, id, id, sas.MQTTPassword(devKey(id), id), nil)
	}

	st := d.register(t, "fleet-m1")
	if st.Status != dpsapi.StatusAssigned || st.RegistrationState.AssignedHub != "broker.plant.test" {
		t.Fatalf("%+v", st.RegistrationState)
	}
	c, err := login("fleet-m1")
	if err != nil {
		t.Fatalf("the provisioned device cannot log in: %v\n%s", err, d.log)
	}
	if tok := c.Publish("devices/fleet-m1/telemetry", 1, false, "hello"); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	tok := c.Subscribe("devices/fleet-other/#", 1, nil)
	tok.Wait()
	if q := tok.(interface{ Result() map[string]byte }).Result()["devices/fleet-other/#"]; q != 128 {
		t.Fatalf("subscription to another device's topics granted (%d)", q)
	}
	c.Close()

	if err := d.Service().DeleteRegistration(context.Background(), d.IDScope(), "fleet-m1", ""); err != nil {
		t.Fatal(err)
	}
	if c, err := login("fleet-m1"); err == nil {
		c.Close()
		t.Fatal("logged in after its registration was deleted")
	}

	// Registered again, then its enrollment is disabled and it registers
	// once more: refused, and locked out of the broker.
	if st := d.register(t, "fleet-m1"); st.Status != dpsapi.StatusAssigned {
		t.Fatalf("%+v", st.RegistrationState)
	}
	if c, err := login("fleet-m1"); err != nil {
		t.Fatalf("re-registered device cannot log in: %v", err)
	} else {
		c.Close()
	}
	d.setEnabled(t, false)
	if err := d.ReloadCatalog(); err != nil {
		t.Fatal(err)
	}
	if st := d.register(t, "fleet-m1"); st.Status != dpsapi.StatusFailed || st.RegistrationState.ErrorCode != dpsapi.CodeEnrollmentDisabled {
		t.Fatalf("with the enrollment disabled: %+v", st.RegistrationState)
	}
	if c, err := login("fleet-m1"); err == nil {
		c.Close()
		t.Fatal("logged in after its enrollment was disabled")
	}
	if strings.Contains(d.log.String(), base64.StdEncoding.EncodeToString(devKey("fleet-m1"))) || strings.Contains(d.log.String(), b.AdminPassword) {
		t.Fatal("a key or password reached the log")
	}
}

// TestMosquittoX509Device: a device attested by its X.509 certificate is
// given a broker user named by the certificate's CN, and logs in with the
// certificate alone on a listener that maps certificates to users.
func TestMosquittoX509Device(t *testing.T) {
	root := testpki.NewRoot(t, "camera factory root")
	leaf := root.Leaf(t, "cam-0007")
	rootFile := filepath.Join(t.TempDir(), "root.pem")
	writeFile(t, rootFile, root.PEM())
	b := testbroker.Start(t, testbroker.WithClientCertificates(rootFile))
	hubs := fmt.Sprintf("  - name: broker\n    hostName: broker.plant.test\n    driver: mosquitto\n    mosquitto: {url: %q, username: %s, passwordFile: broker.pass, caFile: %s}\n",
		b.TLSURL(), testbroker.AdminUser, b.CAFile)
	catalog := fmt.Sprintf(`version: 1
enrollmentGroups:
  - enrollmentGroupId: cameras
    attestation: {type: x509, x509: {signingCertificates: {primary: {certificateFile: %s}}}}
`, rootFile)
	d := newDaemonWithCatalog(t, hubs, map[string]string{"broker.pass": b.AdminPassword + "\n"}, catalog)

	ctx := context.Background()
	certs := []*x509.Certificate{leaf.Cert}
	op, err := d.Service().Register(ctx, registration.RegisterRequest{Scope: d.IDScope(), RegistrationID: "cam-0007", ClientCerts: certs})
	if err != nil {
		t.Fatal(err)
	}
	st, err := d.Service().OperationStatus(ctx, registration.PollRequest{Scope: d.IDScope(), RegistrationID: "cam-0007", OperationID: op.OperationID, ClientCerts: certs})
	if err != nil || st.Status != dpsapi.StatusAssigned {
		t.Fatalf("%+v, %v\n%s", st, err, d.log)
	}
	tlsCfg := &tls.Config{RootCAs: b.RootCAs(t), Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key}},
		MinVersion: tls.VersionTLS12}
	c, err := testbroker.Connect(b.CertAddr, "cam-0007", "", "", tlsCfg)
	if err != nil {
		t.Fatalf("the X.509 device cannot log in: %v\n%s", err, b.Log())
	}
	defer c.Close()
	got := make(chan string, 1)
	tok := c.Subscribe("devices/cam-0007/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		if !m.Retained() {
			got <- string(m.Payload())
		}
	})
	if tok.Wait(); tok.Error() != nil || tok.(*mqtt.SubscribeToken).Result()["devices/cam-0007/#"] == 128 {
		t.Fatalf("subscription to its own topics: %v %v", tok.Error(), tok.(*mqtt.SubscribeToken).Result())
	}
	if tok := c.Publish("devices/cam-0007/telemetry", 1, false, "frame"); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	select {
	case p := <-got:
		if p != "frame" {
			t.Fatalf("got %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("its own message did not come back")
	}
}
