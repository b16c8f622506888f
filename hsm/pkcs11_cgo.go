//go:build cgo

package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

// tokenContext is the part of *crypto11.Context this package uses.
type tokenContext interface {
	FindKeyPairs(id, label []byte) ([]crypto11.Signer, error)
	FindKeys(id, label []byte) ([]*crypto11.SecretKey, error)
	GenerateECDSAKeyPairWithAttributes(public, private crypto11.AttributeSet, curve elliptic.Curve) (crypto11.Signer, error)
	GenerateRSAKeyPairWithAttributes(public, private crypto11.AttributeSet, bits int) (crypto11.SignerDecrypter, error)
	GenerateSecretKeyWithAttributes(template crypto11.AttributeSet, bits int, cipher *crypto11.SymmetricCipher) (*crypto11.SecretKey, error)
	Close() error
}

var _ tokenContext = (*crypto11.Context)(nil)

// Module is an open, logged-in PKCS#11 token. It is safe for concurrent use;
// the signers and HMAC keys it hands out stop working when it is closed.
type Module struct {
	uri   *URI
	path  string // canonical module path
	token tokenInfo
	log   *slog.Logger
	login string // key into logins

	p11 tokenContext
	// raw is a second handle on the same, already initialised module, for
	// what crypto11 cannot do (importing a known secret key). It is never
	// finalised: that would pull the library out from under crypto11.
	raw  *pkcs11.Ctx
	slot uint

	keyMu sync.Mutex // serialises look-up-then-create, so one process creates no duplicate labels

	mu     sync.RWMutex // write-held by Close
	closed bool
}

var (
	// loadMu serialises loading, enumerating and unloading modules, and
	// guards logins.
	loadMu sync.Mutex
	// logins counts the open Modules per token and remembers the hash of
	// the PIN the token accepted. PKCS#11 login state is per process, so a
	// second login with a wrong PIN answers CKR_USER_ALREADY_LOGGED_IN,
	// which crypto11 takes for success (measured with SoftHSM2); this map
	// lets Open refuse such a PIN itself.
	logins = map[string]*login{}
)

type login struct {
	pinSum [sha256.Size]byte
	refs   int
}

// Open loads the PKCS#11 module the URI names (module-path, or module-name),
// selects the one initialised token that matches all of the URI's library,
// slot and token attributes, reads the PIN from the pin-source and logs in.
// The URI's object attributes are not used here (see SignerFromURI).
//
// Errors wrap ErrModuleNotFound, ErrPIN, ErrTokenNotFound, ErrAmbiguous or
// ErrPINIncorrect where they apply.
func Open(ctx context.Context, u *URI, opts ...Option) (*Module, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if u == nil {
		return nil, fmt.Errorf("hsm: open: %w: nil URI", ErrInvalidURI)
	}
	o := newOptions(opts)
	u = u.clone()
	path, err := modulePath(u, o.moduleDirs)
	if err != nil {
		return nil, fmt.Errorf("hsm: open %s: %w", u, err)
	}
	p, err := readPIN(u, o.log)
	if err != nil {
		return nil, fmt.Errorf("hsm: open %s: %w", u, err)
	}
	defer p.wipe()

	loadMu.Lock()
	defer loadMu.Unlock()
	m, err := open(u, path, p, o)
	if err != nil {
		return nil, fmt.Errorf("hsm: open %s: %w", u, err)
	}
	o.log.Debug("opened PKCS#11 token", "hsm", m)
	return m, nil
}

