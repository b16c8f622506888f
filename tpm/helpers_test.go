package tpm_test

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/edgeprov/edgeprov/testenv/swtpm"
	"github.com/edgeprov/edgeprov/tpm"
	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

// openDevice opens a device on inst and closes it when the test ends.
func openDevice(t testing.TB, inst *swtpm.Instance) *tpm.Device {
	t.Helper()
	d, err := tpm.Open(inst.Path())
	if err != nil {
		t.Fatalf("Open(%s): %v", inst.Path(), err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// deviceKeys returns the device's EK and SRK as the service parses them.
func deviceKeys(t testing.TB, d *tpm.Device) (*dpsauth.EK, *dpsauth.SRK) {
	t.Helper()
	ekBytes, err := d.EndorsementKey()
	if err != nil {
		t.Fatalf("EndorsementKey: %v", err)
	}
	srkBytes, err := d.StorageRootKey()
	if err != nil {
		t.Fatalf("StorageRootKey: %v", err)
	}
	ek, err := dpsauth.ParseEK(ekBytes)
	if err != nil {
		t.Fatalf("ParseEK(device EK): %v", err)
	}
	srk, err := dpsauth.ParseSRK(srkBytes)
	if err != nil {
		t.Fatalf("ParseSRK(device SRK): %v", err)
	}
	return ek, srk
}

// newBlob returns a random key of n bytes and its authenticationKey blob.
func newBlob(t testing.TB, ek *dpsauth.EK, srk *dpsauth.SRK, n int) (key, blob []byte) {
	t.Helper()
	key = make([]byte, n)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	blob, err := dpsauth.BuildAuthenticationKey(rand.Reader, ek, srk, key)
	if err != nil {
		t.Fatalf("BuildAuthenticationKey: %v", err)
	}
	return key, blob
}

func softHMAC(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

// loadedHandles counts transient objects and loaded sessions on the TPM;
// swtpm has no resource manager, so anything left over is a leak.
func loadedHandles(t testing.TB, tp transport.TPM) int {
	t.Helper()
	n := 0
	for _, first := range []tpm2.TPMHandle{0x80000000, 0x02000000, 0x03000000} {
		r, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(first), PropertyCount: 64}.Execute(tp)
		if err != nil {
			t.Fatalf("GetCapability(handles 0x%08x): %v", uint32(first), err)
		}
		hs, err := r.CapabilityData.Data.Handles()
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs.Handle {
			if h>>24 == first>>24 {
				n++
			}
		}
	}
	return n
}

// assertNoLeaks checks, over a fresh connection, that nothing transient is
// loaded. d must be closed (swtpm serves one connection at a time).
func assertNoLeaks(t testing.TB, inst *swtpm.Instance) {
	t.Helper()
	c, err := inst.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := loadedHandles(t, c); n != 0 {
		t.Errorf("%d transient objects or sessions left loaded in the TPM", n)
	}
}
