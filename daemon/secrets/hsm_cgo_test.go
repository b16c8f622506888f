//go:build cgo

package secrets_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/secrets"
	"github.com/edgeprov/edgeprov/hsm"
	"github.com/edgeprov/edgeprov/testenv/softhsm"
)

var env *softhsm.Env

func TestMain(m *testing.M) {
	env = softhsm.Setup(m, "secrets")
	defer env.Close()
	m.Run()
}

// TestFromHSM derives the data key inside SoftHSM2: it equals HMAC-SHA256 of
// the label with the token's key (checked with a key imported for the
// purpose), and a generated key, which cannot be read, seals and opens again
// after the module is reopened.
func TestFromHSM(t *testing.T) {
	ctx := context.Background()
	m, err := hsm.OpenURI(ctx, env.URI("secrets"))
	if err != nil {
		t.Fatal(err)
	}
	known := bytes.Repeat([]byte{7}, 32)
	k, err := m.ImportHMACKey(ctx, "known", known)
	if err != nil {
		t.Fatal(err)
	}
	box, err := secrets.FromMAC(k.Sum)
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, known)
	mac.Write([]byte(secrets.DeriveLabel))
	want, err := secrets.New(mac.Sum(nil))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := box.Seal([]byte("secret"), []byte("c"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := want.Open(sealed, []byte("c")); err != nil || string(got) != "secret" {
		t.Fatalf("the HSM-derived key is not HMAC(K, label): %v", err)
	}

	gen, err := m.GenerateHMACKey(ctx, "data-key", 256)
	if err != nil {
		t.Fatal(err)
	}
	box1, err := secrets.FromMAC(gen.Sum)
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ = box1.Seal([]byte("secret"), nil)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m, err = hsm.OpenURI(ctx, env.KeyURI("secrets", "data-key"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	k2, err := m.HMACKeyFromURI(ctx, m.URI())
	if err != nil {
		t.Fatal(err)
	}
	box2, err := secrets.FromMAC(k2.Sum)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := box2.Open(sealed, nil); err != nil || string(got) != "secret" {
		t.Fatalf("after reopening the token: %q, %v", got, err)
	}
	if _, err := want.Open(sealed, nil); !errors.Is(err, secrets.ErrWrongKey) {
		t.Fatalf("another key opens it: %v", err)
	}
}
