package dpsauth_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	mathrand "math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

// softKeys is an EK and SRK whose private keys the test holds, so it can
// unwrap a blob the way the TPM does (openBlob) without a TPM.
type softKeys struct {
	ek     *dpsauth.EK
	srk    *dpsauth.SRK
	ekPriv *rsa.PrivateKey
	srkPri *rsa.PrivateKey
}

var (
	softOnce sync.Once
	soft     softKeys
)

// getSoftKeys returns the swtpm EK/SRK public areas with Go-generated RSA
// keys put in as their moduli.
func getSoftKeys(t testing.TB) softKeys {
	t.Helper()
	softOnce.Do(func() {
		withKey := func(tpm2b []byte, k *rsa.PrivateKey) []byte {
			return edit(t, tpm2b, func(p *tpm2.TPMTPublic) { setModulus(p, k.N.FillBytes(make([]byte, 256))) })
		}
		var err error
		if soft.ekPriv, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			t.Fatal(err)
		}
		if soft.srkPri, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			t.Fatal(err)
		}
		if soft.ek, err = dpsauth.ParseEK(withKey(readTestdata(t, "swtpm-ek.bin"), soft.ekPriv)); err != nil {
			t.Fatal(err)
		}
		if soft.srk, err = dpsauth.ParseSRK(withKey(readTestdata(t, "swtpm-srk.bin"), soft.srkPri)); err != nil {
			t.Fatal(err)
		}
	})
	if soft.ek == nil {
		t.Fatal("soft keys failed to initialize")
	}
	return soft
}

// kdfa is TPM 2.0 KDFa with SHA-256 (Part 1, 11.4.10.2), written here from
// the spec rather than taken from go-tpm so the test checks the blob
// independently of the code that built it.
func kdfa(key []byte, label string, contextU, contextV []byte, bits int) []byte {
	var out []byte
	for i := uint32(1); len(out)*8 < bits; i++ {
		m := hmac.New(sha256.New, key)
		binary.Write(m, binary.BigEndian, i)
		m.Write([]byte(label))
		m.Write([]byte{0})
		m.Write(contextU)
		m.Write(contextV)
		binary.Write(m, binary.BigEndian, uint32(bits))
		out = m.Sum(out)
	}
	return out[:bits/8]
}

func cfbDecrypt(t *testing.T, key, b []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(b))
	//lint:ignore SA1019 TPM 2.0 mandates AES-CFB with a zero IV.
	cipher.NewCFBDecrypter(block, make([]byte, aes.BlockSize)).XORKeyStream(out, b)
	return out
}

// read2B splits a TPM2B off b.
func read2B(t *testing.T, b []byte, what string) (contents, rest []byte) {
	t.Helper()
	if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
		t.Fatalf("%s: truncated", what)
	}
	n := int(binary.BigEndian.Uint16(b))
	return b[2 : 2+n], b[2+n:]
}

