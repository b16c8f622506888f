package mosquitto_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/daemon/hub/mosquitto"
	"github.com/edgeprov/edgeprov/daemon/pki"
	testbroker "github.com/edgeprov/edgeprov/testenv/mosquitto"
)

var ctx = context.Background()

func newDriver(t *testing.T, b *testbroker.Broker) *mosquitto.Driver {
	t.Helper()
	d, err := mosquitto.New(mosquitto.Config{URL: b.TLSURL(), Username: testbroker.AdminUser, Password: b.AdminPassword,
		TLS: &tls.Config{RootCAs: b.RootCAs(t), MinVersion: tls.VersionTLS12}, Hub: "broker.test",
		Calls: hub.Calls{Timeout: 5 * time.Second, Retries: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	// Connect now: the first connection gives the admin user its service
	// role, which disconnects the admin's other sessions (the watcher's).
	if err := d.Check(ctx); err != nil {
		t.Fatal(err)
	}
	return d
}

func key(b byte) hub.SecretKey {
	k := make([]byte, 32)
	for i := range k {
		k[i] = b
	}
	return k
}

func sasDevice(id string, k hub.SecretKey) hub.Device {
	return hub.Device{DeviceID: id, AuthType: hub.AuthSAS, Key: k}
}

// watcher sees every message under devices/ (the admin may read all topics).
type watcher struct {
	c    *testbroker.Client
	mu   sync.Mutex
	msgs []string
	got  chan string
}

func watch(t *testing.T, b *testbroker.Broker) *watcher {
	t.Helper()
	c, err := testbroker.Connect(b.Addr, "watcher", testbroker.AdminUser, b.AdminPassword, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	w := &watcher{c: c, got: make(chan string, 100)}
	tok := c.Subscribe("devices/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		if m.Retained() || len(m.Payload()) == 0 {
			return // retained state, or a deleted device's twin being cleared
		}
		s := m.Topic() + " " + string(m.Payload())
		w.mu.Lock()
		w.msgs = append(w.msgs, s)
		w.mu.Unlock()
		w.got <- s
	})
	if tok.Wait(); tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	return w
}

// next returns the next message seen, failing after 5 s.
func (w *watcher) next(t *testing.T) string {
	t.Helper()
	select {
	case s := <-w.got:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no message reached the watcher")
		return ""
	}
}

func connectDevice(b *testbroker.Broker, id string, k hub.SecretKey) (*testbroker.Client, error) {
	return testbroker.Connect(b.Addr, id, id, sas.MQTTPassword(k, id), nil)
}

func publish(t *testing.T, c *testbroker.Client, topic, payload string) {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	if tok.Wait(); tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// subscribe returns the broker's grant: 0-2, or 128 for refused.
func subscribe(t *testing.T, c *testbroker.Client, filter string, h mqtt.MessageHandler) byte {
	t.Helper()
	tok := c.Subscribe(filter, 1, h)
	if tok.Wait(); tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return tok.(*mqtt.SubscribeToken).Result()[filter]
}

func TestDeviceAccess(t *testing.T) {
	b := testbroker.Start(t, testbroker.WithTLS())
	d := newDriver(t, b)
	k := key(7)
	twin := &hub.Twin{Tags: map[string]any{"site": "w7"}, Desired: map[string]any{"interval": 30.0}}
	dev := sasDevice("sensor-1", k)
	dev.Twin, dev.IoTEdge = twin, true
	if err := d.EnsureDevice(ctx, dev); err != nil {
		t.Fatal(err)
	}
	if err := d.EnsureDevice(ctx, sasDevice("sensor-2", key(8))); err != nil {
		t.Fatal(err)
	}
	w := watch(t, b)

	c, err := connectDevice(b, "sensor-1", k)
	if err != nil {
		t.Fatalf("device cannot log in with the derived password: %v", err)
	}
	defer c.Close()

	t.Run("ok/reads-its-retained-twin", func(t *testing.T) {
		got := make(chan []byte, 1)
		if q := subscribe(t, c, mosquitto.TwinTopic("sensor-1"), func(_ mqtt.Client, m mqtt.Message) { got <- m.Payload() }); q == 128 {
			t.Fatal("subscription to its own twin refused")
		}
		select {
		case p := <-got:
			if string(p) != `{"tags":{"site":"w7"},"properties":{"desired":{"interval":30}}}` {
				t.Fatalf("twin = %s", p)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no retained twin")
		}
	})
	t.Run("ok/publishes-on-its-own-topic", func(t *testing.T) {
		publish(t, c, "devices/sensor-1/telemetry", "t1")
		if got := w.next(t); got != "devices/sensor-1/telemetry t1" {
			t.Fatalf("watcher saw %q", got)
		}
	})
	t.Run("fail/publish-on-another-devices-topic-is-dropped", func(t *testing.T) {
		// MQTT 3.1.1 has no negative PUBACK: the broker drops the message.
		// The marker published after it arrives first, so it was dropped.
		publish(t, c, "devices/sensor-2/telemetry", "forged")
		publish(t, c, "devices/sensor-1/telemetry", "marker")
		if got := w.next(t); got != "devices/sensor-1/telemetry marker" {
			t.Fatalf("watcher saw %q, want only the marker", got)
		}
	})
	t.Run("fail/cannot-write-its-own-twin", func(t *testing.T) {
		publish(t, c, mosquitto.TwinTopic("sensor-1"), `{"tags":{"hacked":true}}`)
		publish(t, c, "devices/sensor-1/telemetry", "marker2")
		if got := w.next(t); got != "devices/sensor-1/telemetry marker2" {
			t.Fatalf("watcher saw %q, want only the marker", got)
		}
	})
	t.Run("fail/subscribe-to-another-device-refused", func(t *testing.T) {
		for _, f := range []string{"devices/sensor-2/#", "devices/+/telemetry", "#"} {
			if q := subscribe(t, c, f, nil); q != 128 {
				t.Errorf("subscription to %s granted with QoS %d", f, q)
			}
		}
	})
	t.Run("fail/login-refused", func(t *testing.T) {
		for name, try := range map[string]func() (*testbroker.Client, error){
			"wrong-password": func() (*testbroker.Client, error) { return connectDevice(b, "sensor-1", key(9)) },
			"raw-key-as-password": func() (*testbroker.Client, error) {
				return testbroker.Connect(b.Addr, "sensor-1", "sensor-1", string(k), nil)
			},
			"other-client-id": func() (*testbroker.Client, error) {
				return testbroker.Connect(b.Addr, "x", "sensor-1", sas.MQTTPassword(k, "sensor-1"), nil)
			},
			"password-of-other-id": func() (*testbroker.Client, error) { return connectDevice(b, "sensor-2", k) },
		} {
			if c, err := try(); err == nil {
				c.Close()
				t.Errorf("%s: logged in", name)
			}
		}
	})
	t.Run("ok/read-back", func(t *testing.T) {
		data, err := d.ReadDevice(ctx, "sensor-1")
		if err != nil {
			t.Fatal(err)
		}
		if data.IoTEdge == nil || !*data.IoTEdge || data.Twin.Tags["site"] != "w7" || data.Twin.Desired["interval"] != 30.0 {
			t.Fatalf("ReadDevice = %+v", data)
		}
		if _, err := d.ReadDevice(ctx, "nobody"); !errors.Is(err, hub.ErrNotFound) {
			t.Fatalf("ReadDevice(nobody) = %v, want ErrNotFound", err)
		}
		empty, err := d.ReadDevice(ctx, "sensor-2")
		if err != nil || !empty.Twin.Empty() {
			t.Fatalf("ReadDevice(sensor-2) = %+v, %v; want an empty twin", empty, err)
		}
	})
}

func TestLifecycle(t *testing.T) {
	b := testbroker.Start(t, testbroker.WithTLS())
	d := newDriver(t, b)
	k := key(3)
	canLogIn := func(id string, k hub.SecretKey) bool {
		c, err := connectDevice(b, id, k)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	dev := sasDevice("dev-1", k)
	dev.Twin = &hub.Twin{Desired: map[string]any{"v": 1.0}}
	steps := []struct {
		name  string
		do    func() error
		login bool
	}{
		{"ok/create", func() error { return d.EnsureDevice(ctx, dev) }, true},
		{"ok/again-is-harmless", func() error { return d.EnsureDevice(ctx, dev) }, true},
		{"ok/disable", func() error { dev.Disabled = true; return d.EnsureDevice(ctx, dev) }, false},
		{"ok/disable-again", func() error { return d.EnsureDevice(ctx, dev) }, false},
		{"ok/enable", func() error { dev.Disabled = false; dev.Twin = nil; return d.EnsureDevice(ctx, dev) }, true},
		{"ok/delete", func() error { return d.DeleteDevice(ctx, "dev-1") }, false},
		{"ok/delete-again", func() error { return d.DeleteDevice(ctx, "dev-1") }, false},
		{"ok/recreate", func() error { return d.EnsureDevice(ctx, dev) }, true},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := canLogIn("dev-1", k); got != s.login {
			t.Fatalf("after %s: can log in = %v, want %v\n%s", s.name, got, s.login, b.Log())
		}
		if s.name == "ok/enable" {
			// Twin nil left the retained twin as it was.
			data, err := d.ReadDevice(ctx, "dev-1")
			if err != nil || data.Twin.Desired["v"] != 1.0 {
				t.Fatalf("after enable: %+v, %v", data, err)
			}
		}
		if s.name == "ok/recreate" {
			// Deleting cleared the retained twin.
			data, err := d.ReadDevice(ctx, "dev-1")
			if err != nil || !data.Twin.Empty() {
				t.Fatalf("after recreate: %+v, %v", data, err)
			}
		}
	}
	t.Run("ok/key-change-changes-password", func(t *testing.T) {
		if err := d.EnsureDevice(ctx, sasDevice("dev-1", key(4))); err != nil {
			t.Fatal(err)
		}
		if canLogIn("dev-1", k) || !canLogIn("dev-1", key(4)) {
			t.Fatal("the password did not follow the key")
		}
	})
}

func TestRefusals(t *testing.T) {
	b := testbroker.Start(t, testbroker.WithTLS())
	d := newDriver(t, b)
	// A user the operator made by hand.
	admin, err := testbroker.Connect(b.Addr, "op", testbroker.AdminUser, b.AdminPassword, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	publish(t, admin, mosquitto.ControlTopic, `{"commands":[{"command":"createClient","username":"gateway","password":"operator-secret"}]}`)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := testbroker.Connect(b.Addr, "gw", "gateway", "operator-secret", nil)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("operator user not created: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	tests := []struct {
		name string
		dev  hub.Device
	}{
		{"fail/user-not-made-by-edgeprov", sasDevice("gateway", key(1))},
		{"fail/admin-user", sasDevice(testbroker.AdminUser, key(1))},
		{"fail/wildcard-plus", sasDevice("dev+1", key(1))},
		{"fail/wildcard-hash", sasDevice("dev#1", key(1))},
		{"fail/dollar", sasDevice("$dev", key(1))},
		{"fail/no-key", sasDevice("dev-nokey", nil)},
		{"fail/x509-without-cn", hub.Device{DeviceID: "dev-x", AuthType: hub.AuthCertificateAuthority}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := d.EnsureDevice(ctx, tt.dev); !errors.Is(err, hub.ErrRefused) {
				t.Fatalf("EnsureDevice = %v, want ErrRefused", err)
			}
		})
	}
	// The operator's user is untouched, and deleting "gateway" as a device
	// leaves it alone too.
	if err := d.DeleteDevice(ctx, "gateway"); err != nil {
		t.Fatal(err)
	}
	c, err := testbroker.Connect(b.Addr, "gw", "gateway", "operator-secret", nil)
	if err != nil {
		t.Fatalf("the operator's user was changed: %v", err)
	}
	c.Close()
	if c, err := testbroker.Connect(b.Addr, "x", testbroker.AdminUser, b.AdminPassword, nil); err != nil {
		t.Fatalf("the admin user was changed: %v", err)
	} else {
		c.Close()
	}
}

func TestBrokerDown(t *testing.T) {
	b := testbroker.Start(t, testbroker.WithTLS())
	d := newDriver(t, b)
	if err := d.EnsureDevice(ctx, sasDevice("d1", key(1))); err != nil {
		t.Fatal(err)
	}
	b.Stop()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err := d.EnsureDevice(cctx, sasDevice("d2", key(2)))
	if err == nil || errors.Is(err, hub.ErrRefused) || !strings.Contains(err.Error(), "after 2 attempts") {
		t.Fatalf("EnsureDevice with the broker down = %v, want a retried, non-refusal error", err)
	}

	t.Run("fail/bad-admin-password-is-permanent", func(t *testing.T) {
		b := testbroker.Start(t)
		d, err := mosquitto.New(mosquitto.Config{URL: b.URL(), Username: testbroker.AdminUser, Password: "wrong",
			Calls: hub.Calls{Timeout: 5 * time.Second, Retries: 3}})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		err = d.EnsureDevice(ctx, sasDevice("d1", key(1)))
		if err == nil || strings.Contains(err.Error(), "attempts") {
			t.Fatalf("EnsureDevice with a wrong admin password = %v, want one failed attempt", err)
		}
	})
}

func TestConcurrentDevices(t *testing.T) {
	b := testbroker.Start(t, testbroker.WithTLS())
	d := newDriver(t, b)
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("par-%02d", i)
			dev := sasDevice(id, key(byte(i)))
			dev.Twin = &hub.Twin{Tags: map[string]any{"n": i}}
			errs <- d.EnsureDevice(ctx, dev)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		id := fmt.Sprintf("par-%02d", i)
		c, err := connectDevice(b, id, key(byte(i)))
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		c.Close()
		data, err := d.ReadDevice(ctx, id)
		if err != nil || data.Twin.Tags["n"] != float64(i) {
			t.Fatalf("%s twin: %+v, %v", id, data, err)
		}
	}
}

// TestX509Device: a device known by its certificate logs in on a listener that
// maps the certificate's CN to the user, and loses access when disabled or
// deleted.
func TestX509Device(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("device CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "device-ca.pem")
	if err := pki.WriteCert(caFile, ca.Cert); err != nil {
		t.Fatal(err)
	}
	b := testbroker.Start(t, testbroker.WithClientCertificates(caFile))
	d := newDriver(t, b)
	w := watch(t, b)
	cert := deviceCert(t, ca, "cam-0007")
	tlsCfg := &tls.Config{RootCAs: b.RootCAs(t), Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	dev := hub.Device{DeviceID: "cam-0007", AuthType: hub.AuthCertificateAuthority, CommonName: "cam-0007"}
	if err := d.EnsureDevice(ctx, dev); err != nil {
		t.Fatal(err)
	}
	c, err := testbroker.Connect(b.CertAddr, "cam-0007", "", "", tlsCfg)
	if err != nil {
		t.Fatalf("X.509 device cannot log in: %v", err)
	}
	publish(t, c, "devices/cam-0007/telemetry", "x1")
	if got := w.next(t); got != "devices/cam-0007/telemetry x1" {
		t.Fatalf("watcher saw %q", got)
	}
	c.Close()

	// Disabled: the certificate still passes TLS, but the broker no longer
	// lets the user do anything.
	dev.Disabled = true
	if err := d.EnsureDevice(ctx, dev); err != nil {
		t.Fatal(err)
	}
	assertNoAccess(t, b, w, tlsCfg, "disabled")
	dev.Disabled = false
	if err := d.EnsureDevice(ctx, dev); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteDevice(ctx, "cam-0007"); err != nil {
		t.Fatal(err)
	}
	assertNoAccess(t, b, w, tlsCfg, "deleted")
}

// assertNoAccess checks that an X.509 device either cannot connect or can
// neither publish nor subscribe in its namespace.
func assertNoAccess(t *testing.T, b *testbroker.Broker, w *watcher, tlsCfg *tls.Config, when string) {
	t.Helper()
	c, err := testbroker.Connect(b.CertAddr, "cam-0007", "", "", tlsCfg)
	if err != nil {
		return
	}
	defer c.Close()
	if q := subscribe(t, c, "devices/cam-0007/#", nil); q != 128 {
		t.Errorf("%s: subscription granted", when)
	}
	publish(t, c, "devices/cam-0007/telemetry", "after-"+when)
	admin, err := testbroker.Connect(b.Addr, "marker-"+when, testbroker.AdminUser, b.AdminPassword, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	// The admin may not publish under devices/ either (only the service
	// role's twins), so the marker goes to a twin topic, which it may.
	publish(t, admin, "devices/marker/twin", when)
	if got := w.next(t); got != "devices/marker/twin "+when {
		t.Fatalf("%s: watcher saw %q, want only the marker", when, got)
	}
}

func deviceCert(t *testing.T, ca *pki.CA, cn string) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &k.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}
