package enrollment_test

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

func TestX509Validate(t *testing.T) {
	root := testpki.NewRoot(t, "root")
	leaf := root.Leaf(t, "dev-1")
	notCA := root.Intermediate(t, "not a ca", testpki.NotCA())
	s256 := sha256.Sum256(leaf.Cert.Raw)
	s1 := sha1.Sum(leaf.Cert.Raw)
	entry := func(pem string) *enrollment.X509CertificateWithInfo {
		return &enrollment.X509CertificateWithInfo{Certificate: pem}
	}
	certs := func(p, s *enrollment.X509CertificateWithInfo) *enrollment.X509Certificates {
		return &enrollment.X509Certificates{Primary: p, Secondary: s}
	}
	tests := []struct {
		name  string
		group bool
		x     *enrollment.X509Attestation
		want  string // substring of the error; "" for ok
	}{
		{name: "ok/individual-pem", x: &enrollment.X509Attestation{ClientCertificates: certs(entry(leaf.PEM()), nil)}},
		{name: "ok/individual-base64-der", x: &enrollment.X509Attestation{ClientCertificates: certs(entry(base64.StdEncoding.EncodeToString(leaf.Cert.Raw)), nil)}},
		{name: "ok/individual-thumbprints", x: &enrollment.X509Attestation{ClientCertificates: certs(
			&enrollment.X509CertificateWithInfo{Thumbprint: hex.EncodeToString(s256[:])},
			&enrollment.X509CertificateWithInfo{Thumbprint: strings.ToUpper(hex.EncodeToString(s1[:]))})}},
		{name: "ok/group-signing", group: true, x: &enrollment.X509Attestation{SigningCertificates: certs(entry(root.PEM()), nil)}},
		{name: "ok/group-ca-references", group: true, x: &enrollment.X509Attestation{CAReferences: &enrollment.X509CAReferences{Primary: "root-ca", Secondary: "next.ca_2"}}},

		{name: "fail/individual-nothing", x: &enrollment.X509Attestation{}, want: "clientCertificates: required"},
		{name: "fail/individual-no-primary", x: &enrollment.X509Attestation{ClientCertificates: certs(nil, entry(leaf.PEM()))}, want: "primary: required"},
		{name: "fail/individual-signing", x: &enrollment.X509Attestation{ClientCertificates: certs(entry(leaf.PEM()), nil), SigningCertificates: certs(entry(root.PEM()), nil)}, want: "takes clientCertificates only"},
		{name: "fail/individual-ca-certificate", x: &enrollment.X509Attestation{ClientCertificates: certs(entry(root.PEM()), nil)}, want: "must not be"},
		{name: "fail/garbage", x: &enrollment.X509Attestation{ClientCertificates: certs(entry("not a certificate!"), nil)}, want: "neither PEM nor base64 DER"},
		{name: "fail/garbage-der", x: &enrollment.X509Attestation{ClientCertificates: certs(entry("MIIBAAAA"), nil)}, want: "not a valid X.509 certificate"},
		{name: "fail/pem-key", x: &enrollment.X509Attestation{ClientCertificates: certs(entry(leaf.KeyPEM(t)), nil)}, want: `PEM block is "PRIVATE KEY"`},
		{name: "fail/two-certificates", x: &enrollment.X509Attestation{ClientCertificates: certs(entry(leaf.PEM()+root.PEM()), nil)}, want: "more than one PEM block"},
		{name: "fail/certificate-and-thumbprint", x: &enrollment.X509Attestation{ClientCertificates: certs(&enrollment.X509CertificateWithInfo{Certificate: leaf.PEM(), Thumbprint: "ab"}, nil)}, want: "not both"},
		{name: "fail/short-thumbprint", x: &enrollment.X509Attestation{ClientCertificates: certs(&enrollment.X509CertificateWithInfo{Thumbprint: "abcd"}, nil)}, want: "SHA-256 (64 hex digits)"},
		{name: "fail/group-client-certificates", group: true, x: &enrollment.X509Attestation{ClientCertificates: certs(entry(leaf.PEM()), nil), SigningCertificates: certs(entry(root.PEM()), nil)}, want: "not allowed in an enrollment group"},
		{name: "fail/group-nothing", group: true, x: &enrollment.X509Attestation{}, want: "needs signingCertificates or caReferences"},
		{name: "fail/group-both", group: true, x: &enrollment.X509Attestation{SigningCertificates: certs(entry(root.PEM()), nil), CAReferences: &enrollment.X509CAReferences{Primary: "a"}}, want: "not both"},
		{name: "fail/group-signing-not-ca", group: true, x: &enrollment.X509Attestation{SigningCertificates: certs(entry(notCA.PEM()), nil)}, want: "is not a CA certificate"},
		{name: "fail/group-signing-leaf", group: true, x: &enrollment.X509Attestation{SigningCertificates: certs(entry(leaf.PEM()), nil)}, want: "is not a CA certificate"},
		{name: "fail/group-signing-thumbprint", group: true, x: &enrollment.X509Attestation{SigningCertificates: certs(&enrollment.X509CertificateWithInfo{Thumbprint: hex.EncodeToString(s256[:])}, nil)}, want: "given whole"},
		{name: "fail/group-ca-reference-name", group: true, x: &enrollment.X509Attestation{CAReferences: &enrollment.X509CAReferences{Primary: "bad name"}}, want: "not allowed"},
		{name: "fail/group-ca-reference-no-primary", group: true, x: &enrollment.X509Attestation{CAReferences: &enrollment.X509CAReferences{Secondary: "a"}}, want: "caReferences.primary: required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := enrollment.Attestation{Type: enrollment.AttestationX509, X509: tt.x}
			var err error
			if tt.group {
				g := &enrollment.Group{EnrollmentGroupID: "g"}
				g.Attestation = a
				err = g.Validate("g")
			} else {
				e := &enrollment.Individual{RegistrationID: "dev-1"}
				e.Attestation = a
				err = e.Validate("e")
			}
			switch {
			case tt.want == "" && err != nil:
				t.Fatal(err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.want)
			}
			if tt.want == "" && tt.x.ClientCertificates != nil && !tt.x.ClientCertificates.Primary.Matches(leaf.Cert) {
				t.Fatal("the enrolled certificate does not match the device's")
			}
			if tt.want == "" && tt.x.ClientCertificates != nil && tt.x.ClientCertificates.Primary.Matches(root.Leaf(t, "dev-1").Cert) {
				t.Fatal("another certificate with the same subject matches")
			}
		})
	}
}