// openBlob does in software what the device's TPM does with the blob:
// ActivateCredential, then Import with the inner wrapper. It checks every
// integrity value on the way and returns the HMAC key inside.
func openBlob(t *testing.T, k softKeys, blob []byte) []byte {
	t.Helper()
	ak, err := dpsauth.ParseAuthenticationKey(blob)
	if err != nil {
		t.Fatalf("ParseAuthenticationKey: %v", err)
	}

	// ActivateCredential: EK decrypts seed1; the credential is bound to the SRK's Name.
	seed1, err := rsa.DecryptOAEP(sha256.New(), nil, k.ekPriv, ak.EncryptedSecret, []byte("IDENTITY\x00"))
	if err != nil {
		t.Fatalf("credential seed: %v", err)
	}
	integrity1, encIdentity := read2B(t, ak.IDObject, "TPMS_ID_OBJECT")
	m := hmac.New(sha256.New, kdfa(seed1, "INTEGRITY", nil, nil, 256))
	m.Write(encIdentity)
	m.Write(k.srk.Name())
	if !hmac.Equal(m.Sum(nil), integrity1) {
		t.Fatal("credential integrity HMAC does not verify against the SRK's Name")
	}
	innerKey, rest := read2B(t, cfbDecrypt(t, kdfa(seed1, "STORAGE", k.srk.Name(), nil, 128), encIdentity), "credential")
	if len(innerKey) != 16 || len(rest) != 0 {
		t.Fatalf("credential is %d bytes (+%d), want a 16-byte inner key", len(innerKey), len(rest))
	}

	// The HMAC key's public area: exactly the Azure-compatible one.
	pub := ak.Public
	wantHead := []byte{0x00, 0x08, 0x00, 0x0b, 0x00, 0x04, 0x04, 0x40, 0x00, 0x00, 0x00, 0x05, 0x00, 0x0b, 0x00, 0x20}
	if len(pub) != len(wantHead)+32 || !bytes.Equal(pub[:len(wantHead)], wantHead) {
		t.Fatalf("HMAC key TPMT_PUBLIC = %x, want %x‖unique[32]", pub, wantHead)
	}
	nameSum := sha256.Sum256(pub)
	name := append([]byte{0x00, 0x0b}, nameSum[:]...)

	// Import, outer wrapper: SRK decrypts seed2.
	seed2, err := rsa.DecryptOAEP(sha256.New(), nil, k.srkPri, ak.InSymSeed, []byte("DUPLICATE\x00"))
	if err != nil {
		t.Fatalf("duplication seed: %v", err)
	}
	outerHMAC, dupSensitive := read2B(t, ak.Duplicate, "TPM2B_PRIVATE")
	m = hmac.New(sha256.New, kdfa(seed2, "INTEGRITY", nil, nil, 256))
	m.Write(dupSensitive)
	m.Write(name)
	if !hmac.Equal(m.Sum(nil), outerHMAC) {
		t.Fatal("outer integrity HMAC does not verify")
	}
	encInner := cfbDecrypt(t, kdfa(seed2, "STORAGE", name, nil, 128), dupSensitive)
	// Inner wrapper.
	innerIntegrity, sens := read2B(t, cfbDecrypt(t, innerKey, encInner), "inner integrity")
	sum := sha256.Sum256(append(bytes.Clone(sens), name...))
	if !bytes.Equal(innerIntegrity, sum[:]) {
		t.Fatal("inner integrity digest does not verify")
	}
	// TPM2B_SENSITIVE { type KEYEDHASH, authValue empty, seedValue, key }.
	s, rest := read2B(t, sens, "TPM2B_SENSITIVE")
	if len(rest) != 0 || len(s) < 2 || binary.BigEndian.Uint16(s) != 0x0008 {
		t.Fatalf("sensitive area %x is not a KEYEDHASH TPMT_SENSITIVE", s)
	}
	authValue, s := read2B(t, s[2:], "authValue")
	seedValue, s := read2B(t, s, "seedValue")
	key, s := read2B(t, s, "sensitive")
	if len(authValue) != 0 || len(seedValue) != 32 || len(s) != 0 {
		t.Fatalf("sensitive area: authValue %d bytes, seedValue %d, %d left over", len(authValue), len(seedValue), len(s))
	}
	unique := sha256.Sum256(append(bytes.Clone(seedValue), key...))
	if !bytes.Equal(pub[len(wantHead):], unique[:]) {
		t.Fatal("public unique is not SHA-256(seedValue ‖ key)")
	}
	return key
}

func TestBuildAuthenticationKey(t *testing.T) {
	t.Parallel()
	k := getSoftKeys(t)
	for _, size := range []int{dpsauth.MinKeySize, 32, dpsauth.MaxKeySize} {
		key := make([]byte, size)
		rand.Read(key)
		blob, err := dpsauth.BuildAuthenticationKey(rand.Reader, k.ek, k.srk, key)
		if err != nil {
			t.Fatalf("%d-byte key: %v", size, err)
		}
		if want := 766 - 32 + size; len(blob) != want {
			t.Errorf("%d-byte key: blob is %d bytes, want %d", size, len(blob), want)
		}
		// Layout of protocol.md §5.4.5 / tpm-hsm.md §3 (RSA-2048).
		for _, f := range []struct {
			off  int
			want uint16
		}{{0, 0x0034}, {54, 0x0100}, {312, uint16(110 + size)}, {456 + size - 32, 0x0100}, {714 + size - 32, 0x0030}, {764 + size - 32, 0}} {
			if got := binary.BigEndian.Uint16(blob[f.off:]); got != f.want {
				t.Errorf("%d-byte key: size field at %d = 0x%04x, want 0x%04x", size, f.off, got, f.want)
			}
		}
		if got := openBlob(t, k, blob); !bytes.Equal(got, key) {
			t.Fatalf("%d-byte key: unwrapped %x, want %x", size, got, key)
		}
	}
}

func TestBuildAuthenticationKeyRandomness(t *testing.T) {
	t.Parallel()
	k := getSoftKeys(t)
	key := bytes.Repeat([]byte{7}, 32)
	build := func(seed byte) []byte {
		blob, err := dpsauth.BuildAuthenticationKey(mathrand.NewChaCha8([32]byte{seed}), k.ek, k.srk, key)
		if err != nil {
			t.Fatal(err)
		}
		return blob
	}
	if !bytes.Equal(build(1), build(1)) {
		t.Error("the same random stream gave different blobs: not all randomness comes from the reader")
	}
	if bytes.Equal(build(1), build(2)) {
		t.Error("different random streams gave the same blob")
	}
}

