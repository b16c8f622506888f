package tpm

import (
	"crypto/x509"
	"encoding/base64"
	"os"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
)

// FuzzPresented feeds untrusted bytes, as a device sends them, through
// ParsePresented and the EK certificate check of a TPM group: the critical
// subjectAltName of an EK certificate is parsed by this package, not by
// crypto/x509. The committed corpus in testdata/fuzz/FuzzPresented starts from
// a real swtpm_localca EK certificate. Run with
//
//	go test -fuzz=FuzzPresented ./daemon/attestation/tpm/
func FuzzPresented(f *testing.F) {
	cert, err := os.ReadFile("testdata/swtpm-localca/ek-rsa2048.der")
	if err != nil {
		f.Fatal(err)
	}
	ek, err := os.ReadFile("../../../tpm/dpsauth/testdata/swtpm-ek.bin")
	if err != nil {
		f.Fatal(err)
	}
	issuer, err := os.ReadFile("testdata/swtpm-localca/swtpm-localca.pem")
	if err != nil {
		f.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(issuer)
	f.Add(ek, cert)
	f.Fuzz(func(t *testing.T, ekBytes, certBytes []byte) {
		p, err := ParsePresented(&dpsapi.TPMAttestation{
			EndorsementKey:            base64.StdEncoding.EncodeToString(ekBytes),
			EndorsementKeyCertificate: base64.StdEncoding.EncodeToString(certBytes),
		})
		if err != nil {
			return
		}
		if p.EKCert == nil {
			if len(certBytes) > 0 {
				t.Fatal("a presented certificate was dropped")
			}
			return
		}
		// Must not panic; accepting it means the certificate really is the
		// EK's, issued by the CA (the only one in the corpus is, for another EK).
		if err := verifyEKCertificate(p.EKCert, roots, p.EK, time.Now()); err == nil && !p.EK.PublicKey().Equal(p.EKCert.PublicKey) {
			t.Fatal("accepted a certificate for another key")
		}
	})
}
