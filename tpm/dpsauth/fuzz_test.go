package dpsauth_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

// FuzzParsePublic feeds ParseEK and ParseSRK untrusted TPM2B_PUBLIC bytes,
// as devices send them. The committed corpus in testdata/fuzz/FuzzParsePublic
// holds a real swtpm EK and SRK among others. Run with
//
//	go test -fuzz=FuzzParsePublic ./tpm/dpsauth/
func FuzzParsePublic(f *testing.F) {
	f.Add(readTestdata(f, "swtpm-ek.bin"))
	f.Add(readTestdata(f, "swtpm-srk.bin"))
	f.Fuzz(func(t *testing.T, in []byte) {
		ek, ekErr := dpsauth.ParseEK(in)
		srk, srkErr := dpsauth.ParseSRK(in)
		if ekErr == nil && srkErr == nil {
			t.Fatal("accepted as both EK and SRK (they differ in userWithAuth)")
		}
		if ekErr == nil {
			checkParsed(t, in, ek.TPM2BPublic(), ek.Name())
			again, err := dpsauth.ParseEK(ek.TPM2BPublic())
			if err != nil || !again.Equal(ek) {
				t.Fatalf("re-parsing the EK: %v", err)
			}
			if len(ek.RegistrationID()) != 52 || ek.PublicKey().N.BitLen() != 2048 {
				t.Fatal("bad registration ID or key size")
			}
		}
		if srkErr == nil {
			checkParsed(t, in, srk.TPM2BPublic(), srk.Name())
		}
	})
}

func checkParsed(t *testing.T, in, tpm2b, name []byte) {
	if len(in) > dpsauth.MaxPublicSize || !bytes.Equal(tpm2b, in) || int(binary.BigEndian.Uint16(in)) != len(in)-2 {
		t.Fatalf("accepted %d bytes that are not an exact TPM2B", len(in))
	}
	if len(name) != 34 || name[0] != 0x00 || name[1] != 0x0b {
		t.Fatalf("Name %x is not a SHA-256 name", name)
	}
}

// FuzzParseAuthenticationKey feeds the device-side blob parser untrusted
// bytes. A blob it accepts must be exactly its six parts.
func FuzzParseAuthenticationKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		ak, err := dpsauth.ParseAuthenticationKey(in)
		if err != nil {
			return
		}
		var again []byte
		for _, p := range [][]byte{ak.IDObject, ak.EncryptedSecret, ak.Duplicate, ak.InSymSeed, ak.Public, ak.EncryptedData} {
			again = binary.BigEndian.AppendUint16(again, uint16(len(p)))
			again = append(again, p...)
		}
		if !bytes.Equal(again, in) {
			t.Fatal("accepted blob is not the concatenation of its parts")
		}
	})
}
