// Package dpsauth is the service side of DPS-style TPM attestation: it parses
// the endorsement key (EK) and storage root key (SRK) a device reports as
// marshalled TPM2B_PUBLIC structures, derives the TPM registration ID, and
// builds the authenticationKey blob (protocol.md §5.4.5) that only the TPM
// owning that EK can import.
//
// Everything here is a pure function over bytes: no TPM is needed, and all
// randomness comes from an injectable io.Reader.
package dpsauth

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// MaxPublicSize bounds the marshalled TPM2B_PUBLIC accepted by ParseEK and
// ParseSRK. An RSA-2048 key is 316 bytes; anything beyond 1 KiB is refused
// before it is looked at.
const MaxPublicSize = 1024

var (
	// ErrMalformed reports bytes that are not a well-formed, canonically
	// marshalled TPM structure (truncated, oversized, trailing bytes, bad
	// size fields, unknown algorithms).
	ErrMalformed = errors.New("malformed TPM structure")
	// ErrKeyNotAccepted reports a well-formed public area that is not an
	// acceptable EK or SRK (wrong type, size, attributes, policy or
	// symmetric parameters).
	ErrKeyNotAccepted = errors.New("key not accepted")
)

// ekPolicy is the TCG default EK authPolicy, PolicySecret(TPM_RH_ENDORSEMENT)
// with SHA-256.
var ekPolicy = []byte{
	0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8,
	0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
	0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64,
	0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
}

// TPMA_OBJECT bits (TPM 2.0 Part 2, 8.3).
const (
	attrFixedTPM            = 1 << 1
	attrFixedParent         = 1 << 4
	attrSensitiveDataOrigin = 1 << 5
	attrUserWithAuth        = 1 << 6
	attrAdminWithPolicy     = 1 << 7
	attrNoDA                = 1 << 10
	attrRestricted          = 1 << 16
	attrDecrypt             = 1 << 17
	attrSign                = 1 << 18
)

const (
	// ekAttrs are the attributes of the TCG default (low range) RSA EK
	// template, 0x000300b2.
	ekAttrs = attrFixedTPM | attrFixedParent | attrSensitiveDataOrigin |
		attrAdminWithPolicy | attrRestricted | attrDecrypt
	ekForbidden = attrUserWithAuth | attrSign

	// srkAttrs must be set on an SRK: a restricted decryption (storage)
	// key that never leaves the TPM and is usable with a password (the
	// Azure and TCG SRK templates both also set noDA, which is optional).
	srkAttrs = attrFixedTPM | attrFixedParent | attrSensitiveDataOrigin |
		attrUserWithAuth | attrRestricted | attrDecrypt
	srkForbidden = attrSign
)

// key is what EK and SRK share.
type key struct {
	raw  []byte // TPM2B_PUBLIC as received
	pub  tpm2.TPMTPublic
	rsa  *rsa.PublicKey
	name []byte // TPM2B_NAME contents: nameAlg ‖ SHA-256(TPMT_PUBLIC)
}

// EK is a parsed, validated RSA-2048 endorsement key.
type EK struct{ k key }

// SRK is a parsed, validated RSA-2048 storage root key.
type SRK struct{ k key }

// ParseEK parses a marshalled TPM2B_PUBLIC (UINT16 size ‖ TPMT_PUBLIC, as a
// device sends it after base64 decoding) and checks that it is a TCG
// default RSA-2048 EK: nameAlg SHA-256, attributes
// fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt
// without userWithAuth or sign, authPolicy PolicySecret(TPM_RH_ENDORSEMENT),
// symmetric AES-128-CFB, scheme NULL. Errors wrap ErrMalformed or
// ErrKeyNotAccepted.
func ParseEK(tpm2bPublic []byte) (*EK, error) {
	k, err := parseRSAStorageKey(tpm2bPublic, ekAttrs, ekForbidden)
	if err != nil {
		return nil, fmt.Errorf("dpsauth: endorsement key: %w", err)
	}
	if !bytes.Equal(k.pub.AuthPolicy.Buffer, ekPolicy) {
		return nil, fmt.Errorf("dpsauth: endorsement key: %w: authPolicy %x is not PolicySecret(TPM_RH_ENDORSEMENT) %x",
			ErrKeyNotAccepted, k.pub.AuthPolicy.Buffer, ekPolicy)
	}
	return &EK{k: *k}, nil
}

// ParseSRK parses a marshalled TPM2B_PUBLIC and checks that it is an
// RSA-2048 storage root key: nameAlg SHA-256, attributes
// fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|decrypt
// (noDA optional) without sign, symmetric AES-128-CFB, scheme NULL. Errors
// wrap ErrMalformed or ErrKeyNotAccepted.
func ParseSRK(tpm2bPublic []byte) (*SRK, error) {
	k, err := parseRSAStorageKey(tpm2bPublic, srkAttrs, srkForbidden)
	if err != nil {
		return nil, fmt.Errorf("dpsauth: storage root key: %w", err)
	}
	return &SRK{k: *k}, nil
}

