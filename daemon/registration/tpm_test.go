package registration_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/registration"
	rt "github.com/edgeprov/edgeprov/daemon/registration/registrationtest"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/daemon/throttle"
	"github.com/edgeprov/edgeprov/testenv/swtpm"
	"github.com/edgeprov/edgeprov/tpm"
	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

// tpmDevice is a device with a real (software) TPM: its own swtpm, opened for
// the whole test.
type tpmDevice struct {
	dev      *tpm.Device
	ek, srk  []byte
	ekCert   []byte // DER, when the TPM carries one
	derived  string // the registration ID derived from the EK
	regID    string // the registration ID it registers under
	tpmBody  *dpsapi.TPMAttestation
	instance *swtpm.Instance
}

func newTPMDevice(t *testing.T, opts ...swtpm.Option) *tpmDevice {
	t.Helper()
	inst := swtpm.Start(t, opts...)
	dev, err := tpm.Open(inst.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	d := &tpmDevice{dev: dev, instance: inst}
	if d.ek, err = dev.EndorsementKey(); err != nil {
		t.Fatal(err)
	}
	if d.srk, err = dev.StorageRootKey(); err != nil {
		t.Fatal(err)
	}
	if d.derived, err = dev.RegistrationID(); err != nil {
		t.Fatal(err)
	}
	d.regID = d.derived
	d.tpmBody = &dpsapi.TPMAttestation{EndorsementKey: b64(d.ek), StorageRootKey: b64(d.srk)}
	if inst.EKCertificate() != nil {
		if d.ekCert, err = dev.EKCertificate(); err != nil {
			t.Fatal(err)
		}
		d.tpmBody.EndorsementKeyCertificate = b64(d.ekCert)
	}
	return d
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// individual enrolls the device's EK under regID.
func (d *tpmDevice) individual(t *testing.T, regID string) *enrollment.Individual {
	t.Helper()
	d.regID = regID
	return &enrollment.Individual{RegistrationID: regID, Common: enrollment.Common{
		Attestation: enrollment.Attestation{Type: enrollment.AttestationTPM, TPM: &enrollment.TPMAttestation{EndorsementKey: b64(d.ek)}}}}
}

// challenge sends the unsigned register call and returns the blob of the
// challenge, or the error.
func (d *tpmDevice) challenge(f *rt.Fixture, body *dpsapi.TPMAttestation) ([]byte, error) {
	_, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: d.regID,
		Body: dpsapi.DeviceRegistration{RegistrationID: d.regID, TPM: body}})
	var ch *registration.TPMChallengeError
	if !errors.As(err, &ch) {
		if err == nil {
			return nil, errors.New("no error and no challenge")
		}
		return nil, err
	}
	return ch.AuthenticationKey, nil
}

// token signs a device SAS token inside the TPM with the key at
// tpm.AuthKeyHandle, like the Node TPM client (sr URL-encoded).
func (d *tpmDevice) token(t *testing.T, f *rt.Fixture, regID string) string {
	t.Helper()
	tok, err := sas.BuildWithMAC(func(s []byte) ([]byte, error) { return d.dev.HMAC(tpm.AuthKeyHandle, s) },
		url.QueryEscape(sas.DeviceResource(rt.Scope, regID)), f.Now.Load().Add(time.Hour), sas.DeviceKeyName)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// answer imports the challenge and registers with a token signed in the TPM.
func (d *tpmDevice) answer(t *testing.T, f *rt.Fixture, blob []byte, body *dpsapi.TPMAttestation) (tok string, op *dpsapi.RegistrationOperationStatus, err error) {
	t.Helper()
	if err := d.dev.ImportAuthenticationKey(blob, tpm.AuthKeyHandle); err != nil {
		t.Fatalf("importing the challenge: %v", err)
	}
	tok = d.token(t, f, d.regID)
	op, err = f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: d.regID, Authorization: tok,
		Body: dpsapi.DeviceRegistration{TPM: body}})
	return tok, op, err
}

