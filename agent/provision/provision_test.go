package provision_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/agent/credential"
	"github.com/edgeprov/edgeprov/agent/provision"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/endpoint/https"
	mqttep "github.com/edgeprov/edgeprov/daemon/endpoint/mqtt"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	rt "github.com/edgeprov/edgeprov/daemon/registration/registrationtest"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/testenv/swtpm"
	"github.com/edgeprov/edgeprov/tpm"
)

// service is the real registration service behind the real HTTPS device
// endpoint (httptest TLS), with the TPMs' EKs enrolled individually.
type service struct {
	f   *rt.Fixture
	srv *httptest.Server
}

func newService(tb testing.TB, enrolled map[string]*credential.TPM) *service {
	tb.Helper()
	var inds []*enrollment.Individual
	for id, c := range enrolled {
		inds = append(inds, &enrollment.Individual{RegistrationID: id, Common: enrollment.Common{Attestation: enrollment.Attestation{
			Type: enrollment.AttestationTPM, TPM: &enrollment.TPMAttestation{EndorsementKey: c.Evidence().EndorsementKey}}}})
	}
	f := rt.NewWith(tb, rt.Options{Individuals: inds})
	srv := httptest.NewTLSServer(https.NewHandler(f.Service, 1, nil))
	tb.Cleanup(srv.Close)
	return &service{f: f, srv: srv}
}

// startMQTT serves the same service over MQTT/TLS too, with the HTTPS
// server's certificate, and returns its address.
func (s *service) startMQTT(tb testing.TB) string {
	tb.Helper()
	m, err := mqttep.New(mqttep.Config{Registrar: s.f.Service, TLS: s.srv.TLS.Clone(), RetryAfter: 1})
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	if err := m.Start(ln); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return ln.Addr().String()
}

func (s *service) client(regID string, t provision.TPM, timings *provision.Timings) *provision.Client {
	return &provision.Client{Host: strings.TrimPrefix(s.srv.URL, "https://"), IDScope: rt.Scope, RegistrationID: regID,
		HTTP: s.srv.Client(), TPM: t, Timings: timings}
}

func openTPM(tb testing.TB) *credential.TPM {
	tb.Helper()
	inst := swtpm.Start(tb)
	c, err := credential.OpenTPM(inst.Path(), uint32(tpm.AuthKeyHandle), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// hubKey reads the hub key the service's local hub keeps (sealed) for regID.
func (s *service) hubKey(tb testing.TB, regID string) []byte {
	tb.Helper()
	var r *store.Record
	err := s.f.Store.View(context.Background(), func(tx store.Tx) error {
		var err error
		r, err = tx.Record(rt.Scope, regID)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	key, err := s.f.Local[r.AssignedHub].DeviceKey(context.Background(), r.DeviceID)
	if err != nil {
		tb.Fatal(err)
	}
	return key
}

func TestTPMRegister(t *testing.T) {
	t.Parallel()
	dev, stranger := openTPM(t), openTPM(t)
	s := newService(t, map[string]*credential.TPM{dev.RegistrationID(): dev, "tpm-named": stranger})

	t.Run("ok/challenge-answer-hub-key", func(t *testing.T) {
		timings := &provision.Timings{}
		op, err := s.client(dev.RegistrationID(), dev, timings).Register(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if op.Status != "assigned" || op.RegistrationState.DeviceID != dev.RegistrationID() {
			t.Fatalf("final state %+v", op.RegistrationState)
		}
		// The key now in the TPM is the hub key the service stored.
		tok, err := dev.Token("hub-x/devices/"+dev.RegistrationID(), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if err := parseAndVerify(tok, s.hubKey(t, dev.RegistrationID())); err != nil {
			t.Fatalf("TPM-signed token with the stored hub key: %v", err)
		}
		if timings.TPM <= 0 || timings.Network <= 0 || timings.Wait < time.Second {
			t.Fatalf("timings not accumulated: %+v", timings)
		}
	})

	t.Run("fail/registration-id-of-another-tpm", func(t *testing.T) {
		// stranger's TPM claims dev's registration ID: no challenge.
		_, err := s.client(dev.RegistrationID(), stranger, nil).Register(t.Context(), nil)
		var refused *provision.RefusedError
		if !errors.As(err, &refused) || refused.HTTPStatus != http.StatusUnauthorized || refused.Code != 401002 {
			t.Fatalf("err = %v, want refused 401002", err)
		}
	})

	t.Run("fail/service-sends-no-challenge", func(t *testing.T) {
		// A symmetric-key enrollment: the unsigned call is a plain 401.
		_, err := s.client("dev-individual", dev, nil).Register(t.Context(), nil)
		var refused *provision.RefusedError
		if !errors.As(err, &refused) || refused.HTTPStatus != http.StatusUnauthorized {
			t.Fatalf("err = %v, want refused 401", err)
		}
	})
}

func parseAndVerify(token string, key []byte) error {
	tok, err := sas.Parse(token)
	if err != nil {
		return err
	}
	return tok.Verify(key)
}

// BenchmarkTPMProvision runs the agent's whole TPM flow in process against
// swtpm and the real service over TLS, and reports where the time goes:
// tpm-ms (import challenge, sign twice, import hub key), net-ms (three TLS
// round trips, including the service's work: challenge, registration, poll)
// and wait-ms (the retry-after of 1 s before the poll, the service's
// minimum). The first PUT of each run replaces the previous challenge, so
// one device can register again and again (each time with a new hub key).
func BenchmarkTPMProvision(b *testing.B) {
	dev := openTPM(b)
	s := newService(b, map[string]*credential.TPM{dev.RegistrationID(): dev})
	c := s.client(dev.RegistrationID(), dev, nil)
	var total provision.Timings
	for b.Loop() {
		c.Timings = &provision.Timings{}
		if _, err := c.Register(context.Background(), nil); err != nil {
			b.Fatal(err)
		}
		total.TPM += c.Timings.TPM
		total.Network += c.Timings.Network
		total.Wait += c.Timings.Wait
	}
	n := float64(b.N)
	b.ReportMetric(float64(total.TPM.Microseconds())/1000/n, "tpm-ms/op")
	b.ReportMetric(float64(total.Network.Microseconds())/1000/n, "net-ms/op")
	b.ReportMetric(float64(total.Wait.Microseconds())/1000/n, "wait-ms/op")
}
