package dpsauth

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
)

const (
	// MinKeySize and MaxKeySize bound the HMAC key wrapped by
	// BuildAuthenticationKey (IoT Hub symmetric keys are 16–64 bytes).
	MinKeySize = 16
	MaxKeySize = 64

	// MaxAuthenticationKeySize bounds the blob ParseAuthenticationKey
	// accepts. An RSA-2048 EK/SRK with a 32-byte key gives 766 bytes.
	MaxAuthenticationKeySize = 4096

	// innerKeySize is the inner wrapper key: devices hard-code AES-128.
	innerKeySize = 16
	// seedValueSize is the keyed-hash object's seedValue (nameAlg size).
	seedValueSize = sha256.Size
	// maxEncryptedDataSize bounds element 6 (TPM2B_DATA, unused).
	maxEncryptedDataSize = 64
)

// BuildAuthenticationKey returns the authenticationKey blob of protocol.md
// §5.4.5 that carries key to the TPM holding ek:
//
//	TPM2B_ID_OBJECT ‖ TPM2B_ENCRYPTED_SECRET   credential (a fresh 16-byte
//	                                           inner wrapper key) made to the
//	                                           EK and bound to the SRK's Name
//	TPM2B_PRIVATE ‖ TPM2B_ENCRYPTED_SECRET     the HMAC key, duplicated to the
//	                                           SRK with an AES-128-CFB inner
//	                                           wrapper under that inner key
//	TPM2B_PUBLIC                               the HMAC-SHA256 keyed-hash object
//	TPM2B_DATA                                 empty
//
// Only that TPM can run ActivateCredential to recover the inner key and
// then Import the HMAC key under its SRK. key must be MinKeySize to
// MaxKeySize bytes. All randomness is read from rand (crypto/rand if nil).
func BuildAuthenticationKey(rand io.Reader, ek *EK, srk *SRK, key []byte) ([]byte, error) {
	if rand == nil {
		rand = cryptorand.Reader
	}
	switch {
	case ek == nil || srk == nil:
		return nil, errors.New("dpsauth: build authentication key: missing EK or SRK")
	case len(key) < MinKeySize || len(key) > MaxKeySize:
		return nil, fmt.Errorf("dpsauth: build authentication key: key is %d bytes, want %d to %d", len(key), MinKeySize, MaxKeySize)
	}
	ekKEM, err := tpm2.ImportEncapsulationKey(&ek.k.pub)
	if err != nil {
		return nil, fmt.Errorf("dpsauth: build authentication key: EK: %w", err)
	}
	srkKEM, err := tpm2.ImportEncapsulationKey(&srk.k.pub)
	if err != nil {
		return nil, fmt.Errorf("dpsauth: build authentication key: SRK: %w", err)
	}

	// 1. Inner wrapper key, sent as a credential that only the EK's TPM can
	//    activate, and only for an activateHandle whose Name is the SRK's.
	innerKey := make([]byte, innerKeySize)
	defer clear(innerKey)
	if _, err := io.ReadFull(rand, innerKey); err != nil {
		return nil, fmt.Errorf("dpsauth: build authentication key: reading random inner key: %w", err)
	}
	idObject, encSecret, err := tpm2.CreateCredential(rand, ekKEM, srk.k.name, innerKey)
	if err != nil {
		return nil, fmt.Errorf("dpsauth: build authentication key: making credential: %w", err)
	}

	// 2. The HMAC key as a keyed-hash object: public and sensitive areas.
	seedValue := make([]byte, seedValueSize)
	defer clear(seedValue)
	if _, err := io.ReadFull(rand, seedValue); err != nil {
		return nil, fmt.Errorf("dpsauth: build authentication key: reading random seed value: %w", err)
	}
	pub := hmacKeyPublic(seedValue, key)
	pubBytes := tpm2.Marshal(pub)
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		return nil, fmt.Errorf("dpsauth: build authentication key: key name: %w", err)
	}
	sens := tpm2.Marshal(tpm2.New2B(tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgKeyedHash,
		SeedValue:     tpm2.TPM2BDigest{Buffer: seedValue},
		Sensitive: tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgKeyedHash,
			&tpm2.TPM2BSensitiveData{Buffer: key}),
	}))
	defer clear(sens)

	// 3. Duplicate it to the SRK: inner wrapper (integrity + AES-128-CFB
	//    under innerKey), then the outer wrapper keyed from a seed that is
	//    RSA-OAEP encrypted to the SRK (TPM 2.0 Part 1, "Protected Storage").
	innerDigest := sha256.Sum256(append(append([]byte(nil), sens...), name.Buffer...))
	encInner := make([]byte, 0, 2+len(innerDigest)+len(sens))
	encInner = binary.BigEndian.AppendUint16(encInner, uint16(len(innerDigest)))
	encInner = append(encInner, innerDigest[:]...)
	encInner = append(encInner, sens...)
	if err := cfbEncrypt(innerKey, encInner); err != nil {
		return nil, fmt.Errorf("dpsauth: build authentication key: inner wrapper: %w", err)
	}
	seed, inSymSeed, err := srkKEM.Encapsulate(rand, "DUPLICATE")
	if err != nil {
		return nil, fmt.Errorf("dpsauth: build authentication key: encrypting the duplication seed to the SRK: %w", err)
	}
	defer clear(seed)
	symKey := tpm2.KDFa(crypto.SHA256, seed, "STORAGE", name.Buffer, nil, 128) // SRK symmetric: AES-128
	defer clear(symKey)
	dupSensitive := encInner
	if err := cfbEncrypt(symKey, dupSensitive); err != nil {
		return nil, fmt.Errorf("dpsauth: build authentication key: outer wrapper: %w", err)
	}
	macKey := tpm2.KDFa(crypto.SHA256, seed, "INTEGRITY", nil, nil, 8*sha256.Size)
	defer clear(macKey)
	mac := hmac.New(sha256.New, macKey)
	mac.Write(dupSensitive)
	mac.Write(name.Buffer)
	duplicate := make([]byte, 0, 2+sha256.Size+len(dupSensitive))
	duplicate = binary.BigEndian.AppendUint16(duplicate, sha256.Size)
	duplicate = mac.Sum(duplicate)
	duplicate = append(duplicate, dupSensitive...)

	blob := make([]byte, 0, 6*2+len(idObject)+len(encSecret)+len(duplicate)+len(inSymSeed)+len(pubBytes))
	for _, part := range [][]byte{idObject, encSecret, duplicate, inSymSeed, pubBytes, nil} {
		blob = binary.BigEndian.AppendUint16(blob, uint16(len(part)))
		blob = append(blob, part...)
	}
	return blob, nil
}

