// Package cacert manages the CA certificates enrollment groups name in their
// caReferences. A CA certificate is usable when the catalog declares it
// (whoever controls the catalog file is trusted) or when it was uploaded and
// verified by proof of possession, as in DPS (protocol.md §6.8): upload, ask
// for a verification code, sign a certificate whose subject CN is the code
// with the CA's key, present it. Manager implements that flow over the store
// behind the small Service interface (edgeprovd ca today, the service API
// later); Registry serves the usable certificates to attestation.
package cacert

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/store"
)

// Errors of Service, to be tested with errors.Is.
var (
	// ErrInvalid: a malformed name or certificate (the caller's input).
	ErrInvalid = errors.New("invalid CA certificate request")
	// ErrExists: a CA certificate with that name exists.
	ErrExists = errors.New("CA certificate exists")
	// ErrNotFound: no CA certificate with that name.
	ErrNotFound = errors.New("CA certificate not found")
	// ErrETag: the caller's etag is not the current one.
	ErrETag = errors.New("CA certificate changed (etag mismatch)")
	// ErrProof: the verification certificate does not prove possession of
	// the CA key (wrong or expired code, wrong signer), or no code was
	// generated.
	ErrProof = errors.New("proof of possession failed")
)

// Service is the proof-of-possession flow.
type Service interface {
	// Add uploads a CA certificate (PEM or base64 DER), unverified.
	Add(ctx context.Context, scope, name, certificate string) (*store.CACertificate, error)
	// VerificationCode issues a fresh code; etag, if not empty, must match.
	VerificationCode(ctx context.Context, scope, name, etag string) (*store.CACertificate, error)
	// Verify checks a certificate (PEM or base64 DER) whose subject CN is
	// the code, signed by the CA's key, and marks the CA verified.
	Verify(ctx context.Context, scope, name, certificate string) (*store.CACertificate, error)
	Get(ctx context.Context, scope, name string) (*store.CACertificate, error)
	List(ctx context.Context, scope string) ([]*store.CACertificate, error)
	// Delete removes a CA certificate; etag, if not empty, must match.
	Delete(ctx context.Context, scope, name, etag string) error
}

// CodeTTL is how long a verification code may be used.
const CodeTTL = 24 * time.Hour

// Manager implements Service over a store.
type Manager struct {
	Store store.Store
	Now   func() time.Time
	// Changed, if set, is called after every successful change (to reload
	// a Registry).
	Changed func(ctx context.Context)
}

var _ Service = (*Manager)(nil)

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now().UTC()
	}
	return time.Now().UTC()
}

func (m *Manager) changed(ctx context.Context) {
	if m.Changed != nil {
		m.Changed(ctx)
	}
}

// Add implements Service.
func (m *Manager) Add(ctx context.Context, scope, name, certificate string) (*store.CACertificate, error) {
	if err := enrollment.ValidateCAName(name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	cert, err := enrollment.ParseCertificate(certificate)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if !enrollment.IsCA(cert) {
		return nil, fmt.Errorf("%w: %q is not a CA certificate (basicConstraints CA:TRUE and keyCertSign are needed)", ErrInvalid, cert.Subject.String())
	}
	now := m.now()
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("%w: %q expired on %s", ErrInvalid, cert.Subject.String(), cert.NotAfter.Format(time.RFC3339))
	}
	c := &store.CACertificate{Scope: scope, Name: name, Certificate: cert.Raw, ETag: newETag(), CreatedAt: now, UpdatedAt: now}
	err = m.Store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.CACertificate(scope, name); err == nil {
			return fmt.Errorf("%q: %w", name, ErrExists)
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return tx.PutCACertificate(c)
	})
	if err != nil {
		return nil, err
	}
	m.changed(ctx)
	return c, nil
}

// VerificationCode implements Service.
func (m *Manager) VerificationCode(ctx context.Context, scope, name, etag string) (*store.CACertificate, error) {
	var out *store.CACertificate
	err := m.Store.Update(ctx, func(tx store.Tx) error {
		c, err := m.get(tx, scope, name, etag)
		if err != nil {
			return err
		}
		code := make([]byte, 24)
		if _, err := rand.Read(code); err != nil {
			return err
		}
		now := m.now()
		c.VerificationCode = strings.ToUpper(hex.EncodeToString(code))
		c.VerificationCodeExpiry, c.UpdatedAt, c.ETag = now.Add(CodeTTL), now, newETag()
		out = c
		return tx.PutCACertificate(c)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Verify implements Service.
func (m *Manager) Verify(ctx context.Context, scope, name, certificate string) (*store.CACertificate, error) {
	proof, err := enrollment.ParseCertificate(certificate)
	if err != nil {
		return nil, fmt.Errorf("%w: verification certificate: %w", ErrInvalid, err)
	}
	var out *store.CACertificate
	err = m.Store.Update(ctx, func(tx store.Tx) error {
		c, err := m.get(tx, scope, name, "")
		if err != nil {
			return err
		}
		ca, err := x509.ParseCertificate(c.Certificate)
		if err != nil {
			return fmt.Errorf("stored CA certificate %q: %w", name, err)
		}
		now := m.now()
		if err := checkProof(ca, proof, c.VerificationCode, c.VerificationCodeExpiry, now); err != nil {
			return err
		}
		c.Verified, c.VerificationCode, c.VerificationCodeExpiry = true, "", time.Time{}
		c.UpdatedAt, c.ETag = now, newETag()
		out = c
		return tx.PutCACertificate(c)
	})
	if err != nil {
		return nil, err
	}
	m.changed(ctx)
	return out, nil
}

// checkProof checks that proof is a certificate for the verification code
// issued by ca's key.
func checkProof(ca, proof *x509.Certificate, code string, expiry, now time.Time) error {
	if code == "" {
		return fmt.Errorf("%w: no verification code was generated (or it was used)", ErrProof)
	}
	if now.After(expiry) {
		return fmt.Errorf("%w: the verification code expired at %s; generate a new one", ErrProof, expiry.Format(time.RFC3339))
	}
	cn := strings.ToUpper(strings.TrimSpace(proof.Subject.CommonName))
	if subtle.ConstantTimeCompare([]byte(cn), []byte(code)) != 1 {
		return fmt.Errorf("%w: the certificate's subject CN is not the verification code", ErrProof)
	}
	if err := proof.CheckSignatureFrom(ca); err != nil {
		return fmt.Errorf("%w: the certificate is not signed by the CA's key: %w", ErrProof, err)
	}
	return nil
}

// Get implements Service.
func (m *Manager) Get(ctx context.Context, scope, name string) (*store.CACertificate, error) {
	var out *store.CACertificate
	err := m.Store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = m.get(tx, scope, name, "")
		return err
	})
	return out, err
}

// List implements Service.
func (m *Manager) List(ctx context.Context, scope string) ([]*store.CACertificate, error) {
	var out []*store.CACertificate
	err := m.Store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.CACertificates(scope)
		return err
	})
	return out, err
}

