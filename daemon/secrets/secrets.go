// Package secrets encrypts the secrets edgeprov keeps in its store (device
// symmetric keys) with AES-256-GCM, so that a copy of the store taken off the
// box reveals none of them. The data key comes from a key file that edgeprovd
// init creates beside the store, or is derived inside an HSM: HMAC-SHA256 of a
// fixed label with a secret key that never leaves the token, so the data key
// exists only in the daemon's memory.
package secrets

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Sealer encrypts and decrypts secrets for storage. context binds a sealed
// value to where it is stored (e.g. the identity it belongs to): Open with
// another context fails, so sealed values cannot be swapped between records.
type Sealer interface {
	Seal(plaintext, context []byte) ([]byte, error)
	Open(sealed, context []byte) ([]byte, error)
}

var (
	// ErrWrongKey is returned by Open for a value sealed with another data
	// key (another key file or HSM key).
	ErrWrongKey = errors.New("secret sealed with another data key")
	// ErrCorrupt is returned by Open for a value that is not a sealed secret
	// or was altered, or whose context differs.
	ErrCorrupt = errors.New("sealed secret is corrupt or belongs elsewhere")
)

// KeySize is the data key size: AES-256.
const KeySize = 32

// version 1: version byte ‖ key ID (4 bytes) ‖ GCM nonce (12) ‖ ciphertext ‖ tag (16).
const (
	version1   = 1
	keyIDSize  = 4
	headerSize = 1 + keyIDSize
)

// Box seals with one data key.
type Box struct {
	aead cipher.AEAD
	id   [keyIDSize]byte
}

var (
	_ Sealer         = (*Box)(nil)
	_ slog.LogValuer = (*Box)(nil)
)

// New returns a Box for a 32-byte data key. The key is copied into the
// cipher; the caller may clear its slice.
func New(dataKey []byte) (*Box, error) {
	if len(dataKey) != KeySize {
		return nil, fmt.Errorf("secrets: data key is %d bytes, want %d", len(dataKey), KeySize)
	}
	block, err := aes.NewCipher(dataKey)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	b := &Box{aead: aead}
	// The key ID tells "wrong key" from "corrupt" without revealing the key.
	sum := sha256.Sum256(append([]byte("edgeprov secrets key id\x00"), dataKey...))
	copy(b.id[:], sum[:])
	return b, nil
}

// Seal encrypts plaintext bound to context.
func (b *Box) Seal(plaintext, context []byte) ([]byte, error) {
	out := make([]byte, headerSize, headerSize+b.aead.NonceSize()+len(plaintext)+b.aead.Overhead())
	out[0] = version1
	copy(out[1:], b.id[:])
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("secrets: nonce: %w", err)
	}
	out = append(out, nonce...)
	return b.aead.Seal(out, nonce, plaintext, aad(out[:headerSize], context)), nil
}

// Open decrypts a value Seal made with the same data key and context.
func (b *Box) Open(sealed, context []byte) ([]byte, error) {
	ns := b.aead.NonceSize()
	if len(sealed) < headerSize+ns+b.aead.Overhead() || sealed[0] != version1 {
		return nil, ErrCorrupt
	}
	if !bytes.Equal(sealed[1:headerSize], b.id[:]) {
		return nil, ErrWrongKey
	}
	nonce, ct := sealed[headerSize:headerSize+ns], sealed[headerSize+ns:]
	pt, err := b.aead.Open(nil, nonce, ct, aad(sealed[:headerSize], context))
	if err != nil {
		return nil, ErrCorrupt
	}
	return pt, nil
}

// aad authenticates the header with the context.
func aad(header, context []byte) []byte {
	return append(append(append([]byte{}, header...), 0), context...)
}

// LogValue names the key by its ID only.
func (b *Box) LogValue() slog.Value {
	return slog.StringValue(fmt.Sprintf("aes-256-gcm key id %x", b.id))
}

// CreateKeyFile writes a new random data key (base64, mode 0600) to path. It
// refuses to replace an existing file: the secrets sealed with it would be
// lost.
func CreateKeyFile(path string) error {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	defer clear(key)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("secrets: create data key file: %w", err)
	}
	_, werr := f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	serr := f.Sync()
	if err := errors.Join(werr, serr, f.Close()); err != nil {
		os.Remove(path)
		return fmt.Errorf("secrets: write data key file: %w", err)
	}
	return nil
}

// LoadKeyFile reads a data key file made by CreateKeyFile. A file that group
// or others may read is refused, as ssh refuses such private keys.
func LoadKeyFile(path string) (*Box, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: data key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secrets: data key file %s is accessible by group or others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: data key file: %w", err)
	}
	defer clear(data)
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("secrets: data key file %s does not hold a base64 %d-byte key", path, KeySize)
	}
	defer clear(key)
	return New(key)
}

// DeriveLabel is what the HSM's HMAC key is applied to for the data key.
const DeriveLabel = "edgeprov secrets data key v1"

// FromMAC derives the data key as HMAC-SHA256(K, DeriveLabel) with mac, an
// HMAC computed by an HSM whose key K never leaves it.
func FromMAC(mac func(data []byte) ([]byte, error)) (*Box, error) {
	key, err := mac([]byte(DeriveLabel))
	if err != nil {
		return nil, fmt.Errorf("secrets: derive data key: %w", err)
	}
	defer clear(key)
	return New(key)
}
