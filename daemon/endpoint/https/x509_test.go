package https_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/endpoint/https"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/issuance"
	rt "github.com/edgeprov/edgeprov/daemon/registration/registrationtest"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

// tlsEnv serves the handler over real TLS that requests (not requires) a
// client certificate, as edgeprovd does.
type tlsEnv struct {
	srv  *httptest.Server
	root *testpki.Cert
}

func newTLSEnv(t *testing.T) *tlsEnv {
	t.Helper()
	root := testpki.NewRoot(t, "factory root")
	g := &enrollment.Group{EnrollmentGroupID: "cams"}
	g.Attestation = enrollment.Attestation{Type: enrollment.AttestationX509, X509: &enrollment.X509Attestation{
		SigningCertificates: &enrollment.X509Certificates{Primary: &enrollment.X509CertificateWithInfo{Certificate: root.PEM()}}}}
	g.ClientCertificateIssuancePolicy = &enrollment.ClientCertificateIssuancePolicy{}
	if err := g.Validate("cams"); err != nil {
		t.Fatal(err)
	}
	ca := testpki.NewRoot(t, "issuing CA")
	iss, err := issuance.NewIssuer("", []*x509.Certificate{ca.Cert}, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	f := rt.NewWith(t, rt.Options{Groups: []*enrollment.Group{g}, Issuer: iss})
	srv := httptest.NewUnstartedServer(https.NewHandler(f.Service, 1, nil))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &tlsEnv{srv: srv, root: root}
}

// client returns an HTTPS client presenting the chain of leaf (and extra
// certificates), or no certificate when leaf is nil.
func (e *tlsEnv) client(leaf *testpki.Cert, extra ...*testpki.Cert) *http.Client {
	tr := e.srv.Client().Transport.(*http.Transport).Clone()
	if leaf != nil {
		c := tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key}
		for _, x := range extra {
			c.Certificate = append(c.Certificate, x.Cert.Raw)
		}
		tr.TLSClientConfig.Certificates = []tls.Certificate{c}
	}
	return &http.Client{Transport: tr}
}

func (e *tlsEnv) do(t *testing.T, c *http.Client, method, path string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", jsonCT)
	r, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, b
}

func TestX509OverTLS(t *testing.T) {
	e := newTLSEnv(t)
	inter := e.root.Intermediate(t, "line 7")
	leaf := inter.Leaf(t, "cam-tls-1")

	code, body := e.do(t, e.client(leaf, inter), "PUT", "/"+rt.Scope+"/registrations/cam-tls-1/register?api-version=2019-03-31", []byte(`{"registrationId":"cam-tls-1"}`))
	var op dpsapi.RegistrationOperationStatus
	if code != 202 || json.Unmarshal(body, &op) != nil {
		t.Fatalf("register: %d %s", code, body)
	}
	code, body = e.do(t, e.client(leaf, inter), "GET", "/"+rt.Scope+"/registrations/cam-tls-1/operations/"+op.OperationID+"?api-version=2019-03-31", nil)
	if code != 200 || json.Unmarshal(body, &op) != nil || op.Status != "assigned" || op.RegistrationState.X509 == nil ||
		op.RegistrationState.X509.EnrollmentGroupID != "cams" {
		t.Fatalf("poll: %d %s", code, body)
	}
	// The poll is authenticated like the register call.
	code, body = e.do(t, e.client(nil), "GET", "/"+rt.Scope+"/registrations/cam-tls-1/operations/"+op.OperationID, nil)
	if code != 401 {
		t.Fatalf("poll without a certificate: %d %s", code, body)
	}

	// Issuance over the wire: csr in, issuedCertificateChain out.
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "cam-tls-2"}}, devKey)
	leaf2 := e.root.Leaf(t, "cam-tls-2")
	reg := fmt.Sprintf(`{"registrationId":"cam-tls-2","csr":%q}`, base64.StdEncoding.EncodeToString(csr))
	code, body = e.do(t, e.client(leaf2), "PUT", "/"+rt.Scope+"/registrations/cam-tls-2/register?api-version="+dpsapi.APIVersionIssuance, []byte(reg))
	if code != 202 || json.Unmarshal(body, &op) != nil {
		t.Fatalf("register with csr: %d %s", code, body)
	}
	code, body = e.do(t, e.client(leaf2), "GET", "/"+rt.Scope+"/registrations/cam-tls-2/operations/"+op.OperationID+"?api-version="+dpsapi.APIVersionIssuance, nil)
	if code != 200 || json.Unmarshal(body, &op) != nil || len(op.RegistrationState.IssuedCertificateChain) != 2 {
		t.Fatalf("poll with csr: %d %s", code, body)
	}

	stranger := testpki.NewRoot(t, "factory root").Leaf(t, "cam-tls-3")
	tests := []struct {
		name       string
		client     *http.Client
		path       string
		body       []byte
		wantStatus int
		wantCode   int
	}{
		{"fail/other-ca", e.client(stranger), "/" + rt.Scope + "/registrations/cam-tls-3/register", nil, 401, dpsapi.CodeUnauthorized},
		{"fail/expired", e.client(e.root.Leaf(t, "cam-tls-4", testpki.Expired())), "/" + rt.Scope + "/registrations/cam-tls-4/register", nil, 401, dpsapi.CodeUnauthorized},
		{"fail/no-certificate", e.client(nil), "/" + rt.Scope + "/registrations/cam-tls-5/register", nil, 401, dpsapi.CodeUnauthorized},
		{"fail/csr-old-api-version", e.client(e.root.Leaf(t, "cam-tls-6")), "/" + rt.Scope + "/registrations/cam-tls-6/register?api-version=2019-03-31",
			[]byte(fmt.Sprintf(`{"csr":%q}`, base64.StdEncoding.EncodeToString(csr))), 400, dpsapi.CodeInvalidCSR},
		{"fail/csr-garbage", e.client(e.root.Leaf(t, "cam-tls-6")), "/" + rt.Scope + "/registrations/cam-tls-6/register?api-version=" + dpsapi.APIVersionIssuance,
			[]byte(`{"csr":"bm90IGEgQ1NS"}`), 400, dpsapi.CodeInvalidCSR},
	}
	var unauthorized []string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := e.do(t, tt.client, "PUT", tt.path, tt.body)
			var ed dpsapi.ErrorDetails
			if code != tt.wantStatus || json.Unmarshal(body, &ed) != nil || ed.ErrorCode != tt.wantCode {
				t.Fatalf("%d %s, want %d %d", code, body, tt.wantStatus, tt.wantCode)
			}
			if code == 401 {
				unauthorized = append(unauthorized, ed.Message)
			}
		})
	}
	// Unknown CA, expired, none: one answer.
	for _, m := range unauthorized {
		if m != "Unauthorized" {
			t.Fatalf("401 messages %q differ", unauthorized)
		}
	}
}
