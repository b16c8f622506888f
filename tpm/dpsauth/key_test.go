package dpsauth_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

// swtpm-ek.bin and swtpm-srk.bin are the TPM2B_PUBLIC of a real swtpm EK
// (tpm2.RSAEKTemplate) and SRK (Azure template), as tpm.Device reports
// them. Regenerate with `EDGEPROV_WRITE_TESTDATA=1 go test -run TestKeys ./tpm/`.
func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// edit unmarshals a TPM2B_PUBLIC, applies f and marshals it again.
func edit(t testing.TB, tpm2b []byte, f func(*tpm2.TPMTPublic)) []byte {
	t.Helper()
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](tpm2b[2:])
	if err != nil {
		t.Fatal(err)
	}
	f(pub)
	return tpm2.Marshal(tpm2.New2B(*pub))
}

func rsaParms(t testing.TB, p *tpm2.TPMTPublic) *tpm2.TPMSRSAParms {
	t.Helper()
	parms, err := p.Parameters.RSADetail()
	if err != nil {
		t.Fatal(err)
	}
	return parms
}

func setModulus(p *tpm2.TPMTPublic, n []byte) {
	p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: n})
}

func setSymmetric(p *tpm2.TPMTPublic, parms *tpm2.TPMSRSAParms, sym tpm2.TPMTSymDefObject) {
	parms.Symmetric = sym
	p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, parms)
}

func aesSym(bits uint16, mode tpm2.TPMAlgID) tpm2.TPMTSymDefObject {
	return tpm2.TPMTSymDefObject{
		Algorithm: tpm2.TPMAlgAES,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(bits)),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, mode),
	}
}

// eccEK is the TCG ECC P-256 EK template with a (fake) point filled in.
func eccEK() []byte {
	pub := tpm2.ECCEKTemplate
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{1}, 32)},
		Y: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{2}, 32)},
	})
	return tpm2.Marshal(tpm2.New2B(pub))
}

// publicCases are inputs for ParseEK and ParseSRK with the error each must give
// (nil: accepted).
type publicCase struct {
	name        string
	in          []byte
	ekErr       error
	srkErr      error
	equalsInput bool // the parsed key Equal()s the swtpm one
}