// hmacKeyPublic is the public area of the imported key: KEYEDHASH, nameAlg
// SHA-256, userWithAuth|noDA|sign, no policy, scheme HMAC-SHA256, and
// unique = SHA-256(seedValue ‖ key), which the TPM re-checks on Import.
func hmacKeyPublic(seedValue, key []byte) tpm2.TPMTPublic {
	unique := sha256.Sum256(append(append([]byte(nil), seedValue...), key...))
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			UserWithAuth: true,
			NoDA:         true,
			SignEncrypt:  true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{
				Scheme: tpm2.TPMAlgHMAC,
				Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC,
					&tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256}),
			},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: unique[:]}),
	}
}

// cfbEncrypt encrypts b in place with AES-CFB and a zero IV, as the TPM
// does for both duplication wrappers and for credentials.
func cfbEncrypt(key, b []byte) error {
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	//lint:ignore SA1019 TPM 2.0 mandates CFB with a zero IV here; there is no AEAD alternative.
	cipher.NewCFBEncrypter(block, make([]byte, aes.BlockSize)).XORKeyStream(b, b)
	return nil
}

// AuthenticationKey is an authenticationKey blob split into its six parts.
// Each field holds the contents of the respective TPM2B, without its size.
type AuthenticationKey struct {
	// IDObject (TPM2B_ID_OBJECT) is ActivateCredential's credentialBlob.
	IDObject []byte
	// EncryptedSecret (TPM2B_ENCRYPTED_SECRET) is ActivateCredential's secret.
	EncryptedSecret []byte
	// Duplicate (TPM2B_PRIVATE) is Import's duplicate.
	Duplicate []byte
	// InSymSeed (TPM2B_ENCRYPTED_SECRET) is Import's inSymSeed.
	InSymSeed []byte
	// Public (TPM2B_PUBLIC) is the marshalled TPMT_PUBLIC of the HMAC key,
	// Import's and Load's objectPublic/inPublic.
	Public []byte
	// EncryptedData (TPM2B_DATA) is unused by every client; usually empty.
	EncryptedData []byte
}