func TestBuildAuthenticationKeyFailures(t *testing.T) {
	t.Parallel()
	k := getSoftKeys(t)
	key := make([]byte, 32)
	tests := []struct {
		name    string
		rand    io.Reader
		ek      *dpsauth.EK
		srk     *dpsauth.SRK
		key     []byte
		wantErr string
	}{
		{"fail/key-too-short", rand.Reader, k.ek, k.srk, make([]byte, 15), "key is 15 bytes"},
		{"fail/key-too-long", rand.Reader, k.ek, k.srk, make([]byte, 65), "key is 65 bytes"},
		{"fail/no-key", rand.Reader, k.ek, k.srk, nil, "key is 0 bytes"},
		{"fail/nil-ek", rand.Reader, nil, k.srk, key, "missing EK or SRK"},
		{"fail/nil-srk", rand.Reader, k.ek, nil, key, "missing EK or SRK"},
		{"fail/random-fails-at-once", iotestErrReader{}, k.ek, k.srk, key, "inner key"},
		{"fail/random-runs-dry", io.LimitReader(rand.Reader, 40), k.ek, k.srk, key, "random"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			blob, err := dpsauth.BuildAuthenticationKey(tc.rand, tc.ek, tc.srk, tc.key)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("BuildAuthenticationKey = %d bytes, %v; want error mentioning %q", len(blob), err, tc.wantErr)
			}
		})
	}
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errors.New("entropy source broken") }

func TestParseAuthenticationKey(t *testing.T) {
	t.Parallel()
	k := getSoftKeys(t)
	good, err := dpsauth.BuildAuthenticationKey(nil, k.ek, k.srk, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	with := func(f func([]byte) []byte) []byte { return f(bytes.Clone(good)) }
	set16 := func(off int, v uint16) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint16(b[off:], v); return b }
	}
	// Replaces the HMAC key's TPMT_PUBLIC (at 716, 48 bytes) keeping sizes.
	pubEdit := func(f func(*tpm2.TPMTPublic)) []byte {
		pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](good[716:764])
		if err != nil {
			t.Fatal(err)
		}
		f(pub)
		b := tpm2.Marshal(pub)
		out := binary.BigEndian.AppendUint16(bytes.Clone(good[:714]), uint16(len(b)))
		return append(append(out, b...), 0, 0)
	}
	tests := []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"ok/built", good, ""},
		{"ok/encrypted-data-present", append(with(set16(764, 4)), 1, 2, 3, 4), ""},
		{"fail/empty", nil, "truncated before TPM2B_ID_OBJECT"},
		{"fail/five-parts", good[:764], "truncated before TPM2B_DATA"},
		{"fail/truncated-seed", good[:700], "(inSymSeed) truncated: size field says 256 bytes, 242 present"},
		{"fail/truncated-public", good[:740], "TPM2B_PUBLIC truncated"},
		{"fail/trailing", append(bytes.Clone(good), 0), "1 trailing bytes"},
		{"fail/oversized", make([]byte, dpsauth.MaxAuthenticationKeySize+1), "more than the 4096 allowed"},
		{"fail/empty-id-object", append([]byte{0, 0}, good[54:]...), "TPM2B_ID_OBJECT is empty"},
		{"fail/id-object-too-large", with(set16(0, 200)), "TPM2B_ID_OBJECT is 200 bytes"},
		{"fail/encrypted-data-too-large", append(with(set16(764, 65)), make([]byte, 65)...), "TPM2B_DATA is 65 bytes"},
		{"fail/public-not-keyedhash", pubEdit(func(p *tpm2.TPMTPublic) { p.NameAlg = tpm2.TPMAlgSHA1 }), "want KEYEDHASH with SHA-256"},
		{"fail/public-fixedTPM", pubEdit(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedTPM = true }), "attributes"},
		{"fail/public-decrypt", pubEdit(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Decrypt = true }), "attributes"},
		{"fail/public-hmac-sha1", pubEdit(func(p *tpm2.TPMTPublic) {
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
				Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgHMAC, Details: tpm2.NewTPMUSchemeKeyedHash(
					tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA1})}})
		}), "hash 0x0004"},
		{"fail/public-null-scheme", pubEdit(func(p *tpm2.TPMTPublic) {
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
				Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull}})
		}), "want HMAC"},
		{"fail/public-garbage", with(func(b []byte) []byte { b[716] = 0x99; return b }), "malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ak, err := dpsauth.ParseAuthenticationKey(tc.in)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(ak.IDObject) != 52 || len(ak.EncryptedSecret) != 256 || len(ak.Duplicate) != 142 ||
					len(ak.InSymSeed) != 256 || len(ak.Public) != 48 {
					t.Errorf("part sizes %d %d %d %d %d, want 52 256 142 256 48", len(ak.IDObject),
						len(ak.EncryptedSecret), len(ak.Duplicate), len(ak.InSymSeed), len(ak.Public))
				}
				return
			}
			if err == nil || !errors.Is(err, dpsauth.ErrMalformed) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseAuthenticationKey error = %v, want ErrMalformed mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func BenchmarkBuildAuthenticationKey(b *testing.B) {
	k := getSoftKeys(b)
	key := make([]byte, 32)
	rand.Read(key)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dpsauth.BuildAuthenticationKey(rand.Reader, k.ek, k.srk, key); err != nil {
			b.Fatal(err)
		}
	}
}