// open does the work of Open with loadMu held.
func open(u *URI, path string, p pin, o options) (*Module, error) {
	raw := pkcs11.New(path)
	if raw == nil {
		return nil, fmt.Errorf("%w: cannot load %s as a PKCS#11 module", ErrModuleNotFound, path)
	}
	owned := false
	switch err := raw.Initialize(); {
	case err == nil:
		owned = true // nobody in this process had the module initialised
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)):
	default:
		raw.Destroy()
		return nil, fmt.Errorf("%w: initialise %s: %w", ErrModuleNotFound, path, err)
	}
	lib, tokens, err := enumerate(raw)
	if owned {
		// Hand the module to crypto11 uninitialised: it insists on doing
		// C_Initialize itself. loadMu keeps anyone else out meanwhile.
		_ = raw.Finalize()
	}
	if err != nil {
		raw.Destroy()
		return nil, err
	}
	t, err := selectToken(u, lib, tokens)
	if err != nil {
		raw.Destroy()
		return nil, err
	}

	// An entry in logins exists only while the module is initialised, so
	// the slot IDs just read are the ones it was stored under.
	sum := sha256.Sum256(p.b)
	if l := logins[loginKey(path, t.serial, t.slotID)]; l != nil && subtle.ConstantTimeCompare(l.pinSum[:], sum[:]) != 1 {
		raw.Destroy()
		return nil, fmt.Errorf("%w: %s is already open in this process and was opened with another PIN", ErrPINIncorrect, t)
	}
	cfg := &crypto11.Config{Path: path, Pin: p.value(), MaxSessions: o.maxSessions}
	if t.serial != "" && countSerial(tokens, t.serial) == 1 {
		cfg.TokenSerial = t.serial
	} else {
		slot := int(t.slotID)
		cfg.SlotNumber = &slot
	}
	c, err := crypto11.Configure(cfg)
	if err != nil {
		raw.Destroy()
		switch {
		case errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_INCORRECT)):
			return nil, fmt.Errorf("%w: %s refused the PIN from %s", ErrPINIncorrect, t, u.PINSource)
		case errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_LOCKED)):
			return nil, fmt.Errorf("%w: %s: the PIN is locked (too many wrong PINs)", ErrPINIncorrect, t)
		}
		return nil, fmt.Errorf("log into %s: %w", t, err)
	}
	// Slot IDs can change when a module is initialised again: find the
	// token crypto11 opened once more for the raw handle.
	slot, err := findSlot(raw, t)
	if err != nil {
		raw.Destroy()
		_ = c.Close()
		return nil, err
	}
	key := loginKey(path, t.serial, slot)
	if l := logins[key]; l != nil {
		l.refs++
	} else {
		logins[key] = &login{pinSum: sum, refs: 1}
	}
	t.slotID = slot
	return &Module{uri: u, path: path, token: t, log: o.log, login: key, p11: c, raw: raw, slot: slot}, nil
}

// loginKey identifies a token of a module for logins.
func loginKey(path, serial string, slot uint) string {
	return path + "\x00" + serial + "\x00" + strconv.FormatUint(uint64(slot), 10)
}

// enumerate reads the library's info and its initialised tokens.
func enumerate(raw *pkcs11.Ctx) (libraryInfo, []tokenInfo, error) {
	info, err := raw.GetInfo()
	if err != nil {
		return libraryInfo{}, nil, fmt.Errorf("C_GetInfo: %w", err)
	}
	lib := libraryInfo{
		manufacturer: info.ManufacturerID,
		description:  info.LibraryDescription,
		version:      Version{Major: info.LibraryVersion.Major, Minor: info.LibraryVersion.Minor},
	}
	slots, err := raw.GetSlotList(true)
	if err != nil {
		return lib, nil, fmt.Errorf("C_GetSlotList: %w", err)
	}
	var tokens []tokenInfo
	for _, s := range slots {
		si, err := raw.GetSlotInfo(s)
		if err != nil {
			return lib, nil, fmt.Errorf("C_GetSlotInfo(%d): %w", s, err)
		}
		ti, err := raw.GetTokenInfo(s)
		if err != nil {
			return lib, nil, fmt.Errorf("C_GetTokenInfo(%d): %w", s, err)
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue // SoftHSM2 always offers one empty slot
		}
		tokens = append(tokens, tokenInfo{
			slotID:           s,
			slotManufacturer: trimPad(si.ManufacturerID),
			slotDescription:  trimPad(si.SlotDescription),
			label:            trimPad(ti.Label),
			manufacturer:     trimPad(ti.ManufacturerID),
			model:            trimPad(ti.Model),
			serial:           trimPad(ti.SerialNumber),
		})
	}
	return lib, tokens, nil
}

