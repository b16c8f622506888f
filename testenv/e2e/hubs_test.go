package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeprov/edgeprov/agent/state"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/testenv/e2e"
	testbroker "github.com/edgeprov/edgeprov/testenv/mosquitto"
)

func lineCatalog(status string) string {
	return fmt.Sprintf(`version: 1
enrollmentGroups:
  - enrollmentGroupId: line
    registrationIdPrefixes: [line-]
    provisioningStatus: %s
    attestation: {type: symmetricKey, symmetricKey: {keyFile: group.key}}
    initialTwin: {tags: {line: "7"}, properties: {desired: {interval: 30}}}
`, status)
}

// TestMosquittoThroughBinaries: edgeprovd with a Mosquitto hub provisions a
// device through edgeprov-agent; the device then logs in to the real broker
// with the password it derives from its key, reads its initial twin, publishes
// on its own topic and is refused another device's. A second device's
// registration is deleted with edgeprovctl: it cannot log in any more. Once
// the first one's enrollment is disabled (catalog edit + SIGHUP) and it
// registers again, it is refused, and the broker no longer lets it in.
func TestMosquittoThroughBinaries(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t, testbroker.WithTLS())
	d := e2e.NewDaemon(t, e2e.Options{
		Service: true,
		Catalog: lineCatalog("enabled"),
		CatalogFiles: map[string]string{
			"group.key":   b64(groupKey) + "\n",
			"broker.pass": b.AdminPassword + "\n",
		},
		Hubs: fmt.Sprintf(`
  - name: broker
    hostName: broker.plant.test
    driver: mosquitto
    mosquitto: {url: %q, username: %s, passwordFile: broker.pass, caFile: %s}
`, b.TLSURL(), testbroker.AdminUser, b.CAFile),
	})
	d.Start(t)

	cfg, stateFile := agentConfig(t, d, "line-0001", "group")
	if r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg); r.Code != 0 {
		t.Fatalf("agent: exit %d\n%s%s\n%s", r.Code, r.Stdout, r.Stderr, d.Log())
	}
	res, err := state.Load(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if res.AssignedHub != "broker.plant.test" || res.DeviceID != "line-0001" {
		t.Fatalf("result: %+v", res)
	}

	password := sas.MQTTPassword(sas.DeriveDeviceKey(groupKey, "line-0001"), "line-0001")
	c, err := testbroker.Connect(b.Addr, "line-0001", "line-0001", password, nil)
	if err != nil {
		t.Fatalf("the device cannot log in to the broker: %v\n%s", err, b.Log())
	}
	twin := make(chan string, 1)
	if q := subscribe(t, c, "devices/line-0001/twin", func(_ mqtt.Client, m mqtt.Message) { twin <- string(m.Payload()) }); q == 128 {
		t.Fatal("its own twin topic refused")
	}
	select {
	case got := <-twin:
		if got != `{"tags":{"line":"7"},"properties":{"desired":{"interval":30}}}` {
			t.Fatalf("twin %s", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no retained twin")
	}
	watcher, err := testbroker.Connect(b.Addr, "watcher", testbroker.AdminUser, b.AdminPassword, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	seen := make(chan string, 10)
	subscribe(t, watcher, "devices/+/telemetry", func(_ mqtt.Client, m mqtt.Message) { seen <- m.Topic() + " " + string(m.Payload()) })
	publish(t, c, "devices/line-0002/telemetry", "forged")
	publish(t, c, "devices/line-0001/telemetry", "t1")
	if got := <-seen; got != "devices/line-0001/telemetry t1" {
		t.Fatalf("watcher saw %q first", got)
	}
	if q := subscribe(t, c, "devices/line-0002/#", nil); q != 128 {
		t.Fatalf("subscription to another device granted (%d)", q)
	}
	c.Close()

	// Deleting a registration through the service API takes the device's
	// broker access away.
	cfg2, _ := agentConfig(t, d, "line-0002", "group")
	if r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg2); r.Code != 0 {
		t.Fatalf("agent line-0002: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	password2 := sas.MQTTPassword(sas.DeriveDeviceKey(groupKey, "line-0002"), "line-0002")
	if c, err := testbroker.Connect(b.Addr, "line-0002", "line-0002", password2, nil); err != nil {
		t.Fatalf("line-0002 cannot log in: %v", err)
	} else {
		c.Close()
	}
	if r := ctl(t, d, "registration", "delete", "line-0002"); r.Code != 0 {
		t.Fatalf("edgeprovctl registration delete: exit %d\n%s%s\n%s", r.Code, r.Stdout, r.Stderr, d.Log())
	}
	if c, err := testbroker.Connect(b.Addr, "line-0002", "line-0002", password2, nil); err == nil {
		c.Close()
		t.Fatalf("line-0002 still logs in after its registration was deleted\n%s", d.Log())
	}

	e2e.Write(t, filepath.Join(d.Dir, "enrollments.yaml"), lineCatalog("disabled"))
	d.Reload(t)
	r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg, "--force")
	if r.Code != 4 || !strings.Contains(r.Stdout+r.Stderr, "401003") {
		t.Fatalf("agent with the enrollment disabled: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if c, err := testbroker.Connect(b.Addr, "line-0001", "line-0001", password, nil); err == nil {
		c.Close()
		t.Fatalf("the device still logs in after its enrollment was disabled\n%s", d.Log())
	}
	if strings.Contains(d.Log(), password) || strings.Contains(d.Log(), b.AdminPassword) {
		t.Fatal("a password reached the daemon's log")
	}
}

// TestReloadLinkedHubsThroughBinaries: a hub added to the config file is used
// after SIGHUP, without a restart; a broken config is refused and the running
// hubs keep serving.
func TestReloadLinkedHubsThroughBinaries(t *testing.T) {
	t.Parallel()
	d := newDaemon(t)
	d.Start(t)
	config, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	provision := func(regID string) string {
		cfg, stateFile := agentConfig(t, d, regID, "group")
		if r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg); r.Code != 0 {
			t.Fatalf("agent %s: exit %d\n%s%s", regID, r.Code, r.Stdout, r.Stderr)
		}
		res, err := state.Load(stateFile)
		if err != nil {
			t.Fatal(err)
		}
		return res.AssignedHub
	}

	broken := strings.Replace(string(config), "linkedHubs:", "linkedHubs:\n  - {name: hub-c, hostName: hub-c.e2e.local, allocationWeight: 0}", 1)
	e2e.Write(t, d.Config, broken)
	d.Reload(t)
	if !strings.Contains(d.Log(), "config reload refused") {
		t.Fatalf("a broken config was not refused\n%s", d.Log())
	}
	if hub := provision("line-r1"); hub == "hub-c.e2e.local" {
		t.Fatal("a device went to a hub of the refused config")
	}

	added := strings.Replace(string(config), "linkedHubs:", "linkedHubs:\n  - {name: hub-c, hostName: hub-c.e2e.local, allocationWeight: 1000}", 1)
	e2e.Write(t, d.Config, added)
	d.Reload(t)
	onC := 0
	for i := range 5 {
		if provision(fmt.Sprintf("line-r%d", i+2)) == "hub-c.e2e.local" {
			onC++
		}
	}
	if onC < 4 {
		t.Fatalf("%d of 5 devices on the added hub of weight 1000\n%s", onC, d.Log())
	}
}

func publish(t *testing.T, c *testbroker.Client, topic, payload string) {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	if tok.Wait(); tok.Error() != nil {
		t.Fatal(tok.Error())
	}
}

func subscribe(t *testing.T, c *testbroker.Client, filter string, h mqtt.MessageHandler) byte {
	t.Helper()
	tok := c.Subscribe(filter, 1, h)
	if tok.Wait(); tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	return tok.(*mqtt.SubscribeToken).Result()[filter]
}
