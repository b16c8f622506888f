package provision_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/agent/credential"
	"github.com/edgeprov/edgeprov/agent/provision"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	rt "github.com/edgeprov/edgeprov/daemon/registration/registrationtest"
)

// keySigner signs SAS tokens with a key in memory.
type keySigner []byte

func (k keySigner) Token(resource string, expiry time.Time) (string, error) {
	return sas.Build(k, resource, expiry, sas.DeviceKeyName), nil
}

// The agent's MQTT transport against the real service over MQTT/TLS: the
// same loop as HTTPS, and TPM attestation too (no SDK does it over MQTT: the
// transport reconnects with the token the challenge key signs).
func TestMQTTTransport(t *testing.T) {
	t.Parallel()
	dev := openTPM(t)
	s := newService(t, map[string]*credential.TPM{dev.RegistrationID(): dev})
	addr := s.startMQTT(t)
	client := func(regID string) *provision.Client {
		tc := s.srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
		return &provision.Client{IDScope: rt.Scope, RegistrationID: regID,
			Transport: &provision.MQTT{Host: addr, TLS: tc, IDScope: rt.Scope, RegistrationID: regID, ClientVersion: "test", Timeout: 10 * time.Second}}
	}

	t.Run("ok/symmetric-key", func(t *testing.T) {
		c := client("dev-individual")
		c.Signer = keySigner(rt.IndividualKey)
		op, err := c.Register(t.Context(), []byte(`{"n":1}`))
		if err != nil {
			t.Fatal(err)
		}
		if op.Status != "assigned" || op.RegistrationState.DeviceID != "custom-device" || string(op.RegistrationState.Payload) != `{"n":1}` {
			t.Fatalf("final state %+v", op.RegistrationState)
		}
	})
	t.Run("ok/tpm-challenge-answer-hub-key", func(t *testing.T) {
		c := client(dev.RegistrationID())
		c.TPM = dev
		op, err := c.Register(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if op.Status != "assigned" || op.RegistrationState.DeviceID != dev.RegistrationID() {
			t.Fatalf("final state %+v", op.RegistrationState)
		}
		tok, err := dev.Token("hub-x/devices/"+dev.RegistrationID(), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if err := parseAndVerify(tok, s.hubKey(t, dev.RegistrationID())); err != nil {
			t.Fatalf("TPM-signed token with the stored hub key: %v", err)
		}
	})
	t.Run("fail/wrong-key-refused-on-the-topic", func(t *testing.T) {
		c := client("dev-individual")
		c.Signer = keySigner(rt.OtherKey)
		_, err := c.Register(t.Context(), nil)
		var refused *provision.RefusedError
		if !errors.As(err, &refused) || refused.HTTPStatus != http.StatusUnauthorized || refused.Code != 401002 {
			t.Fatalf("err = %v, want refused 401002", err)
		}
	})
	t.Run("fail/connect-refused", func(t *testing.T) {
		// A registration ID the username grammar refuses: CONNACK 4, a refusal.
		c := client("dev!")
		c.Signer = keySigner(rt.OtherKey)
		_, err := c.Register(t.Context(), nil)
		var refused *provision.RefusedError
		if !errors.As(err, &refused) {
			t.Fatalf("err = %v, want a refusal", err)
		}
	})
	t.Run("fail/unreachable-is-not-a-refusal", func(t *testing.T) {
		c := &provision.Client{IDScope: rt.Scope, RegistrationID: "dev-individual", Signer: keySigner(rt.IndividualKey),
			Transport: &provision.MQTT{Host: "127.0.0.1:1", IDScope: rt.Scope, RegistrationID: "dev-individual", Timeout: 5 * time.Second}}
		_, err := c.Register(t.Context(), nil)
		var refused *provision.RefusedError
		if err == nil || errors.As(err, &refused) {
			t.Fatalf("err = %v, want a transport error", err)
		}
	})
}