// provision runs the whole flow and returns the final state; the hub key is
// imported into the TPM.
func (d *tpmDevice) provision(t *testing.T, f *rt.Fixture) *dpsapi.RegistrationOperationStatus {
	t.Helper()
	blob, err := d.challenge(f, d.tpmBody)
	if err != nil {
		t.Fatalf("first register call: %v, want a challenge", err)
	}
	tok, op, err := d.answer(t, f, blob, d.tpmBody)
	if err != nil {
		t.Fatalf("answering the challenge: %v", err)
	}
	final, err := f.Service.OperationStatus(ctx, registration.PollRequest{Scope: rt.Scope, RegistrationID: d.regID, OperationID: op.OperationID, Authorization: tok})
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	rs := final.RegistrationState
	if final.Status != dpsapi.StatusAssigned || rs == nil || rs.TPM == nil || rs.TPM.AuthenticationKey == "" {
		t.Fatalf("final state %+v has no tpm.authenticationKey", rs)
	}
	hubBlob, err := base64.StdEncoding.DecodeString(rs.TPM.AuthenticationKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.dev.ImportAuthenticationKey(hubBlob, tpm.AuthKeyHandle); err != nil {
		t.Fatalf("importing the hub key: %v", err)
	}
	return final
}

// record reads the device's registration record, the KeyRef of its
// identity and the hub key the local hub keeps for it (sealed in the store).
func record(t *testing.T, f *rt.Fixture, regID string) (*store.Record, string, []byte) {
	t.Helper()
	var r *store.Record
	var ref string
	err := f.Store.View(ctx, func(tx store.Tx) error {
		var err error
		if r, err = tx.Record(rt.Scope, dpsapi.NormalizeRegistrationID(regID)); err != nil {
			return err
		}
		id, err := tx.Identity(r.AssignedHub, r.DeviceID)
		if err != nil {
			return err
		}
		ref = id.KeyRef
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	key, err := f.Local[r.AssignedHub].DeviceKey(ctx, r.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	return r, ref, key
}

// assertTPMHoldsHubKey checks that the key in the TPM is the hub key the
// service keeps: the TPM's HMAC equals a software HMAC with the hub's key.
func assertTPMHoldsHubKey(t *testing.T, d *tpmDevice, r *store.Record, hubKey []byte) {
	t.Helper()
	data := []byte(r.AssignedHub + "/devices/" + r.DeviceID + "\n1795646830")
	got, err := d.dev.HMAC(tpm.AuthKeyHandle, data)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, hubKey)
	m.Write(data)
	if len(hubKey) != 32 || !hmac.Equal(got, m.Sum(nil)) {
		t.Fatalf("the TPM's key is not the %d-byte hub key the service keeps", len(hubKey))
	}
}

func TestTPMIndividualFlow(t *testing.T) {
	t.Parallel()
	dev := newTPMDevice(t)
	aziot := newTPMDevice(t)
	disabled := newTPMDevice(t)
	dis := disabled.individual(t, "tpm-disabled")
	dis.ProvisioningStatus = enrollment.StatusDisabled
	f := rt.NewWith(t, rt.Options{Individuals: []*enrollment.Individual{dev.individual(t, dev.derived), aziot.individual(t, "tpm-aziot"), dis}})

	t.Run("ok/derived-registration-id", func(t *testing.T) {
		final := dev.provision(t, f)
		rs := final.RegistrationState
		if rs.RegistrationID != dev.derived || rs.DeviceID != dev.derived || rs.SymmetricKey != nil || rs.Substatus != dpsapi.SubstatusInitialAssignment {
			t.Fatalf("state = %+v", rs)
		}
		r, ref, key := record(t, f, dev.derived)
		assertTPMHoldsHubKey(t, dev, r, key)
		if r.Attestation != enrollment.AttestationTPM || !strings.HasPrefix(ref, "tpm:"+dev.derived+"#issued-") {
			t.Fatalf("record attestation %q, identity KeyRef %q", r.Attestation, ref)
		}
		// The status lookup never returns the hub key.
		if st, err := f.Service.RegistrationStatus(ctx, registration.StatusRequest{Scope: rt.Scope, RegistrationID: dev.regID,
			Authorization: dev.token(t, f, dev.regID)}); !errors.Is(err, registration.ErrUnauthorized) {
			// The TPM now holds the hub key, not the challenge key: the
			// service does not know it as a device token key.
			t.Fatalf("status lookup signed with the hub key: %+v, %v; want unauthorized", st, err)
		}

		// Re-registration issues a new hub key (as DPS does), and the TPM
		// holds the new one.
		again := dev.provision(t, f)
		r2, ref2, key2 := record(t, f, dev.derived)
		assertTPMHoldsHubKey(t, dev, r2, key2)
		if bytes.Equal(key, key2) || ref == ref2 || again.RegistrationState.ETag == final.RegistrationState.ETag {
			t.Fatal("re-registration kept the hub key")
		}
	})

	t.Run("ok/answer-without-tpm-body-like-aziot", func(t *testing.T) {
		blob, err := aziot.challenge(f, aziot.tpmBody)
		if err != nil {
			t.Fatal(err)
		}
		tok, op, err := aziot.answer(t, f, blob, nil)
		if err != nil {
			t.Fatal(err)
		}
		st, err := f.Service.OperationStatus(ctx, registration.PollRequest{Scope: rt.Scope, RegistrationID: "tpm-aziot", OperationID: op.OperationID, Authorization: tok})
		if err != nil || st.Status != dpsapi.StatusAssigned || st.RegistrationState.TPM == nil {
			t.Fatalf("poll = %+v, %v", st, err)
		}
		// The status lookup accepts the challenge key while it lives.
		if _, err := f.Service.RegistrationStatus(ctx, registration.StatusRequest{Scope: rt.Scope, RegistrationID: "tpm-aziot", Authorization: tok}); err != nil {
			t.Fatalf("status lookup with the challenge key: %v", err)
		}
		// Another operation ID is not readable with this challenge's key.
		if _, err := f.Service.OperationStatus(ctx, registration.PollRequest{Scope: rt.Scope, RegistrationID: "tpm-aziot", OperationID: "4.0.other", Authorization: tok}); !errors.Is(err, registration.ErrUnauthorized) {
			t.Fatalf("poll of another operation: %v, want unauthorized", err)
		}
	})

	t.Run("fail/disabled-enrollment-fails-after-the-challenge", func(t *testing.T) {
		blob, err := disabled.challenge(f, disabled.tpmBody)
		if err != nil {
			t.Fatal(err)
		}
		tok, op, err := disabled.answer(t, f, blob, disabled.tpmBody)
		if err != nil {
			t.Fatal(err)
		}
		st, err := f.Service.OperationStatus(ctx, registration.PollRequest{Scope: rt.Scope, RegistrationID: "tpm-disabled", OperationID: op.OperationID, Authorization: tok})
		if err != nil || st.Status != dpsapi.StatusFailed || st.RegistrationState.ErrorCode != dpsapi.CodeEnrollmentDisabled || st.RegistrationState.TPM != nil {
			t.Fatalf("poll = %+v, %v; want failed (disabled) without a key", st, err)
		}
		assertNoRecord(t, f, "tpm-disabled")
	})
}

// TestTPMRefusals: what must not register, and must write nothing but
// (for an enrolled EK) the challenge.
func TestTPMRefusals(t *testing.T) {
	t.Parallel()
	a, b := newTPMDevice(t), newTPMDevice(t)
	f := rt.NewWith(t, rt.Options{Individuals: []*enrollment.Individual{a.individual(t, "tpm-a"), b.individual(t, "tpm-b")}})

	// reshaped re-marshals a's EK after changing its public area: keys that
	// are well-formed but not an RSA-2048 EK of the standard template.
	reshaped := func(change func(*tpm2.TPMTPublic)) func(*testing.T) *dpsapi.TPMAttestation {
		return func(t *testing.T) *dpsapi.TPMAttestation {
			pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](a.ek[2:])
			if err != nil {
				t.Fatal(err)
			}
			change(pub)
			return &dpsapi.TPMAttestation{EndorsementKey: b64(tpm2.Marshal(tpm2.New2B(*pub))), StorageRootKey: b64(a.srk)}
		}
	}
	body := func(ek, srk []byte) *dpsapi.TPMAttestation {
		return &dpsapi.TPMAttestation{EndorsementKey: b64(ek), StorageRootKey: b64(srk)}
	}
	oversized := append(bytes.Clone(a.ek), make([]byte, 2000)...)
	oversized[0], oversized[1] = byte((len(oversized)-2)>>8), byte(len(oversized)-2)
	badRequests := []struct {
		name string
		body func(t *testing.T) *dpsapi.TPMAttestation
		want string
	}{
		{"fail/ek-truncated", func(*testing.T) *dpsapi.TPMAttestation { return body(a.ek[:len(a.ek)-10], a.srk) }, "truncated"},
		{"fail/ek-trailing-byte", func(*testing.T) *dpsapi.TPMAttestation { return body(append(bytes.Clone(a.ek), 0), a.srk) }, "trailing"},
		{"fail/ek-oversized", func(*testing.T) *dpsapi.TPMAttestation { return body(oversized, a.srk) }, "more than"},
		{"fail/ek-empty-size", func(*testing.T) *dpsapi.TPMAttestation { return body([]byte{0, 0}, a.srk) }, "empty"},
		{"fail/srk-truncated", func(*testing.T) *dpsapi.TPMAttestation { return body(a.ek, a.srk[:100]) }, "truncated"},
		{"fail/srk-missing", func(*testing.T) *dpsapi.TPMAttestation {
			return &dpsapi.TPMAttestation{EndorsementKey: b64(a.ek)}
		}, "storageRootKey is required"},
		{"fail/ek-missing", func(*testing.T) *dpsapi.TPMAttestation { return &dpsapi.TPMAttestation{StorageRootKey: b64(a.srk)} }, "endorsementKey is required"},
		{"fail/srk-given-as-ek", func(*testing.T) *dpsapi.TPMAttestation { return body(a.srk, a.srk) }, "not accepted"},
		{"fail/ek-given-as-srk", func(*testing.T) *dpsapi.TPMAttestation { return body(a.ek, a.ek) }, "not accepted"},
		{"fail/ecc-ek-template", reshaped(func(p *tpm2.TPMTPublic) { *p = tpm2.ECCEKTemplate }), "want RSA"},
		{"fail/rsa-3072", reshaped(func(p *tpm2.TPMTPublic) {
			parms, _ := p.Parameters.RSADetail()
			parms.KeyBits = 3072
			p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: bytes.Repeat([]byte{0xc5}, 384)})
		}), "2048"},
		{"fail/ek-without-the-ek-policy", reshaped(func(p *tpm2.TPMTPublic) { p.AuthPolicy = tpm2.TPM2BDigest{} }), "authPolicy"},
		{"fail/ek-usable-with-a-password", reshaped(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.UserWithAuth = true }), "forbidden"},
		{"fail/ek-aes-256", reshaped(func(p *tpm2.TPMTPublic) {
			parms, _ := p.Parameters.RSADetail()
			parms.Symmetric.KeyBits = tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(256))
		}), "AES-128-CFB"},
		{"fail/ek-not-base64", func(*testing.T) *dpsapi.TPMAttestation {
			return &dpsapi.TPMAttestation{EndorsementKey: "AToA!!", StorageRootKey: b64(a.srk)}
		}, "base64"},
		{"fail/ek-certificate-garbage", func(*testing.T) *dpsapi.TPMAttestation {
			b := body(a.ek, a.srk)
			b.EndorsementKeyCertificate = b64([]byte("not a certificate"))
			return b
		}, "endorsementKeyCertificate"},
	}
	for _, tt := range badRequests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.challenge(f, tt.body(t))
			var bad *registration.BadRequestError
			if !errors.As(err, &bad) || bad.Code != dpsapi.CodeInvalidAttestation || !strings.Contains(bad.Msg, tt.want) {
				t.Fatalf("err = %v, want bad request %d mentioning %q", err, dpsapi.CodeInvalidAttestation, tt.want)
			}
			assertNothingWritten(t, f)
			assertNoChallenge(t, f, "tpm-a")
		})
	}

	unauthorized := []struct {
		name, regID string
		body        *dpsapi.TPMAttestation
	}{
		{"fail/unknown-registration-id", "tpm-stranger", a.tpmBody},
		{"fail/another-devices-ek", "tpm-a", b.tpmBody},
		{"fail/symmetric-key-enrollment", "dev-individual", a.tpmBody},
		{"fail/derived-id-not-enrolled", a.derived, a.tpmBody},
	}
	for _, tt := range unauthorized {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: tt.regID, Body: dpsapi.DeviceRegistration{TPM: tt.body}})
			if !errors.Is(err, registration.ErrUnauthorized) {
				t.Fatalf("err = %v, want unauthorized (no challenge)", err)
			}
			assertNothingWritten(t, f)
			assertNoChallenge(t, f, tt.regID)
		})
	}

	t.Run("fail/token-without-a-challenge", func(t *testing.T) {
		// b's TPM holds no key yet at the handle: sign with a key imported for
		// nothing the service knows.
		k, blob := foreignBlob(t, b)
		if err := b.dev.ImportAuthenticationKey(blob, tpm.AuthKeyHandle); err != nil {
			t.Fatal(err)
		}
		tok := b.token(t, f, "tpm-b")
		if tok != sas.Build(k, url.QueryEscape(sas.DeviceResource(rt.Scope, "tpm-b")), f.Now.Load().Add(time.Hour), sas.DeviceKeyName) {
			t.Fatal("the TPM does not sign with the imported key")
		}
		if _, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: "tpm-b", Authorization: tok}); !errors.Is(err, registration.ErrUnauthorized) {
			t.Fatalf("err = %v, want unauthorized", err)
		}
		assertNothingWritten(t, f)
	})

	t.Run("fail/sas-signed-with-another-devices-challenge-key", func(t *testing.T) {
		blobA, err := a.challenge(f, a.tpmBody)
		if err != nil {
			t.Fatal(err)
		}
		blobB, err := b.challenge(f, b.tpmBody)
		if err != nil {
			t.Fatal(err)
		}
		// b answers for a with its own (valid, current) challenge key.
		if err := b.dev.ImportAuthenticationKey(blobB, tpm.AuthKeyHandle); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: "tpm-a", Authorization: b.token(t, f, "tpm-a")}); !errors.Is(err, registration.ErrUnauthorized) {
			t.Fatalf("err = %v, want unauthorized", err)
		}
		// Nor can b import a's challenge: it is wrapped to a's EK.
		if err := b.dev.ImportAuthenticationKey(blobA, tpm.AuthKeyHandle); err == nil {
			t.Fatal("b's TPM imported a challenge made for a's TPM")
		}
		assertNothingWritten(t, f)
	})

	t.Run("fail/replayed-answer", func(t *testing.T) {
		blob, err := a.challenge(f, a.tpmBody)
		if err != nil {
			t.Fatal(err)
		}
		tok, op, err := a.answer(t, f, blob, a.tpmBody)
		if err != nil {
			t.Fatal(err)
		}
		before, _, beforeKey := record(t, f, "tpm-a")
		if _, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: "tpm-a", Authorization: tok,
			Body: dpsapi.DeviceRegistration{TPM: a.tpmBody}}); !errors.Is(err, registration.ErrUnauthorized) {
			t.Fatalf("replayed answer: %v, want unauthorized", err)
		}
		after, _, afterKey := record(t, f, "tpm-a")
		if after.ETag != before.ETag || !bytes.Equal(afterKey, beforeKey) {
			t.Fatal("a replayed answer wrote a new registration")
		}
		// The answer still polls its own operation.
		if st, err := f.Service.OperationStatus(ctx, registration.PollRequest{Scope: rt.Scope, RegistrationID: "tpm-a", OperationID: op.OperationID, Authorization: tok}); err != nil || st.Status != dpsapi.StatusAssigned {
			t.Fatalf("poll after the replay: %+v, %v", st, err)
		}
	})

	t.Run("fail/expired-challenge", func(t *testing.T) {
		blob, err := b.challenge(f, b.tpmBody)
		if err != nil {
			t.Fatal(err)
		}
		saved := *f.Now.Load()
		t.Cleanup(func() { f.Now.Store(&saved) })
		later := saved.Add(6 * time.Minute)
		f.Now.Store(&later)
		if _, _, err := b.answer(t, f, blob, b.tpmBody); !errors.Is(err, registration.ErrUnauthorized) {
			t.Fatalf("answer after the challenge expired: %v, want unauthorized", err)
		}
		assertNoRecord(t, f, "tpm-b")
	})

	t.Run("fail/answer-to-a-replaced-challenge", func(t *testing.T) {
		blob, err := b.challenge(f, b.tpmBody)
		if err != nil {
			t.Fatal(err)
		}
		// Anyone who knows the (public) EK can ask for a new challenge, which
		// replaces the pending one: DPS's protocol has the same property.
		if _, err := b.challenge(f, b.tpmBody); err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.answer(t, f, blob, b.tpmBody); !errors.Is(err, registration.ErrUnauthorized) {
			t.Fatalf("answer to the replaced challenge: %v, want unauthorized", err)
		}
		assertNoRecord(t, f, "tpm-b")
	})

	t.Run("fail/answer-names-other-keys", func(t *testing.T) {
		blob, err := b.challenge(f, b.tpmBody)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.answer(t, f, blob, a.tpmBody); !errors.Is(err, registration.ErrUnauthorized) {
			t.Fatalf("answer repeating another TPM's keys: %v, want unauthorized", err)
		}
		assertNoRecord(t, f, "tpm-b")
	})
}