func publicCases(t testing.TB) []publicCase {
	ek := readTestdata(t, "swtpm-ek.bin")
	srk := readTestdata(t, "swtpm-srk.bin")
	bad, unacceptable := dpsauth.ErrMalformed, dpsauth.ErrKeyNotAccepted
	withSize := func(size int, body []byte) []byte {
		return append(binary.BigEndian.AppendUint16(nil, uint16(size)), body...)
	}
	ekAttr := func(f func(*tpm2.TPMAObject)) []byte {
		return edit(t, ek, func(p *tpm2.TPMTPublic) { f(&p.ObjectAttributes) })
	}
	srkAttr := func(f func(*tpm2.TPMAObject)) []byte {
		return edit(t, srk, func(p *tpm2.TPMTPublic) { f(&p.ObjectAttributes) })
	}
	ekRSA := func(f func(*tpm2.TPMTPublic, *tpm2.TPMSRSAParms)) []byte {
		return edit(t, ek, func(p *tpm2.TPMTPublic) {
			parms := rsaParms(t, p)
			f(p, parms)
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, parms)
		})
	}
	return []publicCase{
		{name: "ok/swtpm-ek", in: ek, ekErr: nil, srkErr: unacceptable, equalsInput: true},
		{name: "ok/swtpm-srk", in: srk, ekErr: unacceptable, srkErr: nil, equalsInput: true},
		{
			name:        "ok/ek-exponent-65537-spelled-out",
			in:          ekRSA(func(_ *tpm2.TPMTPublic, parms *tpm2.TPMSRSAParms) { parms.Exponent = 65537 }),
			srkErr:      unacceptable,
			equalsInput: true,
		},
		{
			name:        "ok/srk-without-noDA",
			in:          srkAttr(func(a *tpm2.TPMAObject) { a.NoDA = false }),
			ekErr:       unacceptable,
			equalsInput: true,
		},

		{name: "fail/srk-posing-as-ek", in: srk, ekErr: unacceptable, srkErr: nil, equalsInput: true},
		{name: "fail/nil", in: nil, ekErr: bad, srkErr: bad},
		{name: "fail/one-byte", in: []byte{0x01}, ekErr: bad, srkErr: bad},
		{name: "fail/zero-size", in: []byte{0, 0}, ekErr: bad, srkErr: bad},
		{name: "fail/truncated", in: ek[:len(ek)-1], ekErr: bad, srkErr: bad},
		{name: "fail/truncated-inside", in: withSize(100, ek[2:102]), ekErr: bad, srkErr: bad},
		{name: "fail/size-field-too-large", in: withSize(len(ek)-1, ek[2:]), ekErr: bad, srkErr: bad},
		{name: "fail/trailing-byte", in: append(bytes.Clone(ek), 0), ekErr: bad, srkErr: bad},
		{name: "fail/trailing-byte-inside", in: withSize(len(ek)-1, append(bytes.Clone(ek[2:]), 0)), ekErr: bad, srkErr: bad},
		{name: "fail/oversized", in: withSize(dpsauth.MaxPublicSize-1, make([]byte, dpsauth.MaxPublicSize-1)), ekErr: bad, srkErr: bad},
		{name: "fail/unknown-type", in: withSize(len(ek)-2, append([]byte{0x00, 0x99}, ek[4:]...)), ekErr: bad, srkErr: bad},
		{name: "fail/unknown-symmetric-algorithm", in: withSize(len(ek)-2, append(append(bytes.Clone(ek[2:44]), 0x00, 0x99), ek[46:]...)), ekErr: bad, srkErr: bad},

		{name: "fail/ecc-ek", in: eccEK(), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/ek-with-userWithAuth", in: ekAttr(func(a *tpm2.TPMAObject) { a.UserWithAuth = true }), ekErr: unacceptable},
		{name: "fail/ek-with-sign", in: ekAttr(func(a *tpm2.TPMAObject) { a.SignEncrypt = true }), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/ek-without-adminWithPolicy", in: ekAttr(func(a *tpm2.TPMAObject) { a.AdminWithPolicy = false }), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/ek-not-restricted", in: ekAttr(func(a *tpm2.TPMAObject) { a.Restricted = false }), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/ek-not-fixedTPM", in: ekAttr(func(a *tpm2.TPMAObject) { a.FixedTPM = false }), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/ek-wrong-policy", in: edit(t, ek, func(p *tpm2.TPMTPublic) { p.AuthPolicy.Buffer[0] ^= 1 }), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/ek-sha1-name", in: edit(t, ek, func(p *tpm2.TPMTPublic) { p.NameAlg = tpm2.TPMAlgSHA1 }), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/ek-rsa-3072", in: ekRSA(func(p *tpm2.TPMTPublic, parms *tpm2.TPMSRSAParms) {
			parms.KeyBits = 3072
			setModulus(p, append([]byte{0x80}, make([]byte, 383)...))
		}), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/ek-short-modulus", in: ekRSA(func(p *tpm2.TPMTPublic, _ *tpm2.TPMSRSAParms) {
			setModulus(p, append([]byte{0x80}, make([]byte, 254)...))
		}), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/ek-exponent-3", in: ekRSA(func(_ *tpm2.TPMTPublic, parms *tpm2.TPMSRSAParms) { parms.Exponent = 3 }), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/ek-aes-256", in: ekRSA(func(p *tpm2.TPMTPublic, parms *tpm2.TPMSRSAParms) {
			setSymmetric(p, parms, aesSym(256, tpm2.TPMAlgCFB))
		}), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/ek-aes-128-cbc", in: ekRSA(func(p *tpm2.TPMTPublic, parms *tpm2.TPMSRSAParms) {
			setSymmetric(p, parms, aesSym(128, tpm2.TPMAlgCBC))
		}), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/ek-no-symmetric", in: ekRSA(func(p *tpm2.TPMTPublic, parms *tpm2.TPMSRSAParms) {
			setSymmetric(p, parms, tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull})
		}), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/ek-oaep-scheme", in: ekRSA(func(_ *tpm2.TPMTPublic, parms *tpm2.TPMSRSAParms) {
			parms.Scheme = tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgOAEP, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgOAEP, &tpm2.TPMSEncSchemeOAEP{HashAlg: tpm2.TPMAlgSHA256})}
		}), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/srk-aes-256", in: edit(t, srk, func(p *tpm2.TPMTPublic) { setSymmetric(p, rsaParms(t, p), aesSym(256, tpm2.TPMAlgCFB)) }), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/srk-rsa-1024", in: edit(t, srk, func(p *tpm2.TPMTPublic) {
			parms := rsaParms(t, p)
			parms.KeyBits = 1024
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, parms)
			setModulus(p, append([]byte{0x80}, make([]byte, 127)...))
		}), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/srk-not-restricted", in: srkAttr(func(a *tpm2.TPMAObject) { a.Restricted = false }), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/srk-with-sign", in: srkAttr(func(a *tpm2.TPMAObject) { a.SignEncrypt = true }), ekErr: unacceptable, srkErr: unacceptable},
		{name: "fail/srk-not-fixedParent", in: srkAttr(func(a *tpm2.TPMAObject) { a.FixedParent = false }), ekErr: unacceptable, srkErr: unacceptable},
	}
}

