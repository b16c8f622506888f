package tpm_test

import (
	"bytes"
	"testing"

	"github.com/edgeprov/edgeprov/testenv/swtpm"
	"github.com/edgeprov/edgeprov/tpm"
)

// BenchmarkImportAuthenticationKey measures the device side of one DPS
// challenge against swtpm: ActivateCredential (with the EK policy session),
// Import, Load, evicting the previous key, persisting, flushing. The same
// blob is imported over and over; the TPM does the same work each time.
func BenchmarkImportAuthenticationKey(b *testing.B) {
	inst := swtpm.Start(b)
	d := openDevice(b, inst)
	ek, srk := deviceKeys(b, d)
	_, blob := newBlob(b, ek, srk, 32)
	b.ReportAllocs()
	for b.Loop() {
		if err := d.ImportAuthenticationKey(blob, tpm.AuthKeyHandle); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHMAC measures TPM2_HMAC with the persisted key over a SAS
// string-to-sign (one ReadPublic for the key's Name plus the HMAC) and over
// 4 KiB (HMAC_Start, 4 SequenceUpdate/SequenceComplete).
func BenchmarkHMAC(b *testing.B) {
	inst := swtpm.Start(b)
	d := openDevice(b, inst)
	ek, srk := deviceKeys(b, d)
	key, blob := newBlob(b, ek, srk, 32)
	if err := d.ImportAuthenticationKey(blob, tpm.AuthKeyHandle); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		data []byte
	}{
		{"sas-54B", []byte("0ne00abcdef%2fregistrations%2fmy-device-01\n1795646830")},
		{"4KiB", bytes.Repeat([]byte{0xa5}, 4096)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			want := softHMAC(key, bc.data)
			b.SetBytes(int64(len(bc.data)))
			for b.Loop() {
				mac, err := d.HMAC(tpm.AuthKeyHandle, bc.data)
				if err != nil {
					b.Fatal(err)
				}
				if !bytes.Equal(mac, want) {
					b.Fatal("wrong HMAC")
				}
			}
		})
	}
}
