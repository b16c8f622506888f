//go:build !cgo

package hsm

import (
	"context"
	"crypto"
	"fmt"
	"log/slog"
)

// Module is an open PKCS#11 token. This binary was built without cgo, so no
// Module can be opened: Open returns ErrNoPKCS11.
type Module struct {
	uri *URI
}

// Open returns ErrNoPKCS11: PKCS#11 needs cgo. It still checks the URI, so a
// configuration error is reported as such.
func Open(ctx context.Context, u *URI, opts ...Option) (*Module, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if u == nil {
		return nil, fmt.Errorf("hsm: open: %w: nil URI", ErrInvalidURI)
	}
	_ = newOptions(opts)
	return nil, fmt.Errorf("hsm: open %s: %w", u, ErrNoPKCS11)
}

// Close does nothing.
func (m *Module) Close() error { return nil }

// URI returns the URI the Module was opened with.
func (m *Module) URI() *URI {
	if m == nil || m.uri == nil {
		return &URI{}
	}
	return m.uri.clone()
}

// LogValue describes the Module.
func (m *Module) LogValue() slog.Value {
	return slog.StringValue("pkcs11 unavailable (built without cgo)")
}

// Signer returns ErrNoPKCS11.
func (m *Module) Signer(context.Context, KeyRef) (crypto.Signer, error) { return nil, ErrNoPKCS11 }

// GenerateKey returns ErrNoPKCS11.
func (m *Module) GenerateKey(context.Context, KeyKind, string) (crypto.Signer, error) {
	return nil, ErrNoPKCS11
}

// FindOrGenerate returns ErrNoPKCS11.
func (m *Module) FindOrGenerate(context.Context, KeyKind, string) (crypto.Signer, error) {
	return nil, ErrNoPKCS11
}

// HMACKey returns ErrNoPKCS11.
func (m *Module) HMACKey(context.Context, KeyRef) (*HMACKey, error) { return nil, ErrNoPKCS11 }

// GenerateHMACKey returns ErrNoPKCS11.
func (m *Module) GenerateHMACKey(context.Context, string, int) (*HMACKey, error) {
	return nil, ErrNoPKCS11
}

// ImportHMACKey returns ErrNoPKCS11.
func (m *Module) ImportHMACKey(context.Context, string, []byte) (*HMACKey, error) {
	return nil, ErrNoPKCS11
}

// SignerFromURI returns ErrNoPKCS11.
func (m *Module) SignerFromURI(context.Context, *URI) (crypto.Signer, error) { return nil, ErrNoPKCS11 }

// HMACKeyFromURI returns ErrNoPKCS11.
func (m *Module) HMACKeyFromURI(context.Context, *URI) (*HMACKey, error) { return nil, ErrNoPKCS11 }