// RegistrationID returns the registration ID DPS derives for a TPM device:
// lower-case base32 (RFC 4648, no padding) of SHA-256 over the EK's
// marshalled TPM2B_PUBLIC exactly as the device sends it, size prefix
// included (52 characters). It does not validate the bytes; use ParseEK for
// that.
func RegistrationID(ekTPM2BPublic []byte) string {
	sum := sha256.Sum256(ekTPM2BPublic)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))
}

// PublicKey returns the EK's RSA public key.
func (e *EK) PublicKey() *rsa.PublicKey { return e.k.rsaCopy() }

// TPMTPublic returns the marshalled TPMT_PUBLIC (the TPM2B_PUBLIC without
// its size prefix).
func (e *EK) TPMTPublic() []byte { return bytes.Clone(e.k.raw[2:]) }

// TPM2BPublic returns the marshalled TPM2B_PUBLIC as it was parsed.
func (e *EK) TPM2BPublic() []byte { return bytes.Clone(e.k.raw) }

// Name returns the EK's TPM Name: UINT16 nameAlg (SHA-256) ‖ SHA-256(TPMT_PUBLIC).
func (e *EK) Name() []byte { return bytes.Clone(e.k.name) }

// RegistrationID is RegistrationID(e.TPM2BPublic()).
func (e *EK) RegistrationID() string { return RegistrationID(e.k.raw) }

// Equal reports whether both EKs have the same RSA modulus and exponent. It
// does not compare the encodings, so a re-marshalled EK equals the original.
func (e *EK) Equal(other *EK) bool {
	if e == nil || other == nil {
		return e == other
	}
	return e.k.rsa.Equal(other.k.rsa)
}

// PublicKey returns the SRK's RSA public key.
func (s *SRK) PublicKey() *rsa.PublicKey { return s.k.rsaCopy() }

// TPMTPublic returns the marshalled TPMT_PUBLIC (the TPM2B_PUBLIC without
// its size prefix).
func (s *SRK) TPMTPublic() []byte { return bytes.Clone(s.k.raw[2:]) }

// TPM2BPublic returns the marshalled TPM2B_PUBLIC as it was parsed.
func (s *SRK) TPM2BPublic() []byte { return bytes.Clone(s.k.raw) }

// Name returns the SRK's TPM Name: UINT16 nameAlg (SHA-256) ‖ SHA-256(TPMT_PUBLIC).
// The credential in the authenticationKey blob is bound to it.
func (s *SRK) Name() []byte { return bytes.Clone(s.k.name) }

// Equal reports whether both SRKs have the same RSA modulus and exponent.
func (s *SRK) Equal(other *SRK) bool {
	if s == nil || other == nil {
		return s == other
	}
	return s.k.rsa.Equal(other.k.rsa)
}

func (k *key) rsaCopy() *rsa.PublicKey {
	return &rsa.PublicKey{N: new(big.Int).Set(k.rsa.N), E: k.rsa.E}
}

// parseRSAStorageKey parses a TPM2B_PUBLIC strictly and checks what EK and
// SRK have in common: RSA-2048, nameAlg SHA-256, AES-128-CFB, scheme NULL,
// the required attribute bits set and the forbidden ones clear.
func parseRSAStorageKey(b []byte, required, forbidden uint32) (*key, error) {
	pub, err := parseTPM2BPublic(b)
	if err != nil {
		return nil, err
	}
	if pub.Type != tpm2.TPMAlgRSA {
		return nil, fmt.Errorf("%w: type %s (0x%04x), want RSA", ErrKeyNotAccepted, algName(pub.Type), uint16(pub.Type))
	}
	if pub.NameAlg != tpm2.TPMAlgSHA256 {
		return nil, fmt.Errorf("%w: nameAlg 0x%04x, want SHA-256", ErrKeyNotAccepted, uint16(pub.NameAlg))
	}
	attrs := binary.BigEndian.Uint32(b[6:10]) // after size(2), type(2), nameAlg(2)
	if missing := required &^ attrs; missing != 0 {
		return nil, fmt.Errorf("%w: attributes 0x%08x lack 0x%08x (want 0x%08x set)", ErrKeyNotAccepted, attrs, missing, required)
	}
	if extra := attrs & forbidden; extra != 0 {
		return nil, fmt.Errorf("%w: attributes 0x%08x have forbidden 0x%08x", ErrKeyNotAccepted, attrs, extra)
	}
	parms, err := pub.Parameters.RSADetail()
	if err != nil {
		return nil, fmt.Errorf("%w: RSA parameters: %w", ErrMalformed, err)
	}
	if parms.KeyBits != 2048 {
		return nil, fmt.Errorf("%w: RSA key size %d bits, want 2048", ErrKeyNotAccepted, parms.KeyBits)
	}
	if parms.Exponent != 0 && parms.Exponent != 65537 {
		return nil, fmt.Errorf("%w: RSA exponent %d, want 65537", ErrKeyNotAccepted, parms.Exponent)
	}
	if parms.Scheme.Scheme != tpm2.TPMAlgNull {
		return nil, fmt.Errorf("%w: scheme 0x%04x, want NULL for a restricted decryption key", ErrKeyNotAccepted, uint16(parms.Scheme.Scheme))
	}
	if err := checkAES128CFB(&parms.Symmetric); err != nil {
		return nil, err
	}
	unique, err := pub.Unique.RSA()
	if err != nil {
		return nil, fmt.Errorf("%w: RSA modulus: %w", ErrMalformed, err)
	}
	if len(unique.Buffer) != 256 || unique.Buffer[0]&0x80 == 0 {
		return nil, fmt.Errorf("%w: RSA modulus is %d bytes or has leading zero bits, want a 2048-bit modulus", ErrKeyNotAccepted, len(unique.Buffer))
	}
	rsaPub, err := tpm2.RSAPub(parms, unique)
	if err != nil {
		return nil, fmt.Errorf("%w: RSA public key: %w", ErrKeyNotAccepted, err)
	}
	// Name = nameAlg ‖ SHA-256(TPMT_PUBLIC). The bytes after the size are
	// known to be the canonical marshalling (parseTPM2BPublic re-marshals
	// them), so hash them rather than have tpm2.ObjectName marshal a third
	// time: go-tpm's reflection codec costs about 0.25 ms per RSA public area.
	sum := sha256.Sum256(b[2:])
	name := append([]byte{0x00, 0x0b}, sum[:]...)
	return &key{raw: bytes.Clone(b), pub: *pub, rsa: rsaPub, name: name}, nil
}