func TestParseEKAndSRK(t *testing.T) {
	t.Parallel()
	swtpmEK, err := dpsauth.ParseEK(readTestdata(t, "swtpm-ek.bin"))
	if err != nil {
		t.Fatal(err)
	}
	swtpmSRK, err := dpsauth.ParseSRK(readTestdata(t, "swtpm-srk.bin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range publicCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ek, err := dpsauth.ParseEK(tc.in)
			if !errors.Is(err, tc.ekErr) || (err == nil) != (tc.ekErr == nil) {
				t.Errorf("ParseEK error = %v, want %v", err, tc.ekErr)
			}
			if err != nil {
				t.Logf("ParseEK: %v", err)
			}
			srk, err := dpsauth.ParseSRK(tc.in)
			if !errors.Is(err, tc.srkErr) || (err == nil) != (tc.srkErr == nil) {
				t.Errorf("ParseSRK error = %v, want %v", err, tc.srkErr)
			}
			if err != nil {
				t.Logf("ParseSRK: %v", err)
			}
			if ek != nil {
				checkAccessors(t, tc.in, ek.TPM2BPublic(), ek.TPMTPublic(), ek.Name())
				if got := ek.Equal(swtpmEK); got != tc.equalsInput {
					t.Errorf("Equal(swtpm EK) = %v, want %v", got, tc.equalsInput)
				}
				if got, want := ek.RegistrationID(), dpsauth.RegistrationID(tc.in); got != want {
					t.Errorf("RegistrationID = %s, want %s", got, want)
				}
			}
			if srk != nil {
				checkAccessors(t, tc.in, srk.TPM2BPublic(), srk.TPMTPublic(), srk.Name())
				if got := srk.Equal(swtpmSRK); got != tc.equalsInput {
					t.Errorf("Equal(swtpm SRK) = %v, want %v", got, tc.equalsInput)
				}
			}
		})
	}
}

func checkAccessors(t *testing.T, in, tpm2b, tpmt, name []byte) {
	t.Helper()
	if !bytes.Equal(tpm2b, in) || !bytes.Equal(tpmt, in[2:]) {
		t.Error("TPM2BPublic/TPMTPublic do not return the input")
	}
	sum := sha256.Sum256(in[2:])
	if want := append([]byte{0x00, 0x0b}, sum[:]...); !bytes.Equal(name, want) {
		t.Errorf("Name = %x, want %x", name, want)
	}
	// Accessors hand out copies.
	tpm2b[0]++
	tpmt[0]++
	name[0]++
}

func TestEKAccessors(t *testing.T) {
	t.Parallel()
	raw := readTestdata(t, "swtpm-ek.bin")
	ek, err := dpsauth.ParseEK(raw)
	if err != nil {
		t.Fatal(err)
	}
	pk := ek.PublicKey()
	if pk.E != 65537 || pk.N.BitLen() != 2048 || !bytes.Equal(pk.N.Bytes(), raw[len(raw)-256:]) {
		t.Errorf("PublicKey = e %d, %d-bit modulus; want the modulus from the TPM2B_PUBLIC", pk.E, pk.N.BitLen())
	}
	pk.N.SetInt64(1) // a copy
	if !ek.PublicKey().Equal(ek.PublicKey()) || ek.PublicKey().N.BitLen() != 2048 {
		t.Error("PublicKey hands out its internal key")
	}
	var nilEK *dpsauth.EK
	if ek.Equal(nil) || !nilEK.Equal(nil) || nilEK.Equal(ek) {
		t.Error("Equal with nil")
	}
	other, err := dpsauth.ParseEK(edit(t, raw, func(p *tpm2.TPMTPublic) {
		n, _ := p.Unique.RSA()
		n.Buffer[100] ^= 1
	}))
	if err != nil {
		t.Fatal(err)
	}
	if ek.Equal(other) {
		t.Error("EKs with different moduli are Equal")
	}
}

func TestRegistrationID(t *testing.T) {
	t.Parallel()
	// Computed independently with
	//   sha256sum swtpm-ek.bin | cut -d' ' -f1 | xxd -r -p | base32 | tr -d '=\n' | tr A-Z a-z
	const want = "kprmqgfo54ol6ksnhjah63hvfg7sg6gmabk5fy5imo5ybaiwjyqa"
	if got := dpsauth.RegistrationID(readTestdata(t, "swtpm-ek.bin")); got != want {
		t.Fatalf("RegistrationID = %s, want %s", got, want)
	}
	if got := dpsauth.RegistrationID(nil); len(got) != 52 {
		t.Fatalf("RegistrationID(nil) = %q, want 52 characters", got)
	}
}

// BenchmarkParseEK measures parsing a device's EK, which the daemon does for
// every TPM request and every TPM enrollment the catalog loads (SRKs cost
// the same). Most of it is go-tpm's reflection codec.
func BenchmarkParseEK(b *testing.B) {
	ek := readTestdata(b, "swtpm-ek.bin")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dpsauth.ParseEK(ek); err != nil {
			b.Fatal(err)
		}
	}
}
