package e2e_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/testenv/e2e"
	"github.com/edgeprov/edgeprov/testenv/nodesdk"
)

// TestNodeDeviceSDK provisions with the unmodified Azure Node device SDK
// (azure-iot-provisioning-device-http + azure-iot-security-symmetric-key) over
// HTTPS, pinned in testenv/node's lockfile.
func TestNodeDeviceSDK(t *testing.T) {
	t.Parallel()
	nodesdk.Ensure(t)
	d := newDaemon(t)
	d.Start(t)
	runNodeCases(t, d, nodesdk.HTTP, "localhost", port(t, d.Port()))
}

// TestNodeDeviceSDKOverMQTT is the same with azure-iot-provisioning-device-mqtt's
// Mqtt transport against the MQTT/TLS listener.
func TestNodeDeviceSDKOverMQTT(t *testing.T) {
	t.Parallel()
	nodesdk.Ensure(t)
	d := newMQTTDaemon(t, "")
	d.Start(t)
	runNodeCases(t, d, nodesdk.MQTT, "localhost", port(t, d.MQTTPort()))
}

func newMQTTDaemon(t *testing.T, deviceListen string) *e2e.Daemon {
	return e2e.NewDaemon(t, e2e.Options{Catalog: catalog, MQTT: true, DeviceListen: deviceListen, CatalogFiles: map[string]string{
		"group.key":   b64(groupKey) + "\n",
		"blocked.key": b64(sas.DeriveDeviceKey(groupKey, "line-blocked")) + "\n",
	}})
}

func port(t *testing.T, s string) int {
	p, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runNodeCases registers devices of every kind the catalog has with the stock
// SDK over one transport.
func runNodeCases(t *testing.T, d *e2e.Daemon, transport nodesdk.Transport, host string, port int) {
	derived := func(id string) string { return b64(sas.DeriveDeviceKey(groupKey, id)) }
	prefix := "line-" + string(transport) + "-"
	tests := []struct {
		name, regID, key string
		payload          any
		wantOK           bool
		wantHub, wantDev string
		wantPayload      string
		wantStatus       int
	}{
		{name: "ok/individual-key", regID: "solo-01", key: b64(individualKey), wantOK: true, wantHub: "hub-b.e2e.local", wantDev: "solo-device"},
		{name: "ok/group-derived-key", regID: prefix + "1", key: derived(prefix + "1"), wantOK: true, wantDev: prefix + "1"},
		{name: "ok/payload-sent-and-returned", regID: prefix + "2", key: derived(prefix + "2"), payload: map[string]any{"modelId": "dtmi:e2e;1", "n": 2},
			wantOK: true, wantDev: prefix + "2", wantPayload: `{"modelId":"dtmi:e2e;1","n":2}`},
		{name: "fail/wrong-key", regID: "solo-01", key: b64(groupKey), wantStatus: 401},
		{name: "fail/unknown-device", regID: "stranger-9", key: b64(groupKey), wantStatus: 401},
		{name: "fail/disabled-enrollment", regID: "line-blocked", key: derived("line-blocked")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := nodesdk.RunDevice(t, t.Context(), d.CACert, nodesdk.DeviceArgs{Host: host, Port: port, IDScope: d.IDScope,
				RegistrationID: tt.regID, Transport: transport, SymmetricKey: tt.key, Payload: tt.payload})
			if err != nil {
				t.Fatal(err)
			}
			if res.OK != tt.wantOK {
				t.Fatalf("ok = %v, want %v: result %+v error %+v\nstderr: %s", res.OK, tt.wantOK, res.Result, res.Error, res.Stderr)
			}
			if !tt.wantOK {
				if tt.wantStatus != 0 && (res.Error.StatusCode != tt.wantStatus || !strings.Contains(res.Error.ResponseBody, "401002")) {
					t.Fatalf("status %d, want %d with 401002: %+v", res.Error.StatusCode, tt.wantStatus, res.Error)
				}
				if tt.wantStatus == 0 && !strings.Contains(res.Error.ResponseBody+res.Error.Message, "disabled") {
					t.Fatalf("refusal does not say disabled: %+v", res.Error)
				}
				return
			}
			r := res.Result
			if r.Status != "assigned" || r.DeviceID != tt.wantDev || (tt.wantHub != "" && r.AssignedHub != tt.wantHub) || r.AssignedHub == "" {
				t.Fatalf("result %+v", r)
			}
			if tt.wantPayload != "" && compact(r.Payload) != tt.wantPayload {
				t.Fatalf("payload %s, want %s", r.Payload, tt.wantPayload)
			}
		})
	}
}