func checkAES128CFB(sym *tpm2.TPMTSymDefObject) error {
	if sym.Algorithm != tpm2.TPMAlgAES {
		return fmt.Errorf("%w: symmetric algorithm 0x%04x, want AES-128-CFB", ErrKeyNotAccepted, uint16(sym.Algorithm))
	}
	bits, err := sym.KeyBits.AES()
	if err != nil {
		return fmt.Errorf("%w: symmetric key bits: %w", ErrMalformed, err)
	}
	mode, err := sym.Mode.AES()
	if err != nil {
		return fmt.Errorf("%w: symmetric mode: %w", ErrMalformed, err)
	}
	if *bits != 128 || *mode != tpm2.TPMAlgCFB {
		return fmt.Errorf("%w: symmetric AES-%d mode 0x%04x, want AES-128-CFB", ErrKeyNotAccepted, *bits, uint16(*mode))
	}
	return nil
}

// parseTPM2BPublic unmarshals UINT16 size ‖ TPMT_PUBLIC and refuses anything
// but an exact, canonical encoding: the size must match the remaining bytes
// and re-marshalling the parsed TPMT_PUBLIC must reproduce them.
func parseTPM2BPublic(b []byte) (pub *tpm2.TPMTPublic, err error) {
	switch {
	case len(b) > MaxPublicSize:
		return nil, fmt.Errorf("%w: TPM2B_PUBLIC is %d bytes, more than the %d allowed", ErrMalformed, len(b), MaxPublicSize)
	case len(b) < 2:
		return nil, fmt.Errorf("%w: TPM2B_PUBLIC is %d bytes, too short for its size field", ErrMalformed, len(b))
	}
	size := int(binary.BigEndian.Uint16(b))
	body := b[2:]
	switch {
	case size == 0:
		return nil, fmt.Errorf("%w: empty TPM2B_PUBLIC", ErrMalformed)
	case size > len(body):
		return nil, fmt.Errorf("%w: TPM2B_PUBLIC truncated: size field says %d bytes, %d present", ErrMalformed, size, len(body))
	case size < len(body):
		return nil, fmt.Errorf("%w: %d trailing bytes after TPM2B_PUBLIC of %d bytes", ErrMalformed, len(body)-size, size)
	}
	return unmarshalPublic(body, "TPMT_PUBLIC")
}

// unmarshalPublic unmarshals a TPMT_PUBLIC that must fill body exactly.
func unmarshalPublic(body []byte, what string) (pub *tpm2.TPMTPublic, err error) {
	// go-tpm's reflection-based codec is not written for hostile input;
	// turn any panic into an error rather than trusting it never happens.
	defer func() {
		if r := recover(); r != nil {
			pub, err = nil, fmt.Errorf("%w: %s: %v", ErrMalformed, what, r)
		}
	}()
	pub, err = tpm2.Unmarshal[tpm2.TPMTPublic](body)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, what, err)
	}
	again := tpm2.Marshal(pub)
	switch {
	case len(again) < len(body):
		return nil, fmt.Errorf("%w: %d trailing bytes inside %s", ErrMalformed, len(body)-len(again), what)
	case !bytes.Equal(again, body):
		return nil, fmt.Errorf("%w: %s is not canonically encoded", ErrMalformed, what)
	}
	return pub, nil
}

func algName(a tpm2.TPMIAlgPublic) string {
	switch a {
	case tpm2.TPMAlgRSA:
		return "RSA"
	case tpm2.TPMAlgECC:
		return "ECC"
	case tpm2.TPMAlgKeyedHash:
		return "KEYEDHASH"
	case tpm2.TPMAlgSymCipher:
		return "SYMCIPHER"
	}
	return "unknown"
}