// ParseAuthenticationKey splits an authenticationKey blob into its six
// parts. It is strict: every part must be present and within its TPM size
// limit, nothing may follow the last one, and the public area must be a
// canonically encoded HMAC-SHA256 keyed-hash object (nameAlg SHA-256, sign
// set, decrypt/restricted/fixedTPM/fixedParent clear). Errors wrap
// ErrMalformed.
func ParseAuthenticationKey(blob []byte) (*AuthenticationKey, error) {
	if len(blob) > MaxAuthenticationKeySize {
		return nil, fmt.Errorf("dpsauth: authentication key: %w: %d bytes, more than the %d allowed", ErrMalformed, len(blob), MaxAuthenticationKeySize)
	}
	parts := []struct {
		name     string
		min, max int
	}{
		// Maximum sizes: TPMS_ID_OBJECT and TPM2B_PRIVATE with SHA-512
		// digests; an encrypted secret for RSA-4096.
		{"TPM2B_ID_OBJECT", 1, 2 * (2 + 64)},
		{"TPM2B_ENCRYPTED_SECRET (credential)", 1, 512},
		{"TPM2B_PRIVATE", 1, 2048},
		{"TPM2B_ENCRYPTED_SECRET (inSymSeed)", 1, 512},
		{"TPM2B_PUBLIC", 1, MaxPublicSize},
		{"TPM2B_DATA", 0, maxEncryptedDataSize},
	}
	var ak AuthenticationKey
	dst := []*[]byte{&ak.IDObject, &ak.EncryptedSecret, &ak.Duplicate, &ak.InSymSeed, &ak.Public, &ak.EncryptedData}
	rest := blob
	for i, p := range parts {
		if len(rest) < 2 {
			return nil, fmt.Errorf("dpsauth: authentication key: %w: truncated before %s (part %d of 6)", ErrMalformed, p.name, i+1)
		}
		n := int(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
		switch {
		case n > len(rest):
			return nil, fmt.Errorf("dpsauth: authentication key: %w: %s truncated: size field says %d bytes, %d present", ErrMalformed, p.name, n, len(rest))
		case n < p.min:
			return nil, fmt.Errorf("dpsauth: authentication key: %w: %s is empty", ErrMalformed, p.name)
		case n > p.max:
			return nil, fmt.Errorf("dpsauth: authentication key: %w: %s is %d bytes, more than %d", ErrMalformed, p.name, n, p.max)
		}
		*dst[i] = rest[:n:n]
		rest = rest[n:]
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("dpsauth: authentication key: %w: %d trailing bytes", ErrMalformed, len(rest))
	}
	if err := checkHMACKeyPublic(ak.Public); err != nil {
		return nil, fmt.Errorf("dpsauth: authentication key: %w", err)
	}
	return &ak, nil
}

// checkHMACKeyPublic checks the imported key's public area.
func checkHMACKeyPublic(tpmt []byte) error {
	pub, err := unmarshalPublic(tpmt, "HMAC key TPMT_PUBLIC")
	if err != nil {
		return err
	}
	if pub.Type != tpm2.TPMAlgKeyedHash || pub.NameAlg != tpm2.TPMAlgSHA256 {
		return fmt.Errorf("%w: HMAC key is type 0x%04x nameAlg 0x%04x, want KEYEDHASH with SHA-256",
			ErrMalformed, uint16(pub.Type), uint16(pub.NameAlg))
	}
	attrs := binary.BigEndian.Uint32(tpmt[4:8])
	const forbidden = attrFixedTPM | attrFixedParent | attrRestricted | attrDecrypt
	if attrs&attrSign == 0 || attrs&forbidden != 0 {
		return fmt.Errorf("%w: HMAC key attributes 0x%08x: want sign set and fixedTPM, fixedParent, restricted, decrypt clear",
			ErrMalformed, attrs)
	}
	parms, err := pub.Parameters.KeyedHashDetail()
	if err != nil {
		return fmt.Errorf("%w: HMAC key parameters: %w", ErrMalformed, err)
	}
	if parms.Scheme.Scheme != tpm2.TPMAlgHMAC {
		return fmt.Errorf("%w: HMAC key scheme 0x%04x, want HMAC", ErrMalformed, uint16(parms.Scheme.Scheme))
	}
	h, err := parms.Scheme.Details.HMAC()
	if err != nil {
		return fmt.Errorf("%w: HMAC key scheme: %w", ErrMalformed, err)
	}
	if h.HashAlg != tpm2.TPMAlgSHA256 {
		return fmt.Errorf("%w: HMAC key hash 0x%04x, want SHA-256", ErrMalformed, uint16(h.HashAlg))
	}
	return nil
}
