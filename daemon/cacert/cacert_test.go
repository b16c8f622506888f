package cacert_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/cacert"
	"github.com/edgeprov/edgeprov/daemon/store/bolt"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

const scope = "0ne00CA0001"

func newManager(t *testing.T) (*cacert.Manager, *time.Time) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "edgeprov.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Now()
	return &cacert.Manager{Store: st, Now: func() time.Time { return now }}, &now
}

// TestProofOfPossession walks DPS's flow: upload, code, proof, usable.
func TestProofOfPossession(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	ca := testpki.NewRoot(t, "uploaded root")
	changes := 0
	m.Changed = func(context.Context) { changes++ }

	c, err := m.Add(ctx, scope, "Factory-Root", ca.PEM())
	if err != nil || c.Verified || changes != 1 {
		t.Fatalf("Add = %+v, %v (changes %d)", c, err, changes)
	}
	if _, err := m.Add(ctx, scope, "factory-root", ca.PEM()); !errors.Is(err, cacert.ErrExists) {
		t.Fatalf("second Add = %v, want ErrExists", err)
	}
	pool, err := load(t, m)
	if err != nil || pool.CA("factory-root") != nil {
		t.Fatalf("an unverified CA is usable: %v", err)
	}
	// No code yet.
	if _, err := m.Verify(ctx, scope, "factory-root", ca.Leaf(t, "anything").PEM()); !errors.Is(err, cacert.ErrProof) {
		t.Fatalf("Verify without a code = %v, want ErrProof", err)
	}
	if _, err := m.VerificationCode(ctx, scope, "factory-root", "stale-etag"); !errors.Is(err, cacert.ErrETag) {
		t.Fatalf("VerificationCode with a stale etag = %v", err)
	}
	c, err = m.VerificationCode(ctx, scope, "factory-root", c.ETag)
	if err != nil || len(c.VerificationCode) != 48 {
		t.Fatalf("VerificationCode = %+v, %v", c, err)
	}
	code := c.VerificationCode

	fails := []struct {
		name  string
		proof string
		want  error
	}{
		{"fail/garbage", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", cacert.ErrInvalid},
		{"fail/wrong-cn", ca.Leaf(t, "not-the-code").PEM(), cacert.ErrProof},
		{"fail/signed-by-another-key", testpki.NewRoot(t, "uploaded root").Leaf(t, code).PEM(), cacert.ErrProof},
		{"fail/forged-issuer", ca.Leaf(t, code, testpki.SignedBy(testpki.NewRoot(t, "x"))).PEM(), cacert.ErrProof},
	}
	for _, tt := range fails {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := m.Verify(ctx, scope, "factory-root", tt.proof); !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
	c, err = m.Verify(ctx, scope, "FACTORY-ROOT", ca.Leaf(t, code).PEM())
	if err != nil || !c.Verified || c.VerificationCode != "" {
		t.Fatalf("Verify = %+v, %v", c, err)
	}
	// The code was used up.
	if _, err := m.Verify(ctx, scope, "factory-root", ca.Leaf(t, code).PEM()); !errors.Is(err, cacert.ErrProof) {
		t.Fatalf("second Verify with the used code = %v", err)
	}
	pool, err = load(t, m)
	if err != nil || pool.CA("factory-root") == nil || len(pool.NamesBySubject(ca.Cert.RawSubject)) != 1 {
		t.Fatalf("the verified CA is not usable: %v", err)
	}
	if err := m.Delete(ctx, scope, "factory-root", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(ctx, scope, "factory-root"); !errors.Is(err, cacert.ErrNotFound) {
		t.Fatalf("Get after Delete = %v", err)
	}
}

func TestCodeExpires(t *testing.T) {
	ctx := context.Background()
	m, now := newManager(t)
	ca := testpki.NewRoot(t, "root")
	if _, err := m.Add(ctx, scope, "r", ca.PEM()); err != nil {
		t.Fatal(err)
	}
	c, err := m.VerificationCode(ctx, scope, "r", "")
	if err != nil {
		t.Fatal(err)
	}
	*now = now.Add(cacert.CodeTTL + time.Minute)
	if _, err := m.Verify(ctx, scope, "r", ca.Leaf(t, c.VerificationCode).PEM()); !errors.Is(err, cacert.ErrProof) {
		t.Fatalf("Verify with an expired code = %v", err)
	}
}

func TestAddRefuses(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	root := testpki.NewRoot(t, "root")
	tests := []struct{ name, caName, cert string }{
		{"fail/bad-name", "bad name", root.PEM()},
		{"fail/long-name", string(make([]byte, 65)), root.PEM()},
		{"fail/garbage", "g", "garbage"},
		{"fail/leaf", "leaf", root.Leaf(t, "dev").PEM()},
		{"fail/expired", "old", testpki.NewRoot(t, "old", testpki.Expired()).PEM()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := m.Add(ctx, scope, tt.caName, tt.cert); !errors.Is(err, cacert.ErrInvalid) {
				t.Fatalf("Add = %v, want ErrInvalid", err)
			}
		})
	}
	if cs, err := m.List(ctx, scope); err != nil || len(cs) != 0 {
		t.Fatalf("refused uploads were stored: %v %v", cs, err)
	}
}

// TestPoolCatalogWins checks that a catalog CA shadows a stored one of the
// same name, and that only verified stored CAs are usable.
func TestPoolCatalogWins(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	cat := testpki.NewRoot(t, "catalog root")
	stored := testpki.NewRoot(t, "stored root")
	if _, err := m.Add(ctx, scope, "shared", stored.PEM()); err != nil {
		t.Fatal(err)
	}
	c, _ := m.VerificationCode(ctx, scope, "shared", "")
	if _, err := m.Verify(ctx, scope, "shared", stored.Leaf(t, c.VerificationCode).PEM()); err != nil {
		t.Fatal(err)
	}
	pool, shadowed, err := cacert.Load(ctx, m.Store, scope, []cacert.Named{{Name: "SHARED", Cert: cat.Cert}})
	if err != nil {
		t.Fatal(err)
	}
	if !pool.CA("shared").Equal(cat.Cert) || len(shadowed) != 1 || pool.NamesBySubject(stored.Cert.RawSubject) != nil {
		t.Fatalf("catalog CA does not win: shadowed %v", shadowed)
	}
	r := cacert.NewRegistry("0NE00ca0001", pool)
	if r.CA(scope, "shared") == nil || r.CA("0ne00000002", "shared") != nil {
		t.Fatal("Registry does not scope its pool")
	}
}

func load(t *testing.T, m *cacert.Manager) (*cacert.Pool, error) {
	t.Helper()
	p, _, err := cacert.Load(context.Background(), m.Store, scope, nil)
	return p, err
}
