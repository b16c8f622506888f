package mqtt_test

import (
	"crypto/tls"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	mqttep "github.com/edgeprov/edgeprov/daemon/endpoint/mqtt"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	rt "github.com/edgeprov/edgeprov/daemon/registration/registrationtest"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

// X.509 devices present their certificate chain in the TLS handshake (over
// MQTT/TLS or under the WebSocket) and send no password; the connection's
// certificates go to attestation with every request.
func TestX509(t *testing.T) {
	root := testpki.NewRoot(t, "mqtt factory")
	inter := root.Intermediate(t, "mqtt factory line")
	cams := &enrollment.Group{EnrollmentGroupID: "cams"}
	cams.Attestation = enrollment.Attestation{Type: enrollment.AttestationX509, X509: &enrollment.X509Attestation{
		SigningCertificates: &enrollment.X509Certificates{Primary: &enrollment.X509CertificateWithInfo{Certificate: root.PEM()}}}}
	if err := cams.Validate("cams"); err != nil {
		t.Fatal(err)
	}
	e := newEnvFixture(t, mqttep.Limits{}, rt.Options{Groups: []*enrollment.Group{cams}}, nil)
	chain := func(leaf *testpki.Cert) *tls.Certificate {
		c := &tls.Certificate{PrivateKey: leaf.Key, Leaf: leaf.Cert}
		for p := leaf; p != nil && (p == leaf || p.Parent != nil); p = p.Parent {
			c.Certificate = append(c.Certificate, p.Cert.Raw)
		}
		return c
	}
	tests := []struct {
		name, regID string
		cert        *tls.Certificate
		websocket   bool
		wantStatus  int
	}{
		{name: "ok/chain-over-tls", regID: "cam-1", cert: chain(inter.Leaf(t, "cam-1")), wantStatus: 200},
		{name: "ok/chain-over-websocket", regID: "cam-2", cert: chain(inter.Leaf(t, "cam-2")), websocket: true, wantStatus: 200},
		{name: "fail/leaf-of-another-ca", regID: "cam-3", cert: chain(testpki.NewRoot(t, "mqtt factory").Leaf(t, "cam-3")), wantStatus: 401},
		{name: "fail/cn-is-another-device", regID: "cam-4", cert: chain(inter.Leaf(t, "cam-5")), wantStatus: 401},
		{name: "fail/no-certificate", regID: "cam-6", wantStatus: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := e.connect(t, tt.regID, connOpts{password: "-", cert: tt.cert, websocket: tt.websocket})
			if err != nil {
				t.Fatal(err)
			}
			r, body := d.request(t, 1, registerTopic("1"), nil)
			if tt.wantStatus == 401 {
				if got := decode[dpsapi.ErrorDetails](t, body); r.Status != 401 || got.ErrorCode != dpsapi.CodeUnauthorized {
					t.Fatalf("%+v %s", r, body)
				}
				return
			}
			op := decode[opStatus](t, body)
			r, body = d.request(t, 1, pollTopic("2", op.OperationID), nil)
			got := decode[opStatus](t, body)
			if r.Status != tt.wantStatus || got.Status != "assigned" || got.RegistrationState.DeviceID != tt.regID ||
				got.RegistrationState.X509 == nil || got.RegistrationState.X509.EnrollmentGroupID != "cams" {
				t.Fatalf("%+v %s", r, body)
			}
		})
	}
}