func trimPad(s string) string { return strings.TrimRight(s, " \x00") }

func selectToken(u *URI, lib libraryInfo, tokens []tokenInfo) (tokenInfo, error) {
	if !u.matchesLibrary(lib) {
		return tokenInfo{}, fmt.Errorf("%w: the module is %q %q %s, which the URI's library attributes do not match",
			ErrTokenNotFound, lib.manufacturer, lib.description, lib.version)
	}
	var match []tokenInfo
	for _, t := range tokens {
		if u.matchesToken(t) {
			match = append(match, t)
		}
	}
	switch len(match) {
	case 1:
		return match[0], nil
	case 0:
		return tokenInfo{}, fmt.Errorf("%w: no initialised token matches; the module has %s", ErrTokenNotFound, listTokens(tokens))
	}
	return tokenInfo{}, fmt.Errorf("%w: %d tokens match (%s); add token=, serial= or slot-id= to the URI",
		ErrAmbiguous, len(match), listTokens(match))
}

func listTokens(tokens []tokenInfo) string {
	if len(tokens) == 0 {
		return "no initialised token"
	}
	s := make([]string, len(tokens))
	for i, t := range tokens {
		s[i] = t.String()
	}
	return strings.Join(s, ", ")
}

func countSerial(tokens []tokenInfo, serial string) int {
	n := 0
	for _, t := range tokens {
		if t.serial == serial {
			n++
		}
	}
	return n
}

func findSlot(raw *pkcs11.Ctx, want tokenInfo) (uint, error) {
	_, tokens, err := enumerate(raw)
	if err != nil {
		return 0, err
	}
	for _, t := range tokens {
		if t.serial == want.serial && t.label == want.label && (want.serial != "" || t.slotID == want.slotID) {
			return t.slotID, nil
		}
	}
	return 0, fmt.Errorf("%w: %s disappeared while it was opened", ErrTokenNotFound, want)
}

// Close logs out (when no other Module in the process uses the token) and
// unloads the module when it is the last user. Close waits for operations in
// progress; later calls return ErrClosed. Closing twice is harmless.
func (m *Module) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	loadMu.Lock()
	defer loadMu.Unlock()
	m.raw.Destroy() // no C_Finalize: crypto11 owns initialisation
	err := m.p11.Close()
	if l := logins[m.login]; l != nil {
		if l.refs--; l.refs <= 0 {
			delete(logins, m.login)
		}
	}
	if err != nil {
		return fmt.Errorf("hsm: close %s: %w", m.token, err)
	}
	return nil
}

// enter checks ctx and the Module and read-locks it; callers must
// m.mu.RUnlock() when it returns nil.
func (m *Module) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// URI returns (a copy of) the URI the Module was opened with.
func (m *Module) URI() *URI { return m.uri.clone() }

// LogValue describes the module and token; the Module holds no PIN.
func (m *Module) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("module", m.path),
		slog.String("token", m.token.label),
		slog.String("serial", m.token.serial),
	)
}

// Signer returns the key pair ref names (a private key with a non-empty
// CKA_ID and the public key with the same CKA_ID).
func (m *Module) Signer(ctx context.Context, ref KeyRef) (crypto.Signer, error) {
	if err := ref.valid(); err != nil {
		return nil, err
	}
	if err := m.enter(ctx); err != nil {
		return nil, fmt.Errorf("hsm: find key %s: %w", ref, err)
	}
	defer m.mu.RUnlock()
	return m.findSigner(ref)
}

