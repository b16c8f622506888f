package tpm_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgeprov/edgeprov/testenv/swtpm"
	"github.com/edgeprov/edgeprov/tpm"
	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

// Blob offsets for RSA-2048 EK/SRK (tpm-hsm.md §3): the TPM2B_PRIVATE
// (duplicate) size field is at 312, its contents at 314..456; the
// TPM2B_ID_OBJECT contents at 2..54; the TPM2B_PUBLIC contents at 716..764.
const (
	offIDObject  = 2
	offDuplicate = 314
	offPublic    = 716
	blobSize     = 766 // with a 32-byte key
)

func TestImportAuthenticationKeyFailures(t *testing.T) {
	t.Parallel()
	// Another TPM, for blobs made to the wrong EK or SRK.
	other := swtpm.Start(t)
	od := openDevice(t, other)
	otherEK, otherSRK := deviceKeys(t, od)
	od.Close()

	flip := func(off int, bit byte) func([]byte) []byte {
		return func(b []byte) []byte { b[off] ^= bit; return b }
	}
	tests := []struct {
		name string
		// blob makes the bad blob from the device's keys.
		blob    func(t *testing.T, ek *dpsauth.EK, srk *dpsauth.SRK) []byte
		handle  tpm2.TPMHandle
		wantErr string // "" = any error; the TPM's RC differs between TPMs
	}{
		{
			name: "fail/made-for-another-tpm",
			blob: func(t *testing.T, _ *dpsauth.EK, _ *dpsauth.SRK) []byte {
				_, b := newBlob(t, otherEK, otherSRK, 32)
				return b
			},
		},
		{
			name: "fail/another-tpms-ek",
			blob: func(t *testing.T, _ *dpsauth.EK, srk *dpsauth.SRK) []byte {
				_, b := newBlob(t, otherEK, srk, 32)
				return b
			},
		},
		{
			name: "fail/another-tpms-srk",
			blob: func(t *testing.T, ek *dpsauth.EK, _ *dpsauth.SRK) []byte {
				_, b := newBlob(t, ek, otherSRK, 32)
				return b
			},
		},
		{name: "fail/flipped-bit-in-duplicate", blob: mutated(flip(offDuplicate+60, 0x10))},
		{name: "fail/flipped-bit-in-duplicate-hmac", blob: mutated(flip(offDuplicate+2, 0x01))},
		{name: "fail/flipped-bit-in-credential", blob: mutated(flip(offIDObject+40, 0x80))},
		{name: "fail/flipped-bit-in-public-unique", blob: mutated(flip(offPublic+20, 0x04))},
		{
			name:    "fail/truncated",
			blob:    mutated(func(b []byte) []byte { return b[:len(b)-1] }),
			wantErr: "truncated",
		},
		{
			name:    "fail/trailing-byte",
			blob:    mutated(func(b []byte) []byte { return append(b, 0) }),
			wantErr: "trailing",
		},
		{
			name:    "fail/empty",
			blob:    func(*testing.T, *dpsauth.EK, *dpsauth.SRK) []byte { return nil },
			wantErr: "truncated",
		},
		{
			name:    "fail/target-is-srk-handle",
			blob:    mutated(func(b []byte) []byte { return b }),
			handle:  tpm.SRKHandle,
			wantErr: "not an owner persistent handle",
		},
		{
			name:    "fail/target-is-transient-handle",
			blob:    mutated(func(b []byte) []byte { return b }),
			handle:  0x80000001,
			wantErr: "not an owner persistent handle",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inst := swtpm.Start(t)
			d := openDevice(t, inst)
			ek, srk := deviceKeys(t, d)
			// A good key first: a failed import must leave it in place.
			goodKey, good := newBlob(t, ek, srk, 32)
			if err := d.ImportAuthenticationKey(good, tpm.AuthKeyHandle); err != nil {
				t.Fatalf("importing the good blob: %v", err)
			}

			handle := tc.handle
			if handle == 0 {
				handle = tpm.AuthKeyHandle
			}
			err := d.ImportAuthenticationKey(tc.blob(t, ek, srk), handle)
			if err == nil {
				t.Fatal("ImportAuthenticationKey succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q does not mention %q", err, tc.wantErr)
			}
			t.Logf("error (as expected): %v", err)

			msg := []byte("still the good key")
			mac, err := d.HMAC(tpm.AuthKeyHandle, msg)
			if err != nil {
				t.Fatalf("HMAC after the failed import: %v", err)
			}
			if !bytes.Equal(mac, softHMAC(goodKey, msg)) {
				t.Fatal("the failed import changed the persisted key")
			}
			d.Close()
			assertNoLeaks(t, inst)
		})
	}
}

// mutated returns a blob func that builds a good blob for the device and
// then applies f to it.
func mutated(f func([]byte) []byte) func(*testing.T, *dpsauth.EK, *dpsauth.SRK) []byte {
	return func(t *testing.T, ek *dpsauth.EK, srk *dpsauth.SRK) []byte {
		_, b := newBlob(t, ek, srk, 32)
		if len(b) != blobSize {
			t.Fatalf("blob is %d bytes, want %d", len(b), blobSize)
		}
		return f(b)
	}
}

func TestHMACFailures(t *testing.T) {
	t.Parallel()
	inst := swtpm.Start(t)
	d := openDevice(t, inst)
	if _, err := d.HMAC(tpm.AuthKeyHandle, []byte("x")); err == nil {
		t.Fatal("HMAC with no key persisted succeeded")
	}
	// The SRK is no HMAC key.
	if _, err := d.StorageRootKey(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.HMAC(tpm.SRKHandle, []byte("x")); err == nil {
		t.Fatal("HMAC with the SRK succeeded")
	}
	if _, err := d.HMAC(tpm.SRKHandle, make([]byte, 3000)); err == nil {
		t.Fatal("HMAC sequence with the SRK succeeded")
	}
	// Importing before the EK/SRK exist says what to do.
	inst2 := swtpm.Start(t)
	d2 := openDevice(t, inst2)
	ek, srk := deviceKeys(t, d)
	_, blob := newBlob(t, ek, srk, 32)
	err := d2.ImportAuthenticationKey(blob, tpm.AuthKeyHandle)
	if err == nil || !strings.Contains(err.Error(), "call EndorsementKey and StorageRootKey first") {
		t.Fatalf("import on a TPM without EK: %v", err)
	}
	d.Close()
	assertNoLeaks(t, inst)
}