// TestX509InfoJSON checks that validated certificates carry DPS's info in
// JSON, computed from the certificate (an info sent in is not trusted).
func TestX509InfoJSON(t *testing.T) {
	root := testpki.NewRoot(t, "Factory Root")
	g := &enrollment.Group{EnrollmentGroupID: "cams"}
	if err := json.Unmarshal([]byte(`{"enrollmentGroupId":"cams","attestation":{"type":"x509","x509":{"signingCertificates":{"primary":{
		"certificate":`+strconvQuote(root.PEM())+`,"info":{"subjectName":"CN=forged"}}}}}}`), g); err != nil {
		t.Fatal(err)
	}
	if err := g.Validate("g"); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Attestation struct {
			X509 struct {
				SigningCertificates struct {
					Primary struct {
						Info map[string]any `json:"info"`
					} `json:"primary"`
				} `json:"signingCertificates"`
			} `json:"x509"`
		} `json:"attestation"`
	}
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	info := back.Attestation.X509.SigningCertificates.Primary.Info
	s256 := sha256.Sum256(root.Cert.Raw)
	want := map[string]any{
		"subjectName":      "CN=Factory Root,O=edgeprov test",
		"issuerName":       "CN=Factory Root,O=edgeprov test",
		"sha256Thumbprint": strings.ToUpper(hex.EncodeToString(s256[:])),
		"version":          float64(3),
		"serialNumber":     strings.ToUpper(hex.EncodeToString(root.Cert.SerialNumber.Bytes())),
		"notAfterUtc":      root.Cert.NotAfter.UTC().Format("2006-01-02T15:04:05.0000000Z"),
	}
	for k, v := range want {
		if info[k] != v {
			t.Errorf("info.%s = %v, want %v", k, info[k], v)
		}
	}
	if len(info) != 8 {
		t.Errorf("info has %d fields, want DPS's 8: %v", len(info), info)
	}
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestIssuancePolicyValidate(t *testing.T) {
	tests := []struct {
		name string
		p    enrollment.ClientCertificateIssuancePolicy
		want string
	}{
		{name: "ok/defaults"},
		{name: "ok/full", p: enrollment.ClientCertificateIssuancePolicy{CertificateAuthorityName: "edgeprov", Lifetime: "2160h", KeyTypes: []string{"ecdsa-p256", "RSA-2048"}}},
		{name: "fail/lifetime-not-duration", p: enrollment.ClientCertificateIssuancePolicy{Lifetime: "30 days"}, want: "is not a duration"},
		{name: "fail/lifetime-too-short", p: enrollment.ClientCertificateIssuancePolicy{Lifetime: "10m"}, want: "must be between"},
		{name: "fail/lifetime-too-long", p: enrollment.ClientCertificateIssuancePolicy{Lifetime: "50000h"}, want: "must be between"},
		{name: "fail/key-type", p: enrollment.ClientCertificateIssuancePolicy{KeyTypes: []string{"ed25519"}}, want: `keyTypes[0]: unknown key type "ed25519"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := individual("dev-1")
			p := tt.p
			e.ClientCertificateIssuancePolicy = &p
			err := e.Validate("e")
			switch {
			case tt.want == "" && err != nil:
				t.Fatal(err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
	e := individual("dev-1")
	e.ClientCertificateIssuancePolicy = &enrollment.ClientCertificateIssuancePolicy{KeyTypes: []string{"rsa-2048"}}
	if err := e.Validate("e"); err != nil {
		t.Fatal(err)
	}
	p := e.ClientCertificateIssuancePolicy
	if p.AllowsKeyType("ecdsa-p256") || !p.AllowsKeyType("rsa-2048") || p.LifetimeDuration() != enrollment.DefaultIssuedLifetime {
		t.Fatalf("policy %+v: key types or default lifetime wrong", p)
	}
	if !(&enrollment.ClientCertificateIssuancePolicy{}).AllowsKeyType("rsa-4096") {
		t.Fatal("an empty keyTypes does not allow every supported type")
	}
}

// FuzzParseCertificate: enrollment certificates come from the catalog and,
// through the service API, from callers.
func FuzzParseCertificate(f *testing.F) {
	c := testpki.NewRoot(f, "fuzz")
	f.Add(c.PEM())
	f.Add(base64.StdEncoding.EncodeToString(c.Cert.Raw))
	f.Add("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	f.Add("MIIB AAAA\n")
	f.Fuzz(func(t *testing.T, s string) {
		cert, err := enrollment.ParseCertificate(s)
		if err == nil && (cert == nil || len(cert.Raw) > enrollment.MaxCertificateLen) {
			t.Fatalf("ParseCertificate returned %v without an error", cert)
		}
	})
}
