package x509chain_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/attestation/x509chain"
	"github.com/edgeprov/edgeprov/daemon/cacert"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

const scope = "0ne00C0FFEE"

// pki is the test world: a factory root with an intermediate, a second CA
// family, a CA known by name only (caReferences), and enrollments over them.
type pki struct {
	root, inter, other, named, unverified *testpki.Cert
	set                                   *enrollment.Set
	cas                                   *cacert.Registry
	solo, soloSecondary, blocked          *testpki.Cert
	rootGroup, interGroup, namedGroup     *enrollment.Group
}

func certEntry(c *testpki.Cert) *enrollment.X509CertificateWithInfo {
	return &enrollment.X509CertificateWithInfo{Certificate: c.PEM()}
}

func x509Group(t testing.TB, id string, x *enrollment.X509Attestation) *enrollment.Group {
	t.Helper()
	g := &enrollment.Group{EnrollmentGroupID: id}
	g.Attestation = enrollment.Attestation{Type: enrollment.AttestationX509, X509: x}
	if err := g.Validate(id); err != nil {
		t.Fatal(err)
	}
	return g
}

func x509Individual(t testing.TB, id, status string, primary, secondary *enrollment.X509CertificateWithInfo) *enrollment.Individual {
	t.Helper()
	e := &enrollment.Individual{RegistrationID: id}
	e.ProvisioningStatus = status
	e.Attestation = enrollment.Attestation{Type: enrollment.AttestationX509, X509: &enrollment.X509Attestation{
		ClientCertificates: &enrollment.X509Certificates{Primary: primary, Secondary: secondary}}}
	if err := e.Validate(id); err != nil {
		t.Fatal(err)
	}
	return e
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	p := &pki{}
	p.root = testpki.NewRoot(t, "factory root")
	p.inter = p.root.Intermediate(t, "factory line 7")
	p.other = testpki.NewRoot(t, "someone else's root")
	p.named = testpki.NewRoot(t, "uploaded root")
	p.unverified = testpki.NewRoot(t, "unverified root")
	p.solo = testpki.SelfSigned(t, "solo-01")
	p.soloSecondary = p.root.Leaf(t, "solo-01")
	sym := &enrollment.Individual{RegistrationID: "sym-01"}
	sym.Attestation = enrollment.Attestation{Type: enrollment.AttestationSymmetricKey,
		SymmetricKey: &enrollment.SymmetricKeyAttestation{PrimaryKey: "Y2F0YWxvZy10ZXN0LXByaW1hcnkta2V5LTMyYnl0ZXM="}}
	if err := sym.Validate("sym"); err != nil {
		t.Fatal(err)
	}
	p.blocked = p.inter.Leaf(t, "line7-blocked")
	inds := []*enrollment.Individual{
		x509Individual(t, "solo-01", "", certEntry(p.solo), certEntry(p.soloSecondary)),
		x509Individual(t, "line7-blocked", enrollment.StatusDisabled, certEntry(p.blocked), nil),
		sym,
	}
	p.rootGroup = x509Group(t, "factory", &enrollment.X509Attestation{SigningCertificates: &enrollment.X509Certificates{
		Primary: certEntry(p.other), Secondary: certEntry(p.root)}})
	p.interGroup = x509Group(t, "line7", &enrollment.X509Attestation{SigningCertificates: &enrollment.X509Certificates{
		Primary: certEntry(p.inter)}})
	p.namedGroup = x509Group(t, "uploaded", &enrollment.X509Attestation{CAReferences: &enrollment.X509CAReferences{
		Primary: "unverified-ca", Secondary: "Uploaded-CA"}})
	var err error
	p.set, err = enrollment.NewSet(inds, []*enrollment.Group{p.rootGroup, p.interGroup, p.namedGroup})
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := cacert.NewPool([]cacert.Named{{Name: "uploaded-ca", Cert: p.named.Cert}}, nil)
	p.cas = cacert.NewRegistry(scope, pool)
	return p
}

func chain(cs ...*testpki.Cert) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range cs {
		out = append(out, c.Cert)
	}
	return out
}

