package registration_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/daemon/issuance"
	"github.com/edgeprov/edgeprov/daemon/registration"
	rt "github.com/edgeprov/edgeprov/daemon/registration/registrationtest"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

// x509World is a fixture with X.509 enrollments and an issuing CA.
type x509World struct {
	f             *rt.Fixture
	root, inter   *testpki.Cert
	solo, blocked *testpki.Cert
	issuingRoot   *testpki.Cert
	symKey        []byte
}

func newX509World(t *testing.T, withIssuer bool) *x509World {
	t.Helper()
	w := &x509World{}
	w.root = testpki.NewRoot(t, "factory root")
	w.inter = w.root.Intermediate(t, "factory line")
	w.solo = testpki.SelfSigned(t, "cam-solo")
	w.blocked = w.inter.Leaf(t, "cam-blocked")
	w.symKey = make([]byte, 32)
	rand.Read(w.symKey)
	entry := func(c *testpki.Cert) *enrollment.X509CertificateWithInfo {
		return &enrollment.X509CertificateWithInfo{Certificate: c.PEM()}
	}
	ind := func(id, status string, c *testpki.Cert) *enrollment.Individual {
		e := &enrollment.Individual{RegistrationID: id}
		e.ProvisioningStatus = status
		e.Attestation = enrollment.Attestation{Type: enrollment.AttestationX509, X509: &enrollment.X509Attestation{
			ClientCertificates: &enrollment.X509Certificates{Primary: entry(c)}}}
		return e
	}
	sym := &enrollment.Individual{RegistrationID: "sym-issue"}
	sym.Attestation = enrollment.Attestation{Type: enrollment.AttestationSymmetricKey,
		SymmetricKey: &enrollment.SymmetricKeyAttestation{PrimaryKey: base64.StdEncoding.EncodeToString(w.symKey)}}
	sym.ClientCertificateIssuancePolicy = &enrollment.ClientCertificateIssuancePolicy{}
	cams := &enrollment.Group{EnrollmentGroupID: "cams"}
	cams.Attestation = enrollment.Attestation{Type: enrollment.AttestationX509, X509: &enrollment.X509Attestation{
		SigningCertificates: &enrollment.X509Certificates{Primary: entry(w.root)}}}
	cams.ClientCertificateIssuancePolicy = &enrollment.ClientCertificateIssuancePolicy{KeyTypes: []string{"ecdsa-p256"}, Lifetime: "48h"}
	inds := []*enrollment.Individual{ind("cam-solo", "", w.solo), ind("cam-blocked", enrollment.StatusDisabled, w.blocked), sym}
	for _, e := range inds {
		if err := e.Validate(e.RegistrationID); err != nil {
			t.Fatal(err)
		}
	}
	if err := cams.Validate("cams"); err != nil {
		t.Fatal(err)
	}
	opts := rt.Options{Individuals: inds, Groups: []*enrollment.Group{cams}}
	if withIssuer {
		w.issuingRoot = testpki.NewRoot(t, "edgeprov issuing root")
		ca := w.issuingRoot.Intermediate(t, "edgeprov issuing CA")
		iss, err := issuance.NewIssuer("edgeprov", []*x509.Certificate{ca.Cert, w.issuingRoot.Cert}, ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		opts.Issuer = iss
	}
	w.f = rt.NewWith(t, opts)
	return w
}

func certs(cs ...*testpki.Cert) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range cs {
		out = append(out, c.Cert)
	}
	return out
}

// registerX509 registers with a client certificate chain (and optionally a
// SAS token and a CSR) and polls once with the same credentials.
func registerX509(t *testing.T, f *rt.Fixture, req registration.RegisterRequest) (*dpsapi.RegistrationOperationStatus, error) {
	t.Helper()
	req.Scope = rt.Scope
	op, err := f.Service.Register(ctx, req)
	if err != nil {
		return nil, err
	}
	return f.Service.OperationStatus(ctx, registration.PollRequest{Scope: rt.Scope, RegistrationID: req.RegistrationID,
		OperationID: op.OperationID, Authorization: req.Authorization, ClientCerts: req.ClientCerts})
}