func (m *Module) findSigner(ref KeyRef) (crypto.Signer, error) {
	found, err := m.p11.FindKeyPairs(ref.ID, labelBytes(ref.Label))
	if err != nil {
		return nil, fmt.Errorf("hsm: find key %s on %s: %w", ref, m.token, err)
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("hsm: %w: no key pair %s on %s", ErrKeyNotFound, ref, m.token)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("hsm: %w: %d key pairs %s on %s", ErrAmbiguous, len(found), ref, m.token)
}

// GenerateKey creates a key pair of the given kind labelled label, refusing
// with ErrKeyExists when a key pair with that label exists. The private key
// is sensitive, not extractable, private and may only sign.
func (m *Module) GenerateKey(ctx context.Context, kind KeyKind, label string) (crypto.Signer, error) {
	if err := checkLabel(label); err != nil {
		return nil, err
	}
	if err := m.enter(ctx); err != nil {
		return nil, fmt.Errorf("hsm: generate %s key %q: %w", kind, label, err)
	}
	defer m.mu.RUnlock()
	m.keyMu.Lock()
	defer m.keyMu.Unlock()
	return m.generate(kind, label)
}

// FindOrGenerate returns the key pair labelled label, creating it first when
// there is none. A key of another kind fails with ErrKeyKind.
func (m *Module) FindOrGenerate(ctx context.Context, kind KeyKind, label string) (crypto.Signer, error) {
	if err := checkLabel(label); err != nil {
		return nil, err
	}
	if err := m.enter(ctx); err != nil {
		return nil, fmt.Errorf("hsm: find or generate %s key %q: %w", kind, label, err)
	}
	defer m.mu.RUnlock()
	m.keyMu.Lock()
	defer m.keyMu.Unlock()
	s, err := m.findSigner(Label(label))
	switch {
	case err == nil:
		if !isKind(s.Public(), kind) {
			return nil, fmt.Errorf("hsm: %w: key %q on %s is a %T, not %s", ErrKeyKind, label, m.token, s.Public(), kind)
		}
		return s, nil
	case errors.Is(err, ErrKeyNotFound):
		return m.generate(kind, label)
	}
	return nil, err
}

// generate creates a key pair; m.keyMu must be held.
func (m *Module) generate(kind KeyKind, label string) (crypto.Signer, error) {
	if kind != ECDSAP256 && kind != RSA2048 {
		return nil, fmt.Errorf("hsm: generate key %q: unsupported kind %s", label, kind)
	}
	existing, err := m.p11.FindKeyPairs(nil, []byte(label))
	if err != nil {
		return nil, fmt.Errorf("hsm: generate %s key %q on %s: %w", kind, label, m.token, err)
	}
	if len(existing) > 0 {
		return nil, fmt.Errorf("hsm: generate %s key %q on %s: %w", kind, label, m.token, ErrKeyExists)
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	public, err := crypto11.NewAttributeSetWithIDAndLabel(id, []byte(label))
	if err != nil {
		return nil, err
	}
	private := public.Copy()
	if err := errors.Join(
		public.Set(pkcs11.CKA_PRIVATE, false),
		private.Set(pkcs11.CKA_PRIVATE, true),
		private.Set(pkcs11.CKA_SENSITIVE, true),
		private.Set(pkcs11.CKA_EXTRACTABLE, false),
		private.Set(pkcs11.CKA_SIGN, true),
		private.Set(pkcs11.CKA_DECRYPT, false),
		private.Set(pkcs11.CKA_DERIVE, false),
	); err != nil {
		return nil, err
	}
	var s crypto.Signer
	switch kind {
	case ECDSAP256:
		s, err = m.p11.GenerateECDSAKeyPairWithAttributes(public, private, elliptic.P256())
	case RSA2048:
		s, err = m.p11.GenerateRSAKeyPairWithAttributes(public, private, 2048)
	}
	if err != nil {
		return nil, fmt.Errorf("hsm: generate %s key %q on %s: %w", kind, label, m.token, err)
	}
	m.log.Info("generated key pair in PKCS#11 token", "hsm", m, "label", label, "kind", kind.String())
	return s, nil
}

func isKind(pub crypto.PublicKey, kind KeyKind) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return kind == ECDSAP256 && k.Curve == elliptic.P256()
	case *rsa.PublicKey:
		return kind == RSA2048 && k.N.BitLen() == 2048
	}
	return false
}

// HMACKey returns the secret key ref names, for HMAC-SHA256.
func (m *Module) HMACKey(ctx context.Context, ref KeyRef) (*HMACKey, error) {
	if err := ref.valid(); err != nil {
		return nil, err
	}
	if err := m.enter(ctx); err != nil {
		return nil, fmt.Errorf("hsm: find HMAC key %s: %w", ref, err)
	}
	defer m.mu.RUnlock()
	return m.findHMAC(ref)
}

