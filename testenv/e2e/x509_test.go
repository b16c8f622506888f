package e2e_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/testenv/e2e"
	"github.com/edgeprov/edgeprov/testenv/nodesdk"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

// TestNodeX509SDK provisions with the unmodified Azure Node device SDK over
// HTTPS and its X.509 security client (azure-iot-security-x509): the device's
// certificate file goes to Node's TLS stack, which sends every certificate in
// it.
func TestNodeX509SDK(t *testing.T) {
	t.Parallel()
	runNodeX509(t, nodesdk.HTTP)
}

// TestNodeX509SDKOverMQTT is the same over the Mqtt transport: the chain
// arrives in the MQTT listener's TLS handshake, with no password.
func TestNodeX509SDKOverMQTT(t *testing.T) {
	t.Parallel()
	runNodeX509(t, nodesdk.MQTT)
}

// TestNodeX509SDKOverMQTTWebSocket is the same over MqttWs, in a network
// namespace where the daemon has port 443 (see inNetns).
func TestNodeX509SDKOverMQTTWebSocket(t *testing.T) {
	if !inNetns(t) {
		return
	}
	runNodeX509(t, nodesdk.MQTTWS)
}

// deviceListen is device.listen for a transport: MqttWs dials port 443 (in a
// network namespace), the others any port.
func deviceListen(transport nodesdk.Transport) string {
	if transport == nodesdk.MQTTWS {
		return ":443"
	}
	return ""
}

func runNodeX509(t *testing.T, transport nodesdk.Transport) {
	nodesdk.Ensure(t)
	rootA := testpki.NewRoot(t, "e2e factory A")
	rootB := testpki.NewRoot(t, "e2e factory B")
	interB := rootB.Intermediate(t, "e2e factory B line 3")
	solo := testpki.SelfSigned(t, "node-x509-solo")
	d := e2e.NewDaemon(t, e2e.Options{
		Catalog: `version: 1
enrollments:
  - registrationId: node-x509-solo
    deviceId: solo-device
    attestation:
      type: x509
      x509: {clientCertificates: {primary: {certificateFile: certs/solo.pem}}}
enrollmentGroups:
  - enrollmentGroupId: factory-a
    attestation:
      type: x509
      x509: {signingCertificates: {primary: {certificateFile: certs/root-a.pem}}}
  - enrollmentGroupId: factory-b
    attestation:
      type: x509
      x509: {signingCertificates: {primary: {certificateFile: certs/root-b.pem}}}
`,
		CatalogFiles: map[string]string{"certs/solo.pem": solo.PEM(), "certs/root-a.pem": rootA.PEM(), "certs/root-b.pem": rootB.PEM()},
		MQTT:         transport != nodesdk.HTTP,
		DeviceListen: deviceListen(transport),
	})
	d.Start(t)
	p := d.Port()
	switch transport {
	case nodesdk.MQTT:
		p = d.MQTTPort()
	case nodesdk.MQTTWS:
		p = "0" // the SDK dials 443
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("n", 65) // a valid registration ID, too long for a CN
	dir := t.TempDir()
	files := func(name string, c *testpki.Cert, pem string) *nodesdk.X509Files {
		cert, key := c.WriteFiles(t, dir, name, pem)
		return &nodesdk.X509Files{CertFile: cert, KeyFile: key}
	}
	leafB := interB.Leaf(t, "node-x509-b1")
	tests := []struct {
		name, regID string
		x509        *nodesdk.X509Files
		wantGroup   string
		wantDevice  string
	}{
		{name: "ok/individual-leaf", regID: "node-x509-solo", x509: files("solo", solo, solo.PEM()), wantDevice: "solo-device"},
		{name: "ok/group-through-root", regID: "node-x509-a1", x509: func() *nodesdk.X509Files { c := rootA.Leaf(t, "node-x509-a1"); return files("a1", c, c.PEM()) }(),
			wantGroup: "factory-a", wantDevice: "node-x509-a1"},
		{name: "ok/group-through-sent-intermediate", regID: "node-x509-b1", x509: files("b1", leafB, leafB.ChainPEM()),
			wantGroup: "factory-b", wantDevice: "node-x509-b1"},
		{name: "fail/leaf-from-another-ca", regID: "node-x509-a2", x509: func() *nodesdk.X509Files {
			c := testpki.NewRoot(t, "e2e factory A").Leaf(t, "node-x509-a2")
			return files("a2", c, c.PEM())
		}()},
		{name: "fail/expired-leaf", regID: "node-x509-a3", x509: func() *nodesdk.X509Files {
			c := rootA.Leaf(t, "node-x509-a3", testpki.Expired())
			return files("a3", c, c.PEM())
		}()},
		{name: "fail/cn-not-a-valid-registration-id", regID: long, x509: func() *nodesdk.X509Files {
			c := rootA.Leaf(t, long)
			return files("long", c, c.PEM())
		}()},
		{name: "fail/intermediate-not-sent", regID: "node-x509-b2", x509: func() *nodesdk.X509Files {
			c := interB.Leaf(t, "node-x509-b2")
			return files("b2", c, c.PEM())
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := nodesdk.RunDevice(t, t.Context(), d.CACert, nodesdk.DeviceArgs{Host: "localhost", Port: port, IDScope: d.IDScope,
				RegistrationID: tt.regID, Transport: transport, X509: tt.x509})
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(tt.name, "fail/") {
				if res.OK || res.Error.StatusCode != 401 || !strings.Contains(res.Error.ResponseBody, `"errorCode":401002`) {
					t.Fatalf("want a 401 refusal, got ok=%v %+v", res.OK, res.Error)
				}
				return
			}
			if !res.OK {
				t.Fatalf("registration failed: %+v\nstderr: %s\ndaemon: %s", res.Error, res.Stderr, d.Log())
			}
			r := res.Result
			var x struct {
				EnrollmentGroupID string          `json:"enrollmentGroupId"`
				CertificateInfo   json.RawMessage `json:"certificateInfo"`
			}
			if err := json.Unmarshal(r.X509, &x); err != nil {
				t.Fatalf("x509 %s: %v", r.X509, err)
			}
			if r.Status != "assigned" || r.DeviceID != tt.wantDevice || r.AssignedHub == "" || x.EnrollmentGroupID != tt.wantGroup {
				t.Fatalf("result %s", r.Raw)
			}
			if tt.wantGroup == "" && !strings.Contains(string(x.CertificateInfo), `"subjectName":"CN=`+tt.regID+`"`) {
				t.Fatalf("individual result without certificateInfo: %s", r.X509)
			}
		})
	}
	// The daemon's log says why, the devices were told nothing.
	t.Cleanup(func() {
		for _, why := range []string{"ECDSA verification failure", "not at", "65 characters, the limit is 64", "unknown authority"} {
			if !strings.Contains(d.Log(), why) {
				t.Errorf("daemon log lacks %q", why)
			}
		}
	})
}