func identity(t *testing.T, f *rt.Fixture, hubName, deviceID string) *store.Identity {
	t.Helper()
	var id *store.Identity
	if err := f.Store.View(ctx, func(tx store.Tx) error {
		var err error
		id, err = tx.Identity(hubName, deviceID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRegisterX509(t *testing.T) {
	w := newX509World(t, false)
	f := w.f
	tests := []struct {
		name      string
		regID     string
		chain     []*x509.Certificate
		wantGroup string
		wantAuth  string
		wantCode  int
	}{
		{name: "ok/individual", regID: "cam-solo", chain: certs(w.solo), wantAuth: hub.AuthSelfSigned},
		{name: "ok/group-through-intermediate", regID: "cam-0001", chain: certs(w.inter.Leaf(t, "cam-0001"), w.inter), wantGroup: "cams", wantAuth: hub.AuthCertificateAuthority},
		{name: "ok/group-leaf-of-root", regID: "CAM-0002", chain: certs(w.root.Leaf(t, "cam-0002")), wantGroup: "cams", wantAuth: hub.AuthCertificateAuthority},
		{name: "fail/disabled-individual-inside-group", regID: "cam-blocked", chain: certs(w.blocked, w.inter), wantCode: dpsapi.CodeEnrollmentDisabled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op, err := registerX509(t, f, registration.RegisterRequest{RegistrationID: tt.regID, ClientCerts: tt.chain})
			if err != nil {
				t.Fatal(err)
			}
			rs := op.RegistrationState
			if tt.wantCode != 0 {
				if op.Status != dpsapi.StatusFailed || rs.ErrorCode != tt.wantCode {
					t.Fatalf("got %+v, want failed %d", rs, tt.wantCode)
				}
				assertNoRecord(t, f, tt.regID)
				return
			}
			if op.Status != dpsapi.StatusAssigned || rs.X509 == nil || rs.X509.EnrollmentGroupID != tt.wantGroup || rs.SymmetricKey != nil {
				t.Fatalf("got %+v (x509 %+v)", rs, rs.X509)
			}
			if tt.wantGroup == "" {
				ci := rs.X509.CertificateInfo
				_, s256 := dpsapi.Thumbprints(tt.chain[0])
				if ci == nil || ci.SHA256Thumbprint != s256 || ci.SubjectName != "CN="+tt.regID {
					t.Fatalf("certificateInfo %+v", ci)
				}
			}
			id := identity(t, f, rs.AssignedHub, rs.DeviceID)
			if id.AuthType != tt.wantAuth || len(id.SealedKey) != 0 {
				t.Fatalf("hub identity %+v, want auth %s and no key", id, tt.wantAuth)
			}
			if tt.wantAuth == hub.AuthSelfSigned {
				if _, s256 := dpsapi.Thumbprints(tt.chain[0]); id.Thumbprint != s256 {
					t.Fatalf("identity thumbprint %q, want %q", id.Thumbprint, s256)
				}
			}
		})
	}

	refusals := []struct {
		name  string
		regID string
		chain []*x509.Certificate
	}{
		{"fail/other-ca", "cam-0003", certs(testpki.NewRoot(t, "stranger").Leaf(t, "cam-0003"))},
		{"fail/expired-leaf", "cam-0004", certs(w.root.Leaf(t, "cam-0004", testpki.Expired()))},
		{"fail/cn-of-another-device", "cam-0005", certs(w.root.Leaf(t, "cam-0006"))},
		{"fail/individual-with-another-certificate", "cam-solo", certs(w.root.Leaf(t, "cam-solo"))},
		{"fail/unknown-individual-self-signed", "cam-9999", certs(testpki.SelfSigned(t, "cam-9999"))},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: tt.regID, ClientCerts: tt.chain})
			if !errors.Is(err, registration.ErrUnauthorized) {
				t.Fatalf("Register = %v, want ErrUnauthorized", err)
			}
			if tt.regID != "cam-solo" { // registered above
				assertNoRecord(t, f, tt.regID)
			}
		})
	}

	t.Run("fail/poll-with-another-certificate", func(t *testing.T) {
		leaf := w.root.Leaf(t, "cam-0007")
		op, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: "cam-0007", ClientCerts: certs(leaf)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.Service.OperationStatus(ctx, registration.PollRequest{Scope: rt.Scope, RegistrationID: "cam-0007", OperationID: op.OperationID,
			ClientCerts: certs(testpki.NewRoot(t, "stranger").Leaf(t, "cam-0007"))})
		if !errors.Is(err, registration.ErrUnauthorized) {
			t.Fatalf("poll with a stranger's certificate = %v", err)
		}
		res, err := f.Service.RegistrationStatus(ctx, registration.StatusRequest{Scope: rt.Scope, RegistrationID: "cam-0007", ClientCerts: certs(leaf)})
		if err != nil || res.X509 == nil || res.X509.EnrollmentGroupID != "cams" {
			t.Fatalf("status lookup with the certificate: %+v, %v", res, err)
		}
	})

	t.Run("ok/sas-decides-when-both", func(t *testing.T) {
		// A SAS token and a certificate: the token is the evidence.
		op, err := registerX509(t, f, registration.RegisterRequest{RegistrationID: "sym-issue",
			Authorization: f.Token("sym-issue", w.symKey), ClientCerts: certs(w.root.Leaf(t, "sym-issue"))})
		if err != nil || op.Status != dpsapi.StatusAssigned || op.RegistrationState.SymmetricKey == nil {
			t.Fatalf("%+v, %v", op, err)
		}
	})
}