func assertNoChallenge(t *testing.T, f *rt.Fixture, regID string) {
	t.Helper()
	err := f.Store.View(ctx, func(tx store.Tx) error {
		if c, err := tx.Challenge(rt.Scope, dpsapi.NormalizeRegistrationID(regID), *f.Now.Load()); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("challenge stored for %s: %+v, %v", regID, c, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// foreignBlob wraps a random key to d's TPM, as no service of this test does.
func foreignBlob(t *testing.T, d *tpmDevice) (key, blob []byte) {
	t.Helper()
	ek, err := dpsauth.ParseEK(d.ek)
	if err != nil {
		t.Fatal(err)
	}
	srk, err := dpsauth.ParseSRK(d.srk)
	if err != nil {
		t.Fatal(err)
	}
	key = make([]byte, 32)
	rand.Read(key)
	if blob, err = dpsauth.BuildAuthenticationKey(nil, ek, srk, key); err != nil {
		t.Fatal(err)
	}
	return key, blob
}

// readKeys returns a swtpm's EK and SRK kept in tpm/dpsauth/testdata.
func readKeys(tb testing.TB) (ek, srk []byte) {
	tb.Helper()
	var err error
	if ek, err = os.ReadFile("../../tpm/dpsauth/testdata/swtpm-ek.bin"); err != nil {
		tb.Fatal(err)
	}
	if srk, err = os.ReadFile("../../tpm/dpsauth/testdata/swtpm-srk.bin"); err != nil {
		tb.Fatal(err)
	}
	return ek, srk
}

// challengeKey reads back the challenge key the service sealed for regID,
// which only the device's TPM could otherwise recover: for benchmarks that
// answer in software.
func challengeKey(tb testing.TB, f *rt.Fixture, regID string) []byte {
	tb.Helper()
	var c *store.Challenge
	if err := f.Store.View(ctx, func(tx store.Tx) error {
		var err error
		c, err = tx.Challenge(rt.Scope, regID, *f.Now.Load())
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	key, err := f.Sealer.Open(c.SealedKey, []byte("tpm-challenge\x00"+rt.Scope+"\x00"+regID))
	if err != nil {
		tb.Fatal(err)
	}
	return key
}

type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) next() int64 { return c.n.Add(1) }

// ekCA is a TPM manufacturer CA.
type ekCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newEKCA(t *testing.T, name string) *ekCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{name}, CommonName: name + " EK CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &ekCA{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

func tpmGroup(t *testing.T, id string, cas ...*ekCA) *enrollment.Group {
	t.Helper()
	var pems []string
	for _, c := range cas {
		pems = append(pems, c.pem)
	}
	return &enrollment.Group{EnrollmentGroupID: id, Common: enrollment.Common{
		Attestation: enrollment.Attestation{Type: enrollment.AttestationTPM, TPM: &enrollment.TPMAttestation{EKCACertificates: pems}}}}
}

func TestTPMGroupByEKCertificate(t *testing.T) {
	t.Parallel()
	vendorA, vendorB := newEKCA(t, "Vendor A"), newEKCA(t, "Vendor B")
	good := newTPMDevice(t, swtpm.WithEKCertificate(vendorA.cert, vendorA.key))
	thief := newTPMDevice(t, swtpm.WithEKCertificate(vendorA.cert, vendorA.key))
	foreign := newTPMDevice(t, swtpm.WithEKCertificate(vendorB.cert, vendorB.key))
	f := rt.NewWith(t, rt.Options{Groups: []*enrollment.Group{tpmGroup(t, "vendor-a-fleet", vendorA)}})

	t.Run("ok/ek-certificate-chains-to-the-group-ca", func(t *testing.T) {
		final := good.provision(t, f)
		rs := final.RegistrationState
		if rs.RegistrationID != good.derived || rs.DeviceID != good.derived {
			t.Fatalf("state = %+v", rs)
		}
		r, _, key := record(t, f, good.derived)
		if r.EnrollmentGroupID != "vendor-a-fleet" {
			t.Fatalf("record group = %q", r.EnrollmentGroupID)
		}
		assertTPMHoldsHubKey(t, good, r, key)
	})

	t.Run("fail/ek-certificate-from-another-ca", func(t *testing.T) {
		if _, err := foreign.challenge(f, foreign.tpmBody); !errors.Is(err, registration.ErrUnauthorized) {
			t.Fatalf("err = %v, want unauthorized", err)
		}
		assertNoChallenge(t, f, foreign.derived)
	})

	t.Run("fail/registration-id-not-derived-from-the-ek", func(t *testing.T) {
		named := *good
		named.regID = "vendor-a-device-1"
		if _, err := named.challenge(f, good.tpmBody); !errors.Is(err, registration.ErrUnauthorized) {
			t.Fatalf("err = %v, want unauthorized", err)
		}
	})

	t.Run("fail/no-ek-certificate", func(t *testing.T) {
		body := *thief.tpmBody
		body.EndorsementKeyCertificate = ""
		if _, err := thief.challenge(f, &body); !errors.Is(err, registration.ErrUnauthorized) {
			t.Fatalf("err = %v, want unauthorized", err)
		}
	})

	t.Run("fail/certificate-of-another-ek", func(t *testing.T) {
		// thief's own EK with good's certificate.
		body := *thief.tpmBody
		body.EndorsementKeyCertificate = good.tpmBody.EndorsementKeyCertificate
		if _, err := thief.challenge(f, &body); !errors.Is(err, registration.ErrUnauthorized) {
			t.Fatalf("err = %v, want unauthorized", err)
		}
	})

	t.Run("fail/swapped-in-another-tpms-ek-cannot-answer", func(t *testing.T) {
		// thief presents good's EK and EK certificate (both public) under
		// good's registration ID, with its own SRK: the service challenges
		// good's EK, and thief's TPM cannot import the challenge.
		swapped := *thief
		swapped.regID = good.derived
		body := &dpsapi.TPMAttestation{EndorsementKey: b64(good.ek), StorageRootKey: b64(thief.srk), EndorsementKeyCertificate: b64(good.ekCert)}
		blob, err := swapped.challenge(f, body)
		if err != nil {
			t.Fatalf("the service refused a valid EK certificate: %v", err)
		}
		if err := thief.dev.ImportAuthenticationKey(blob, tpm.AuthKeyHandle); err == nil {
			t.Fatal("thief's TPM imported a challenge wrapped to another TPM's EK")
		}
		// Whatever key the thief's TPM holds, its answer does not verify.
		_, foreign := foreignBlob(t, thief)
		if err := thief.dev.ImportAuthenticationKey(foreign, tpm.AuthKeyHandle); err != nil {
			t.Fatal(err)
		}
		before, _, _ := record(t, f, good.derived)
		if _, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: good.derived,
			Authorization: swapped.token(t, f, good.derived), Body: dpsapi.DeviceRegistration{TPM: body}}); !errors.Is(err, registration.ErrUnauthorized) {
			t.Fatalf("thief's answer: %v, want unauthorized", err)
		}
		after, _, _ := record(t, f, good.derived)
		if after.ETag != before.ETag {
			t.Fatal("the thief's attempt wrote a registration")
		}
	})
}

// BenchmarkTPMChallenge measures the service side of a TPM challenge through
// the registration service: parsing EK and SRK, matching the enrollment,
// building the authenticationKey blob (two RSA-OAEP encryptions, KDFs,
// AES-CFB, HMAC) and storing the challenge durably in bbolt (group commit
// across parallel requests). No TPM is involved: the EK and SRK are a
// swtpm's, from tpm/dpsauth/testdata.
func BenchmarkTPMChallenge(b *testing.B) {
	ek, srk := readKeys(b)
	const devices = 1000
	var inds []*enrollment.Individual
	for i := range devices {
		inds = append(inds, &enrollment.Individual{RegistrationID: fmt.Sprintf("tpm-%04d", i), Common: enrollment.Common{
			Attestation: enrollment.Attestation{Type: enrollment.AttestationTPM, TPM: &enrollment.TPMAttestation{EndorsementKey: b64(ek)}}}})
	}
	f := rt.NewWith(b, rt.Options{Individuals: inds})
	body := dpsapi.DeviceRegistration{TPM: &dpsapi.TPMAttestation{EndorsementKey: b64(ek), StorageRootKey: b64(srk)}}
	for _, bc := range []struct {
		name     string
		parallel bool
	}{{"serial", false}, {"parallel-32", true}} {
		b.Run(bc.name, func(b *testing.B) {
			var n int64
			challenge := func(i int64) {
				_, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: fmt.Sprintf("tpm-%04d", i%devices), Body: body})
				var ch *registration.TPMChallengeError
				if !errors.As(err, &ch) || len(ch.AuthenticationKey) != 766 {
					b.Fatalf("Register = %v, want a 766-byte challenge", err)
				}
			}
			b.ReportAllocs()
			if !bc.parallel {
				for b.Loop() {
					n++
					challenge(n)
				}
				return
			}
			var ctr atomicCounter
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					challenge(ctr.next())
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "challenges/s")
		})
	}
}

