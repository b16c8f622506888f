//go:build !cgo

package hsm

import (
	"context"
	"errors"
	"testing"
)

func TestNoCgo(t *testing.T) {
	ctx := context.Background()
	const uri = "pkcs11:token=dev-agent;object=device-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/edgeprov/pin"
	if _, err := OpenURI(ctx, uri); !errors.Is(err, ErrNoPKCS11) {
		t.Fatalf("OpenURI() error = %v, want ErrNoPKCS11", err)
	}
	if _, err := OpenURI(ctx, "pkcs11:?pin-value=1"); !errors.Is(err, ErrInvalidURI) {
		t.Fatalf("OpenURI(pin-value) error = %v, want ErrInvalidURI (the URI is still checked)", err)
	}
	if ErrNoPKCS11.Error() != "edgeprov was built without PKCS#11 support (CGO_ENABLED=0)" {
		t.Fatalf("ErrNoPKCS11 = %q", ErrNoPKCS11)
	}
	var m *Module
	if _, err := m.Signer(ctx, Label("k")); !errors.Is(err, ErrNoPKCS11) {
		t.Fatalf("Signer() error = %v", err)
	}
	if _, err := (&HMACKey{}).Sum(nil); err == nil {
		t.Fatal("Sum on an empty HMACKey succeeded")
	}
}
