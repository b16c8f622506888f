package tpm

import (
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

var (
	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
	// tcg-at-tpm*: manufacturer, model, version (TCG EK Credential Profile).
	oidTCGAttributes = asn1.ObjectIdentifier{2, 23, 133, 2}
	// tcg-kp-EKCertificate, the EK certificate's extended key usage.
	oidEKCertificateEKU = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
)

// MaxEKCertificateSize bounds the DER EK certificate a device may present
// (real ones are about 1 KB; the NV index is at most 2 KB on most TPMs).
const MaxEKCertificateSize = 4096

// verifyEKCertificate checks that cert chains to one of roots at now and is
// an EK certificate for ek.
//
// EK certificates (TCG EK Credential Profile) have an empty subject and put
// the TPM's identity in a critical subjectAltName holding only a
// directoryName. Go parses it but leaves it in UnhandledCriticalExtensions,
// so Verify refuses the certificate. Here the SAN is inspected — it must be
// GeneralNames of directoryNames made of TCG TPM attributes only — and only
// then taken off the unhandled list of a copy of the certificate. Any other
// unhandled critical extension still fails verification. The EKU
// (2.23.133.8.1) is unknown to Go, hence ExtKeyUsageAny; it is checked here
// instead.
func verifyEKCertificate(cert *x509.Certificate, roots *x509.CertPool, ek *dpsauth.EK, now time.Time) error {
	if roots == nil {
		return errors.New("no trusted EK CA certificates")
	}
	c := *cert // a shallow copy: the caller's certificate is left as parsed
	c.UnhandledCriticalExtensions = nil
	for _, oid := range cert.UnhandledCriticalExtensions {
		if !oid.Equal(oidSubjectAltName) {
			c.UnhandledCriticalExtensions = append(c.UnhandledCriticalExtensions, oid)
			continue
		}
		if err := checkTPMSubjectAltName(cert); err != nil {
			return err
		}
	}
	if len(cert.ExtKeyUsage) > 0 || len(cert.UnknownExtKeyUsage) > 0 {
		if !slices.ContainsFunc(cert.UnknownExtKeyUsage, oidEKCertificateEKU.Equal) && !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageAny) {
			return errors.New("the certificate's extended key usage does not include tcg-kp-EKCertificate (2.23.133.8.1)")
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return err
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok || !pub.Equal(ek.PublicKey()) {
		return errors.New("the certificate is not for the presented endorsement key")
	}
	return nil
}

// checkTPMSubjectAltName accepts a subjectAltName that holds only
// directoryNames of TCG TPM attributes (manufacturer, model, version).
func checkTPMSubjectAltName(cert *x509.Certificate) error {
	var value []byte
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidSubjectAltName) {
			value = e.Value
		}
	}
	var names []asn1.RawValue
	rest, err := asn1.Unmarshal(value, &names)
	if err != nil || len(rest) > 0 || len(names) == 0 {
		return errors.New("the critical subjectAltName is not a list of general names")
	}
	for _, n := range names {
		// directoryName [4] EXPLICIT Name
		if n.Class != asn1.ClassContextSpecific || n.Tag != 4 || !n.IsCompound {
			return fmt.Errorf("the critical subjectAltName holds a general name of tag %d, not only a TPM directoryName", n.Tag)
		}
		var dn pkix.RDNSequence
		rest, err := asn1.Unmarshal(n.Bytes, &dn)
		if err != nil || len(rest) > 0 || len(dn) == 0 {
			return errors.New("the critical subjectAltName's directoryName does not parse")
		}
		for _, rdn := range dn {
			for _, atv := range rdn {
				if !hasPrefix(atv.Type, oidTCGAttributes) {
					return fmt.Errorf("the critical subjectAltName's directoryName has attribute %s, not a TCG TPM attribute", atv.Type)
				}
			}
		}
	}
	return nil
}

func hasPrefix(oid, prefix asn1.ObjectIdentifier) bool {
	return len(oid) > len(prefix) && oid[:len(prefix)].Equal(prefix)
}