// BenchmarkTPMFlow measures the service side of a whole TPM registration,
// no TPM involved: the challenge, the answer (a token signed in software
// with the challenge key, read back from the store as only a TPM could
// recover it), which consumes the challenge, issues and wraps the hub key and
// commits record, identity and operation, and one poll.
func BenchmarkTPMFlow(b *testing.B) {
	ek, srk := readKeys(b)
	const devices = 1000
	var inds []*enrollment.Individual
	for i := range devices {
		inds = append(inds, &enrollment.Individual{RegistrationID: fmt.Sprintf("tpm-%04d", i), Common: enrollment.Common{
			Attestation: enrollment.Attestation{Type: enrollment.AttestationTPM, TPM: &enrollment.TPMAttestation{EndorsementKey: b64(ek)}}}})
	}
	f := rt.NewWith(b, rt.Options{Individuals: inds})
	body := dpsapi.DeviceRegistration{TPM: &dpsapi.TPMAttestation{EndorsementKey: b64(ek), StorageRootKey: b64(srk)}}
	var ctr atomicCounter
	b.ReportAllocs()
	b.SetParallelism(32)
	b.ResetTimer() // parsing 1,000 enrolled EKs is not part of it
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("tpm-%04d", ctr.next()%devices)
			if _, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: id, Body: body}); !errors.As(err, new(*registration.TPMChallengeError)) {
				b.Fatalf("challenge: %v", err)
			}
			key := challengeKey(b, f, id)
			tok := f.Token(id, key)
			op, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: id, Authorization: tok, Body: body})
			if err != nil {
				// Two goroutines may work on the same device: one challenge
				// replaces the other's.
				if errors.Is(err, registration.ErrUnauthorized) {
					continue
				}
				b.Fatal(err)
			}
			st, err := f.Service.OperationStatus(ctx, registration.PollRequest{Scope: rt.Scope, RegistrationID: id, OperationID: op.OperationID, Authorization: tok})
			if err != nil || st.Status != dpsapi.StatusAssigned || st.RegistrationState.TPM == nil {
				b.Fatal(st, err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}

// TestTPMThrottledAnswerKeepsTheChallenge: a per-device limit refuses an
// answer before it uses the challenge up, so the device can send the same
// answer again once the window has passed.
func TestTPMThrottledAnswerKeepsTheChallenge(t *testing.T) {
	t.Parallel()
	dev := newTPMDevice(t)
	f := rt.NewWith(t, rt.Options{Individuals: []*enrollment.Individual{dev.individual(t, "tpm-limited")}})
	f.Reconfigure(func(c *registration.Config) { c.RegisterLimit = throttle.NewWindow(1, 2*time.Minute, 100) })
	dev.provision(t, f) // the one registration the window allows

	blob, err := dev.challenge(f, dev.tpmBody)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := dev.answer(t, f, blob, dev.tpmBody)
	var thr *registration.ThrottledError
	if !errors.As(err, &thr) {
		t.Fatalf("second registration within the window: %v, want throttled", err)
	}
	later := f.Now.Load().Add(3 * time.Minute) // the window passed, the challenge lives
	f.Now.Store(&later)
	op, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: "tpm-limited", Authorization: tok})
	if err != nil {
		t.Fatalf("the same answer after the window: %v", err)
	}
	if _, err := f.Service.OperationStatus(ctx, registration.PollRequest{Scope: rt.Scope, RegistrationID: "tpm-limited", OperationID: op.OperationID, Authorization: tok}); err != nil {
		t.Fatal(err)
	}
}