// Delete implements Service.
func (m *Manager) Delete(ctx context.Context, scope, name, etag string) error {
	err := m.Store.Update(ctx, func(tx store.Tx) error {
		if _, err := m.get(tx, scope, name, etag); err != nil {
			return err
		}
		return tx.DeleteCACertificate(scope, name)
	})
	if err != nil {
		return err
	}
	m.changed(ctx)
	return nil
}

func (m *Manager) get(tx store.Tx, scope, name, etag string) (*store.CACertificate, error) {
	c, err := tx.CACertificate(scope, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if etag != "" && etag != c.ETag {
		return nil, fmt.Errorf("%q: %w", name, ErrETag)
	}
	return c, nil
}

func newETag() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Named is a CA certificate with its name.
type Named struct {
	Name string
	Cert *x509.Certificate
}

// Pool is an immutable set of usable CA certificates, indexed by name and by
// subject.
type Pool struct {
	byName    map[string]*x509.Certificate
	bySubject map[string][]string
}

// NewPool builds a Pool from the catalog's CAs and the stored ones; only
// verified stored CAs are used. A stored CA whose name the catalog declares
// is ignored (the catalog is authoritative); the names of those are returned.
func NewPool(catalog []Named, stored []*store.CACertificate) (*Pool, []string) {
	p := &Pool{byName: map[string]*x509.Certificate{}, bySubject: map[string][]string{}}
	add := func(name string, c *x509.Certificate) {
		p.byName[strings.ToLower(name)] = c
		k := string(c.RawSubject)
		p.bySubject[k] = append(p.bySubject[k], name)
	}
	for _, n := range catalog {
		add(n.Name, n.Cert)
	}
	var shadowed []string
	for _, s := range stored {
		if !s.Verified {
			continue
		}
		if _, dup := p.byName[strings.ToLower(s.Name)]; dup {
			shadowed = append(shadowed, s.Name)
			continue
		}
		c, err := x509.ParseCertificate(s.Certificate)
		if err != nil {
			continue // Add stored only parsable certificates
		}
		add(s.Name, c)
	}
	return p, shadowed
}

// CA returns the usable CA certificate named name, or nil.
func (p *Pool) CA(name string) *x509.Certificate {
	if p == nil {
		return nil
	}
	return p.byName[strings.ToLower(name)]
}

// NamesBySubject returns the names of the usable CA certificates whose
// subject is rawSubject (DER).
func (p *Pool) NamesBySubject(rawSubject []byte) []string {
	if p == nil {
		return nil
	}
	return p.bySubject[string(rawSubject)]
}

// Len is the number of usable CA certificates.
func (p *Pool) Len() int {
	if p == nil {
		return 0
	}
	return len(p.byName)
}

// Registry serves the current Pool of one ID scope to attestation.
type Registry struct {
	scope string
	cur   atomic.Pointer[Pool]
}

// NewRegistry returns a Registry for scope serving p.
func NewRegistry(scope string, p *Pool) *Registry {
	r := &Registry{scope: strings.ToUpper(scope)}
	r.cur.Store(p)
	return r
}

// Swap installs a new pool.
func (r *Registry) Swap(p *Pool) { r.cur.Store(p) }

// Current returns the pool being served.
func (r *Registry) Current() *Pool { return r.cur.Load() }

func (r *Registry) pool(scope string) *Pool {
	if !strings.EqualFold(scope, r.scope) {
		return nil
	}
	return r.cur.Load()
}

// CA implements x509chain.CAs.
func (r *Registry) CA(scope, name string) *x509.Certificate { return r.pool(scope).CA(name) }

// NamesBySubject implements x509chain.CAs.
func (r *Registry) NamesBySubject(scope string, rawSubject []byte) []string {
	return r.pool(scope).NamesBySubject(rawSubject)
}

// Load reads the stored CA certificates of scope and builds a Pool with the
// catalog's.
func Load(ctx context.Context, st store.Store, scope string, catalog []Named) (*Pool, []string, error) {
	var stored []*store.CACertificate
	err := st.View(ctx, func(tx store.Tx) error {
		var err error
		stored, err = tx.CACertificates(scope)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read CA certificates: %w", err)
	}
	p, shadowed := NewPool(catalog, stored)
	return p, shadowed, nil
}
