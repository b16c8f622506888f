package x509chain_test

import (
	"errors"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/attestation/x509chain"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

// A chain answered from the cache is still refused once any certificate of
// its verified path has expired, here the intermediate before the leaf.
func TestCachedChainRechecksValidity(t *testing.T) {
	now := time.Now()
	root := testpki.NewRoot(t, "short-lived line root")
	inter := root.Intermediate(t, "short-lived line", testpki.Validity(now.Add(-time.Hour), now.Add(time.Hour)))
	leaf := inter.Leaf(t, "cam-short", testpki.Validity(now.Add(-time.Hour), now.Add(48*time.Hour)))
	set, err := enrollment.NewSet(nil, []*enrollment.Group{x509Group(t, "short", &enrollment.X509Attestation{
		SigningCertificates: &enrollment.X509Certificates{Primary: certEntry(root)}})})
	if err != nil {
		t.Fatal(err)
	}
	v := &x509chain.Verifier{}
	for i := range 2 { // verified, then cached
		if m, err := v.Verify(scope, "cam-short", chain(leaf, inter), now, set, ""); err != nil || m.KeyRef != "group:short#primary" {
			t.Fatalf("verify %d: %+v, %v", i, m, err)
		}
	}
	if m, err := v.Verify(scope, "cam-short", chain(leaf, inter), now.Add(2*time.Hour), set, ""); !errors.Is(err, x509chain.ErrNoMatch) {
		t.Fatalf("after the intermediate expired: %+v, %v; want ErrNoMatch", m, err)
	}
}

// A cached chain follows the group's trust: when the group (same ID) now
// trusts another CA of the same name, the chain it verified before is refused.
func TestCachedChainFollowsAnchors(t *testing.T) {
	now := time.Now()
	oldRoot := testpki.NewRoot(t, "rotated root")
	newRoot := testpki.NewRoot(t, "rotated root") // same subject, new key
	leaf := oldRoot.Leaf(t, "cam-rot")
	group := func(r *testpki.Cert) *enrollment.Set {
		s, err := enrollment.NewSet(nil, []*enrollment.Group{x509Group(t, "rotating", &enrollment.X509Attestation{
			SigningCertificates: &enrollment.X509Certificates{Primary: certEntry(r)}})})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	v := &x509chain.Verifier{}
	if _, err := v.Verify(scope, "cam-rot", chain(leaf), now, group(oldRoot), ""); err != nil {
		t.Fatal(err)
	}
	if m, err := v.Verify(scope, "cam-rot", chain(leaf), now, group(newRoot), ""); !errors.Is(err, x509chain.ErrNoMatch) {
		t.Fatalf("after the group's CA changed: %+v, %v; want ErrNoMatch", m, err)
	}
	// And the cache does not carry a chain across scopes.
	if _, err := v.Verify("0ne00000002", "cam-rot", chain(leaf), now, group(newRoot), ""); !errors.Is(err, x509chain.ErrNoMatch) {
		t.Fatalf("other scope: %v; want ErrNoMatch", err)
	}
}
