package e2e_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
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
	port, err := strconv.Atoi(d.Port())
	if err != nil {
		t.Fatal(err)
	}
	derived := func(id string) string { return b64(sas.DeriveDeviceKey(groupKey, id)) }
	tests := []struct {
		name, regID, key string
		payload          any
		wantOK           bool
		wantHub, wantDev string
		wantPayload      string
		wantStatus       int
	}{
		{name: "ok/individual-key", regID: "solo-01", key: b64(individualKey), wantOK: true, wantHub: "hub-b.e2e.local", wantDev: "solo-device"},
		{name: "ok/group-derived-key", regID: "line-node-1", key: derived("line-node-1"), wantOK: true, wantDev: "line-node-1"},
		{name: "ok/payload-sent-and-returned", regID: "line-node-2", key: derived("line-node-2"), payload: map[string]any{"modelId": "dtmi:e2e;1", "n": 2},
			wantOK: true, wantDev: "line-node-2", wantPayload: `{"modelId":"dtmi:e2e;1","n":2}`},
		{name: "fail/wrong-key", regID: "solo-01", key: b64(groupKey), wantStatus: 401},
		{name: "fail/unknown-device", regID: "stranger-9", key: b64(groupKey), wantStatus: 401},
		{name: "fail/disabled-enrollment", regID: "line-blocked", key: derived("line-blocked")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := nodesdk.RunDevice(t, t.Context(), d.CACert, nodesdk.DeviceArgs{Host: "localhost", Port: port, IDScope: d.IDScope,
				RegistrationID: tt.regID, Transport: nodesdk.HTTP, SymmetricKey: tt.key, Payload: tt.payload})
			if err != nil {
				t.Fatal(err)
			}
			if res.OK != tt.wantOK {
				t.Fatalf("ok = %v, want %v: result %+v error %+v\nstderr: %s", res.OK, tt.wantOK, res.Result, res.Error, res.Stderr)
			}
			if !tt.wantOK {
				if tt.wantStatus != 0 && res.Error.StatusCode != tt.wantStatus {
					t.Fatalf("status %d, want %d: %+v", res.Error.StatusCode, tt.wantStatus, res.Error)
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