func TestVerify(t *testing.T) {
	p := newPKI(t)
	v := &x509chain.Verifier{CAs: p.cas}
	now := time.Now()

	// A chain of four intermediates under the root: the longest accepted.
	deep := []*testpki.Cert{p.root}
	for i := range 4 {
		deep = append(deep, deep[i].Intermediate(t, "deep "+string(rune('a'+i))))
	}
	deepLeaf := deep[4].Leaf(t, "deep-device")
	tooDeep := deep[4].Intermediate(t, "deep e")

	// A loop: loopA is issued by loopB and loopB by loopA; a root that has
	// loopB's name (but not its key) is enrolled, so the chain is tried.
	loopBSeed := testpki.NewRoot(t, "loop b")
	loopA := loopBSeed.Intermediate(t, "loop a")
	loopB := loopA.Intermediate(t, "loop b", testpki.Key(loopBSeed.Key))
	loopRoot := testpki.NewRoot(t, "loop b")
	loopGroup := x509Group(t, "loop", &enrollment.X509Attestation{SigningCertificates: &enrollment.X509Certificates{Primary: certEntry(loopRoot)}})
	loopSet, err := enrollment.NewSet(nil, []*enrollment.Group{loopGroup, p.rootGroup})
	if err != nil {
		t.Fatal(err)
	}

	// A root that allows no intermediate, and one under it anyway.
	plRoot := testpki.NewRoot(t, "pathlen root", testpki.MaxPathLen(0))
	plGroup := x509Group(t, "pathlen", &enrollment.X509Attestation{SigningCertificates: &enrollment.X509Certificates{Primary: certEntry(plRoot)}})
	plSet, err := enrollment.NewSet(nil, []*enrollment.Group{plGroup})
	if err != nil {
		t.Fatal(err)
	}
	plInter := plRoot.Intermediate(t, "too deep")

	twoCN := p.root.Leaf(t, "two-cn", testpki.Subject(pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
		{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "two-cn"}, {Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "other"}}}))
	long := strings.Repeat("a", 65)

	tests := []struct {
		name      string
		regID     string
		chain     []*x509.Certificate
		set       *enrollment.Set
		hint      string
		wantGroup string
		wantInd   string
		wantRef   string
	}{
		{name: "ok/individual-self-signed-primary", regID: "solo-01", chain: chain(p.solo), wantInd: "solo-01", wantRef: "enrollment:solo-01#primary"},
		{name: "ok/individual-secondary-case-insensitive-id", regID: "SOLO-01", chain: chain(p.soloSecondary), wantInd: "solo-01", wantRef: "enrollment:solo-01#secondary"},
		{name: "ok/individual-disabled-still-matches", regID: "line7-blocked", chain: chain(p.blocked, p.inter),
			wantInd: "line7-blocked"},
		{name: "ok/group-root-leaf-only", regID: "cam-1", chain: chain(p.root.Leaf(t, "cam-1")), wantGroup: "factory", wantRef: "group:factory#secondary"},
		{name: "ok/group-root-through-sent-intermediate", regID: "cam-2", chain: chain(p.inter.Leaf(t, "cam-2"), p.inter), hint: "factory",
			wantGroup: "factory", wantRef: "group:factory#secondary"},
		{name: "ok/group-intermediate-enrolled", regID: "cam-3", chain: chain(p.inter.Leaf(t, "cam-3"), p.inter), hint: "line7", wantGroup: "line7",
			wantRef: "group:line7#primary"},
		{name: "ok/group-intermediate-enrolled-not-sent", regID: "cam-4", chain: chain(p.inter.Leaf(t, "cam-4")), wantGroup: "line7"},
		{name: "ok/ca-reference", regID: "up-1", chain: chain(p.named.Leaf(t, "up-1")), wantGroup: "uploaded", wantRef: "group:uploaded#ca:uploaded-ca"},
		{name: "ok/root-sent-too", regID: "cam-5", chain: chain(p.root.Leaf(t, "cam-5"), p.root), wantGroup: "factory"},
		{name: "ok/four-intermediates", regID: "deep-device", chain: chain(deepLeaf, deep[4], deep[3], deep[2], deep[1]), wantGroup: "factory"},
		{name: "ok/no-eku-extension", regID: "cam-6", chain: chain(p.root.Leaf(t, "cam-6", testpki.ExtKeyUsage())), wantGroup: "factory"},
		{name: "ok/any-eku", regID: "cam-7", chain: chain(p.root.Leaf(t, "cam-7", testpki.ExtKeyUsage(x509.ExtKeyUsageAny))), wantGroup: "factory"},

		{name: "fail/no-certificate", regID: "cam-1"},
		{name: "fail/other-ca", regID: "cam-1", chain: chain(testpki.NewRoot(t, "stranger").Leaf(t, "cam-1"))},
		{name: "fail/other-ca-same-name", regID: "cam-1", chain: chain(testpki.NewRoot(t, "factory root", testpki.Subject(p.root.Cert.Subject)).Leaf(t, "cam-1"))},
		{name: "fail/forged-signature", regID: "cam-1", chain: chain(p.root.Leaf(t, "cam-1", testpki.SignedBy(p.other)))},
		{name: "fail/intermediate-missing", regID: "cam-1", chain: chain(deep[2].Leaf(t, "cam-1"))},
		{name: "fail/expired-leaf", regID: "cam-1", chain: chain(p.root.Leaf(t, "cam-1", testpki.Expired()))},
		{name: "fail/not-yet-valid-leaf", regID: "cam-1", chain: chain(p.root.Leaf(t, "cam-1", testpki.Validity(now.Add(time.Hour), now.Add(2*time.Hour))))},
		{name: "fail/expired-intermediate", regID: "cam-1", chain: func() []*x509.Certificate {
			i := p.root.Intermediate(t, "old line", testpki.Expired())
			return chain(i.Leaf(t, "cam-1"), i)
		}()},
		{name: "fail/cn-not-registration-id", regID: "cam-1", chain: chain(p.root.Leaf(t, "cam-2"))},
		{name: "fail/cn-invalid-registration-id", regID: "cam 1", chain: chain(p.root.Leaf(t, "cam 1"))},
		{name: "fail/cn-65-characters", regID: long, chain: chain(p.root.Leaf(t, long))},
		{name: "fail/two-cns", regID: "two-cn", chain: chain(twoCN)},
		{name: "fail/leaf-is-ca", regID: "cam-1", chain: chain(p.root.Leaf(t, "cam-1", testpki.CAFlag()))},
		{name: "fail/leaf-key-usage-without-digital-signature", regID: "cam-1", chain: chain(p.root.Leaf(t, "cam-1", testpki.KeyUsage(x509.KeyUsageKeyEncipherment)))},
		{name: "fail/leaf-server-auth-only", regID: "cam-1", chain: chain(p.root.Leaf(t, "cam-1", testpki.ExtKeyUsage(x509.ExtKeyUsageServerAuth)))},
		{name: "fail/intermediate-server-auth-only", regID: "cam-1", chain: func() []*x509.Certificate {
			i := p.root.Intermediate(t, "servers", testpki.ExtKeyUsage(x509.ExtKeyUsageServerAuth))
			return chain(i.Leaf(t, "cam-1", testpki.ExtKeyUsage()), i)
		}()},
		{name: "fail/intermediate-not-ca", regID: "cam-1", chain: func() []*x509.Certificate {
			i := p.root.Intermediate(t, "not a ca", testpki.NotCA())
			return chain(i.Leaf(t, "cam-1"), i)
		}()},
		{name: "fail/intermediate-without-cert-sign", regID: "cam-1", chain: func() []*x509.Certificate {
			i := p.root.Intermediate(t, "no certsign", testpki.KeyUsage(x509.KeyUsageDigitalSignature))
			return chain(i.Leaf(t, "cam-1"), i)
		}()},
		{name: "fail/path-length-exceeded", regID: "cam-1", set: plSet, chain: chain(plInter.Leaf(t, "cam-1"), plInter)},
		{name: "fail/five-intermediates", regID: "deep-device", chain: chain(tooDeep.Leaf(t, "deep-device"), tooDeep, deep[4], deep[3], deep[2], deep[1])},
		{name: "fail/loop", regID: "loop-1", set: loopSet, chain: chain(loopA.Leaf(t, "loop-1"), loopA, loopB)},
		{name: "fail/unverified-ca-reference", regID: "up-2", chain: chain(p.unverified.Leaf(t, "up-2"))},
		{name: "fail/individual-wins-over-group", regID: "solo-01", chain: chain(p.root.Leaf(t, "solo-01"))},
		{name: "fail/disabled-individual-other-certificate", regID: "line7-blocked", chain: chain(p.inter.Leaf(t, "line7-blocked"), p.inter)},
		{name: "fail/symmetric-key-individual", regID: "sym-01", chain: chain(p.root.Leaf(t, "sym-01"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set := p.set
			if tt.set != nil {
				set = tt.set
			}
			m, err := v.Verify(scope, tt.regID, tt.chain, now, set, tt.hint)
			if strings.HasPrefix(tt.name, "fail/") {
				t.Log(err)
				if !errors.Is(err, x509chain.ErrNoMatch) || m != nil {
					t.Fatalf("Verify = %+v, %v; want ErrNoMatch", m, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.wantInd != "" && (m.Individual == nil || m.Individual.RegistrationID != tt.wantInd || m.Group != nil):
				t.Fatalf("matched %+v, want individual %s", m, tt.wantInd)
			case tt.wantGroup != "" && (m.Group == nil || m.Group.EnrollmentGroupID != tt.wantGroup || m.Individual != nil):
				t.Fatalf("matched %+v, want group %s", m, tt.wantGroup)
			case tt.wantRef != "" && m.KeyRef != tt.wantRef:
				t.Fatalf("KeyRef = %q, want %q", m.KeyRef, tt.wantRef)
			case m.Leaf != tt.chain[0]:
				t.Fatal("Match.Leaf is not the presented leaf")
			}
		})
	}
}