func csrB64(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

func TestCertificateIssuance(t *testing.T) {
	w := newX509World(t, true)
	f := w.f
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	subject := func(cn string) *x509.CertificateRequest {
		return &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}
	}
	goodCSR := csrB64(t, devKey, subject("cam-0100"))
	badSig, _ := base64.StdEncoding.DecodeString(goodCSR)
	badSig[len(badSig)-2] ^= 0x55

	t.Run("ok/group-device", func(t *testing.T) {
		op, err := registerX509(t, f, registration.RegisterRequest{RegistrationID: "cam-0100", APIVersion: dpsapi.APIVersionIssuance,
			ClientCerts: certs(w.inter.Leaf(t, "cam-0100"), w.inter), Body: dpsapi.DeviceRegistration{CSR: goodCSR}})
		if err != nil || op.Status != dpsapi.StatusAssigned {
			t.Fatalf("%+v, %v", op, err)
		}
		leaf := checkChain(t, op.RegistrationState.IssuedCertificateChain, w.issuingRoot, devKey.Public())
		if leaf.Subject.CommonName != "cam-0100" || time.Until(leaf.NotAfter) > 48*time.Hour {
			t.Fatalf("issued %s until %s", leaf.Subject, leaf.NotAfter)
		}
		if id := identity(t, f, op.RegistrationState.AssignedHub, "cam-0100"); id.AuthType != hub.AuthCertificateAuthority {
			t.Fatalf("identity auth %s", id.AuthType)
		}
		// The chain belongs to the operation, not to the record.
		res, err := f.Service.RegistrationStatus(ctx, registration.StatusRequest{Scope: rt.Scope, RegistrationID: "cam-0100",
			ClientCerts: certs(w.root.Leaf(t, "cam-0100"))})
		if err != nil || len(res.IssuedCertificateChain) != 0 {
			t.Fatalf("status lookup: %+v, %v", res, err)
		}
	})
	t.Run("ok/symmetric-key-device-legacy-preview", func(t *testing.T) {
		op, err := registerX509(t, f, registration.RegisterRequest{RegistrationID: "sym-issue", APIVersion: dpsapi.APIVersionIssuanceLegacy,
			Authorization: f.Token("sym-issue", w.symKey), Body: dpsapi.DeviceRegistration{CSR: csrB64(t, rsaKey, subject("SYM-ISSUE"))}})
		if err != nil || op.Status != dpsapi.StatusAssigned {
			t.Fatalf("%+v, %v", op, err)
		}
		checkChain(t, op.RegistrationState.IssuedCertificateChain, w.issuingRoot, rsaKey.Public())
	})

	camLeaf := certs(w.root.Leaf(t, "cam-0200"))
	tests := []struct {
		name     string
		req      registration.RegisterRequest
		wantCode int
		wantErr  error
		want     string
	}{
		{name: "fail/api-version-without-issuance", req: registration.RegisterRequest{RegistrationID: "cam-0200", APIVersion: "2021-06-01",
			ClientCerts: camLeaf, Body: dpsapi.DeviceRegistration{CSR: goodCSR}}, wantCode: dpsapi.CodeInvalidCSR, want: "api-version=2025-07-01-preview"},
		{name: "fail/no-api-version", req: registration.RegisterRequest{RegistrationID: "cam-0200",
			ClientCerts: camLeaf, Body: dpsapi.DeviceRegistration{CSR: goodCSR}}, wantCode: dpsapi.CodeInvalidCSR},
		{name: "fail/signature-does-not-verify", req: registration.RegisterRequest{RegistrationID: "cam-0200", APIVersion: dpsapi.APIVersionIssuance,
			ClientCerts: camLeaf, Body: dpsapi.DeviceRegistration{CSR: base64.StdEncoding.EncodeToString(badSig)}}, wantCode: dpsapi.CodeInvalidCSR, want: "signature"},
		{name: "fail/garbage-csr", req: registration.RegisterRequest{RegistrationID: "cam-0200", APIVersion: dpsapi.APIVersionIssuance,
			ClientCerts: camLeaf, Body: dpsapi.DeviceRegistration{CSR: "MIIBzzzz"}}, wantCode: dpsapi.CodeInvalidCSR},
		{name: "fail/subject-of-another-device", req: registration.RegisterRequest{RegistrationID: "cam-0200", APIVersion: dpsapi.APIVersionIssuance,
			ClientCerts: camLeaf, Body: dpsapi.DeviceRegistration{CSR: csrB64(t, devKey, subject("cam-0201"))}}, wantCode: dpsapi.CodeInvalidCSR, want: "CN=cam-0200"},
		{name: "fail/subject-alternative-name", req: registration.RegisterRequest{RegistrationID: "cam-0200", APIVersion: dpsapi.APIVersionIssuance,
			ClientCerts: camLeaf, Body: dpsapi.DeviceRegistration{CSR: csrB64(t, devKey, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "cam-0200"},
				DNSNames: []string{"login.bank.example"}})}}, wantCode: dpsapi.CodeInvalidCSR, want: "alternative names"},
		{name: "fail/key-type-not-allowed", req: registration.RegisterRequest{RegistrationID: "cam-0200", APIVersion: dpsapi.APIVersionIssuance,
			ClientCerts: camLeaf, Body: dpsapi.DeviceRegistration{CSR: csrB64(t, rsaKey, subject("cam-0200"))}}, wantCode: dpsapi.CodeInvalidCSR, want: "rsa-2048"},
		{name: "fail/enrollment-without-policy", req: registration.RegisterRequest{RegistrationID: "dev-individual", APIVersion: dpsapi.APIVersionIssuance,
			Authorization: f.Token("dev-individual", rt.IndividualKey), Body: dpsapi.DeviceRegistration{CSR: csrB64(t, devKey, subject("dev-individual"))}},
			wantCode: dpsapi.CodeInvalidCSR, want: "not allowed"},
		// An unknown device learns nothing about policies: 401, not 400.
		{name: "fail/unknown-device", req: registration.RegisterRequest{RegistrationID: "cam-0300", APIVersion: dpsapi.APIVersionIssuance,
			ClientCerts: certs(testpki.NewRoot(t, "stranger").Leaf(t, "cam-0300")), Body: dpsapi.DeviceRegistration{CSR: csrB64(t, devKey, subject("cam-0300"))}},
			wantErr: registration.ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Scope = rt.Scope
			_, err := f.Service.Register(ctx, tt.req)
			var bad *registration.BadRequestError
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			case !errors.As(err, &bad) || bad.Code != tt.wantCode || !strings.Contains(bad.Msg, tt.want):
				t.Fatalf("err = %v, want bad request %d with %q", err, tt.wantCode, tt.want)
			}
			assertNoRecord(t, f, tt.req.RegistrationID)
		})
	}

	t.Run("fail/csr-in-status-lookup", func(t *testing.T) {
		_, err := f.Service.RegistrationStatus(ctx, registration.StatusRequest{Scope: rt.Scope, RegistrationID: "cam-0100",
			ClientCerts: camLeaf, Body: dpsapi.DeviceRegistration{CSR: goodCSR}})
		var bad *registration.BadRequestError
		if !errors.As(err, &bad) || bad.Code != dpsapi.CodeInvalidCSR {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("fail/no-issuing-ca", func(t *testing.T) {
		w2 := newX509World(t, false)
		_, err := w2.f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: "cam-0100", APIVersion: dpsapi.APIVersionIssuance,
			ClientCerts: certs(w2.root.Leaf(t, "cam-0100")), Body: dpsapi.DeviceRegistration{CSR: goodCSR}})
		var bad *registration.BadRequestError
		if !errors.As(err, &bad) || bad.Code != dpsapi.CodeInvalidCSR || !strings.Contains(bad.Msg, "no issuing CA") {
			t.Fatalf("err = %v", err)
		}
		assertNothingWritten(t, w2.f)
	})
}

