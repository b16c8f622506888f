package tpm

import (
	"context"
	"encoding/base64"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/secrets"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/daemon/store/bolt"
)

// TestChallengeDroppedWhenTheEnrollmentGoes: a correct answer for an
// enrollment removed since the challenge is refused, and the challenge is
// deleted. (The flows with real TPMs are in daemon/registration.)
func TestChallengeDroppedWhenTheEnrollmentGoes(t *testing.T) {
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ekRaw, srkRaw := readKey(t, "swtpm-ek.bin"), readKey(t, "swtpm-srk.bin")
	b64 := base64.StdEncoding.EncodeToString
	p, err := ParsePresented(&dpsapi.TPMAttestation{EndorsementKey: b64(ekRaw), StorageRootKey: b64(srkRaw)})
	if err != nil {
		t.Fatal(err)
	}
	e := &enrollment.Individual{RegistrationID: "tpm-1", Common: enrollment.Common{Attestation: enrollment.Attestation{
		Type: enrollment.AttestationTPM, TPM: &enrollment.TPMAttestation{EndorsementKey: b64(ekRaw)}}}}
	if err := e.Validate("e"); err != nil {
		t.Fatal(err)
	}
	enrolled, err := enrollment.NewSet([]*enrollment.Individual{e}, nil)
	if err != nil {
		t.Fatal(err)
	}
	empty, _ := enrollment.NewSet(nil, nil)
	const scope = "0ne00ABCDEF"
	box, err := secrets.New(make([]byte, secrets.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	v := &Verifier{Store: st, Sealer: box, Skew: time.Minute}
	var ch *ChallengeError
	if err := v.Challenge(ctx, scope, "tpm-1", p, enrolled, "", now); !errors.As(err, &ch) {
		t.Fatalf("Challenge = %v", err)
	}
	// The key only the TPM could unwrap, read back from the store.
	var c *store.Challenge
	if err := st.View(ctx, func(tx store.Tx) error {
		c, err = tx.Challenge(scope, "tpm-1", now)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	key, err := v.open(c)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sas.Parse(sas.Build(key, sas.DeviceResource(scope, "tpm-1"), now.Add(time.Hour), sas.DeviceKeyName))
	if err != nil {
		t.Fatal(err)
	}
	answer := Answer{Scope: scope, RegistrationID: "tpm-1", Token: tok, Purpose: Register, OperationID: "4.1", TokenTime: now, Now: now}
	if _, err := v.Verify(ctx, answer, empty); !errors.Is(err, ErrNoMatch) || errors.Is(err, ErrNoChallenge) {
		t.Fatalf("answer after the enrollment was removed: %v, want ErrNoMatch", err)
	}
	if _, err := v.Verify(ctx, answer, enrolled); !errors.Is(err, ErrNoChallenge) {
		t.Fatalf("the challenge was not dropped: %v", err)
	}
}