func (m *Module) findHMAC(ref KeyRef) (*HMACKey, error) {
	found, err := m.p11.FindKeys(ref.ID, labelBytes(ref.Label))
	if err != nil {
		return nil, fmt.Errorf("hsm: find HMAC key %s on %s: %w", ref, m.token, err)
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("hsm: %w: no secret key %s on %s", ErrKeyNotFound, ref, m.token)
	case 1:
		label := ref.Label
		if label == "" {
			label = "id:" + fmt.Sprintf("%x", ref.ID)
		}
		return &HMACKey{label: label, mac: secretMAC{found[0]}}, nil
	}
	return nil, fmt.Errorf("hsm: %w: %d secret keys %s on %s", ErrAmbiguous, len(found), ref, m.token)
}

// GenerateHMACKey creates a random generic secret key of bits bits
// (CKK_GENERIC_SECRET: SoftHSM2 refuses crypto11's CipherHMACSHA256 with
// CKR_MECHANISM_INVALID), sensitive and not extractable.
func (m *Module) GenerateHMACKey(ctx context.Context, label string, bits int) (*HMACKey, error) {
	if err := checkLabel(label); err != nil {
		return nil, err
	}
	if bits%8 != 0 || bits < 8*MinHMACKeyBytes || bits > 8*MaxHMACKeyBytes {
		return nil, fmt.Errorf("hsm: generate HMAC key %q: %d bits: want a multiple of 8 from %d to %d",
			label, bits, 8*MinHMACKeyBytes, 8*MaxHMACKeyBytes)
	}
	if err := m.enter(ctx); err != nil {
		return nil, fmt.Errorf("hsm: generate HMAC key %q: %w", label, err)
	}
	defer m.mu.RUnlock()
	m.keyMu.Lock()
	defer m.keyMu.Unlock()
	if err := m.checkNoSecret(label); err != nil {
		return nil, err
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	tmpl, err := crypto11.NewAttributeSetWithIDAndLabel(id, []byte(label))
	if err != nil {
		return nil, err
	}
	if err := errors.Join(
		tmpl.Set(pkcs11.CKA_PRIVATE, true),
		tmpl.Set(pkcs11.CKA_DERIVE, false),
	); err != nil {
		return nil, err
	}
	k, err := m.p11.GenerateSecretKeyWithAttributes(tmpl, bits, crypto11.CipherGeneric)
	if err != nil {
		return nil, fmt.Errorf("hsm: generate HMAC key %q on %s: %w", label, m.token, err)
	}
	m.log.Info("generated HMAC key in PKCS#11 token", "hsm", m, "label", label, "bits", bits)
	return &HMACKey{label: label, mac: secretMAC{k}}, nil
}

// ImportHMACKey stores a known secret (a DPS symmetric key, say) in the token
// as a generic secret key usable for HMAC only: sensitive, not extractable,
// private. key is not modified and not kept; afterwards the value lives only
// in the token. Fails with ErrKeyExists when a secret key labelled label
// exists.
func (m *Module) ImportHMACKey(ctx context.Context, label string, key []byte) (*HMACKey, error) {
	if err := checkLabel(label); err != nil {
		return nil, err
	}
	if len(key) < MinHMACKeyBytes || len(key) > MaxHMACKeyBytes {
		return nil, fmt.Errorf("hsm: import HMAC key %q: %d bytes: want %d to %d",
			label, len(key), MinHMACKeyBytes, MaxHMACKeyBytes)
	}
	if err := m.enter(ctx); err != nil {
		return nil, fmt.Errorf("hsm: import HMAC key %q: %w", label, err)
	}
	defer m.mu.RUnlock()
	m.keyMu.Lock()
	defer m.keyMu.Unlock()
	if err := m.checkNoSecret(label); err != nil {
		return nil, err
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	value := bytes.Clone(key)
	defer clear(value)
	if err := m.createSecret(id, label, value); err != nil {
		return nil, fmt.Errorf("hsm: import HMAC key %q into %s: %w", label, m.token, err)
	}
	m.log.Info("imported HMAC key into PKCS#11 token", "hsm", m, "label", label)
	return m.findHMAC(KeyRef{Label: label, ID: id})
}

// createSecret creates the generic secret object with the raw handle. The
// session belongs to this process, which crypto11 has logged in, so it needs
// no login of its own; it must not log out either (that would log out
// crypto11's sessions too).
func (m *Module) createSecret(id []byte, label string, value []byte) error {
	sh, err := m.raw.OpenSession(m.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("C_OpenSession: %w", err)
	}
	defer func() { _ = m.raw.CloseSession(sh) }()
	_, err = m.raw.CreateObject(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
	})
	if err != nil {
		return fmt.Errorf("C_CreateObject: %w", err)
	}
	return nil
}

func (m *Module) checkNoSecret(label string) error {
	existing, err := m.p11.FindKeys(nil, []byte(label))
	if err != nil {
		return fmt.Errorf("hsm: find secret key %q on %s: %w", label, m.token, err)
	}
	if len(existing) > 0 {
		return fmt.Errorf("hsm: secret key %q on %s: %w", label, m.token, ErrKeyExists)
	}
	return nil
}

// SignerFromURI returns the key pair the URI's object and id attributes
// name. The URI's type, if any, must be "private", and its token attributes
// must match this Module's token: m.SignerFromURI(ctx, m.URI()) uses the URI
// the Module was opened with.
func (m *Module) SignerFromURI(ctx context.Context, u *URI) (crypto.Signer, error) {
	ref, err := m.uriKey(u, TypePrivate)
	if err != nil {
		return nil, err
	}
	return m.Signer(ctx, ref)
}

// HMACKeyFromURI returns the secret key the URI's object and id attributes
// name; type, if any, must be "secret-key". See SignerFromURI.
func (m *Module) HMACKeyFromURI(ctx context.Context, u *URI) (*HMACKey, error) {
	ref, err := m.uriKey(u, TypeSecretKey)
	if err != nil {
		return nil, err
	}
	return m.HMACKey(ctx, ref)
}

func (m *Module) uriKey(u *URI, want ObjectType) (KeyRef, error) {
	if u.Type != "" && u.Type != want {
		return KeyRef{}, fmt.Errorf("hsm: %w: %s has type=%s, want type=%s", ErrInvalidURI, u, u.Type, want)
	}
	if !u.matchesToken(m.token) {
		return KeyRef{}, fmt.Errorf("hsm: %w: %s names another token than the open %s", ErrTokenNotFound, u, m.token)
	}
	return u.KeyRef()
}

// secretMAC computes HMAC-SHA256 with a crypto11 secret key.
type secretMAC struct {
	k interface {
		NewHMAC(mech int, length int) (hash.Hash, error)
	}
}

func (s secretMAC) sum(data []byte) (mac []byte, err error) {
	h, err := s.k.NewHMAC(pkcs11.CKM_SHA256_HMAC, 0)
	if err != nil {
		return nil, err
	}
	// crypto11's Sum panics with the PKCS#11 error (hash.Hash has no error
	// result); turn that back into an error.
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(error)
			if !ok {
				panic(r)
			}
			mac, err = nil, e
		}
	}()
	if _, err := h.Write(data); err != nil {
		h.Sum(nil) // ends the operation and returns the session to crypto11's pool
		return nil, err
	}
	return h.Sum(nil), nil
}

func (r KeyRef) valid() error {
	if r.Label == "" && len(r.ID) == 0 {
		return fmt.Errorf("hsm: a key needs a label or an id")
	}
	return nil
}

func labelBytes(label string) []byte {
	if label == "" {
		return nil
	}
	return []byte(label)
}

func checkLabel(label string) error {
	if label == "" {
		return fmt.Errorf("hsm: a key needs a label")
	}
	if !utf8.ValidString(label) {
		return fmt.Errorf("hsm: key label %q is not UTF-8", label)
	}
	return nil
}

// newID returns a random CKA_ID for a new key.
func newID() ([]byte, error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("hsm: key id: %w", err)
	}
	return id, nil
}
