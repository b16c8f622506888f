package hsm

import (
	"context"
	"crypto"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
)

// KeyKind is the algorithm of a key pair GenerateKey creates.
type KeyKind int

// Key kinds.
const (
	ECDSAP256 KeyKind = iota + 1 // ECDSA on NIST P-256
	RSA2048                      // RSA, 2048-bit modulus, e = 65537
)

func (k KeyKind) String() string {
	switch k {
	case ECDSAP256:
		return "ecdsa-p256"
	case RSA2048:
		return "rsa-2048"
	}
	return "KeyKind(" + strconv.Itoa(int(k)) + ")"
}

// ParseKeyKind parses the names KeyKind.String returns.
func ParseKeyKind(s string) (KeyKind, error) {
	switch strings.ToLower(s) {
	case "ecdsa-p256":
		return ECDSAP256, nil
	case "rsa-2048":
		return RSA2048, nil
	}
	return 0, fmt.Errorf("hsm: unknown key kind %q (want ecdsa-p256 or rsa-2048)", s)
}

// KeyRef names a key on a token by its label (CKA_LABEL), its id (CKA_ID) or
// both; when both are set both must match.
type KeyRef struct {
	Label string
	ID    []byte
}

// Label names a key by its CKA_LABEL.
func Label(label string) KeyRef { return KeyRef{Label: label} }

// ID names a key by its CKA_ID.
func ID(id []byte) KeyRef { return KeyRef{ID: id} }

func (r KeyRef) String() string {
	switch {
	case r.Label != "" && len(r.ID) > 0:
		return fmt.Sprintf("label=%q id=%s", r.Label, hex.EncodeToString(r.ID))
	case len(r.ID) > 0:
		return "id=" + hex.EncodeToString(r.ID)
	}
	return fmt.Sprintf("label=%q", r.Label)
}

// Option configures Open.
type Option func(*options)

type options struct {
	log         *slog.Logger
	moduleDirs  []string
	maxSessions int
}

// WithLogger sets the logger (nil, the default, discards).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithModuleDirs replaces the directories searched for a module given by
// module-name (see URI.ModuleName).
func WithModuleDirs(dirs ...string) Option {
	return func(o *options) { o.moduleDirs = dirs }
}

// WithMaxSessions bounds the PKCS#11 sessions the Module opens (default 16,
// at least 2: one stays open to keep the token logged in).
func WithMaxSessions(n int) Option { return func(o *options) { o.maxSessions = n } }

func newOptions(opts []Option) options {
	o := options{maxSessions: 16}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if o.maxSessions < 2 {
		o.maxSessions = 2
	}
	return o
}

// HMACKey is an HMAC-SHA256 key held by the token. Its value never leaves
// the token.
type HMACKey struct {
	label string
	mac   macer
}

// macer computes an HMAC-SHA256 inside the token.
type macer interface {
	sum(data []byte) ([]byte, error)
}

// Sum returns HMAC-SHA256(key, data), computed by the token.
func (k *HMACKey) Sum(data []byte) ([]byte, error) {
	if k == nil || k.mac == nil {
		return nil, fmt.Errorf("hsm: HMAC with an empty HMACKey")
	}
	mac, err := k.mac.sum(data)
	if err != nil {
		return nil, fmt.Errorf("hsm: HMAC with key %q: %w", k.label, err)
	}
	return mac, nil
}

// Label returns the key's CKA_LABEL.
func (k *HMACKey) Label() string { return k.label }

// LogValue identifies the key by its label.
func (k *HMACKey) LogValue() slog.Value {
	return slog.GroupValue(slog.String("label", k.label), slog.String("kind", "hmac-sha256"))
}

// HMAC key sizes accepted by GenerateHMACKey and ImportHMACKey. DPS symmetric
// keys are 16 to 64 bytes.
const (
	MinHMACKeyBytes = 16
	MaxHMACKeyBytes = 1024
)

// moduleAPI is the method set of Module; both the cgo and the !cgo build
// must provide all of it.
type moduleAPI interface {
	Signer(ctx context.Context, ref KeyRef) (crypto.Signer, error)
	GenerateKey(ctx context.Context, kind KeyKind, label string) (crypto.Signer, error)
	FindOrGenerate(ctx context.Context, kind KeyKind, label string) (crypto.Signer, error)
	HMACKey(ctx context.Context, ref KeyRef) (*HMACKey, error)
	GenerateHMACKey(ctx context.Context, label string, bits int) (*HMACKey, error)
	ImportHMACKey(ctx context.Context, label string, key []byte) (*HMACKey, error)
	SignerFromURI(ctx context.Context, u *URI) (crypto.Signer, error)
	HMACKeyFromURI(ctx context.Context, u *URI) (*HMACKey, error)
	URI() *URI
	LogValue() slog.Value
	Close() error
}

var (
	_ moduleAPI      = (*Module)(nil)
	_ slog.LogValuer = (*Module)(nil)
	_ slog.LogValuer = pin{}
)

// OpenURI parses s and opens the token it names (see Open).
func OpenURI(ctx context.Context, s string, opts ...Option) (*Module, error) {
	u, err := ParseURI(s)
	if err != nil {
		return nil, err
	}
	return Open(ctx, u, opts...)
}