// checkChain decodes an issuedCertificateChain and verifies it to root.
func checkChain(t *testing.T, b64 []string, root *testpki.Cert, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	if len(b64) != 3 {
		t.Fatalf("issuedCertificateChain has %d entries, want leaf, CA, root", len(b64))
	}
	var cs []*x509.Certificate
	for _, s := range b64 {
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root.Cert)
	inter.AddCert(cs[1])
	if _, err := cs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(cs[0].PublicKey) {
		t.Fatal("the certificate is not for the CSR's key")
	}
	return cs[0]
}

// TestKeysSealedAtRest registers symmetric-key devices and reads the raw
// bbolt file: the keys the local hub keeps are in it only sealed.
func TestKeysSealedAtRest(t *testing.T) {
	w := newX509World(t, false)
	f := w.f
	op, err := registerX509(t, f, registration.RegisterRequest{RegistrationID: "sym-issue", Authorization: f.Token("sym-issue", w.symKey)})
	if err != nil || op.Status != dpsapi.StatusAssigned {
		t.Fatalf("%+v, %v", op, err)
	}
	groupDev := "grp-sealed-1"
	op2, err := register(t, f, groupDev, f.GroupToken(groupDev), "")
	if err != nil || op2.Status != dpsapi.StatusAssigned {
		t.Fatalf("%+v, %v", op2, err)
	}
	derived := sas.DeriveDeviceKey(rt.GroupKey, groupDev)

	// The hub can read the keys back.
	for _, c := range []struct {
		hub, dev string
		key      []byte
	}{{op.RegistrationState.AssignedHub, "sym-issue", w.symKey}, {op2.RegistrationState.AssignedHub, groupDev, derived}} {
		got, err := f.Local[c.hub].DeviceKey(ctx, c.dev)
		if err != nil || !bytes.Equal(got, c.key) {
			t.Fatalf("DeviceKey(%s) = %x, %v", c.dev, got, err)
		}
		if id := identity(t, f, c.hub, c.dev); len(id.SealedKey) == 0 {
			t.Fatalf("no sealed key kept for %s", c.dev)
		}
	}

	var raw []byte
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(f.StorePath), "*"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		raw = append(raw, b...)
	}
	if !bytes.Contains(raw, []byte(`"sealedKey"`)) {
		t.Fatal("the raw store holds no sealed key: the test reads the wrong file")
	}
	for _, k := range [][]byte{w.symKey, derived} {
		for _, form := range [][]byte{k, []byte(base64.StdEncoding.EncodeToString(k)), []byte(strings.ToLower(string(hexOf(k))))} {
			if bytes.Contains(raw, form) {
				t.Fatalf("the raw store file contains a device key (%q)", form[:8])
			}
		}
	}
}

func hexOf(b []byte) []byte {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return out
}
