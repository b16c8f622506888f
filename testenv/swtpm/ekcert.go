package swtpm

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// EKCertNVIndex is the TCG NV index of the RSA-2048 EK certificate.
const EKCertNVIndex tpm2.TPMHandle = 0x01c00002

// TCG EK Credential Profile identifiers.
var (
	oidTPMManufacturer  = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel         = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion       = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidEKCertificateEKU = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
)

const (
	nvChunk        = 512 // bytes per TPM2_NV_Write
	ekCertValidity = 20 * 365 * 24 * time.Hour
	// What swtpm_localca writes for swtpm 0.7.
	tpmManufacturer = "id:00001014" // IBM
	tpmModel        = "swtpm"
	tpmVersion      = "id:20191023"
)

// WriteEKCertificate creates the TPM's RSA EK from the TCG default template
// (tpm2.RSAEKTemplate; the EK is flushed, not persisted), issues it a
// certificate signed by ca/caKey, and writes the DER into NV index
// 0x01c00002 with platform authorization, replacing an existing index. swtpm's
// platform auth is empty, which is what makes this possible.
//
// The certificate looks like a manufacturer's (TCG EK Credential Profile):
// empty subject, a critical subjectAltName holding only a directoryName with
// the TPM manufacturer/model/version, EKU 2.23.133.8.1, keyEncipherment.
// Note that Go's x509.Verify rejects such a certificate as "unhandled
// critical extension" unless the caller handles the SAN, as with real ones.
func WriteEKCertificate(t transport.TPM, ca *x509.Certificate, caKey crypto.Signer) (*x509.Certificate, error) {
	if ca == nil || caKey == nil {
		return nil, errors.New("no CA certificate or key given")
	}
	ek, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.RSAEKTemplate),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("create EK: %w", err)
	}
	_, flushErr := tpm2.FlushContext{FlushHandle: ek.ObjectHandle}.Execute(t)
	if flushErr != nil {
		return nil, fmt.Errorf("flush EK: %w", flushErr)
	}
	pub, err := ek.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("EK public: %w", err)
	}
	parms, err := pub.Parameters.RSADetail()
	if err != nil {
		return nil, fmt.Errorf("EK parameters: %w", err)
	}
	unique, err := pub.Unique.RSA()
	if err != nil {
		return nil, fmt.Errorf("EK modulus: %w", err)
	}
	ekPub, err := tpm2.RSAPub(parms, unique)
	if err != nil {
		return nil, fmt.Errorf("EK public key: %w", err)
	}

	der, err := issueEKCertificate(ekPub, ca, caKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse issued EK certificate: %w", err)
	}
	if err := writeNV(t, EKCertNVIndex, der); err != nil {
		return nil, err
	}
	return cert, nil
}

func issueEKCertificate(ekPub crypto.PublicKey, ca *x509.Certificate, caKey crypto.Signer) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	dirName, err := asn1.Marshal(pkix.RDNSequence{
		{{Type: oidTPMManufacturer, Value: tpmManufacturer}},
		{{Type: oidTPMModel, Value: tpmModel}},
		{{Type: oidTPMVersion, Value: tpmVersion}},
	})
	if err != nil {
		return nil, fmt.Errorf("SAN directoryName: %w", err)
	}
	// GeneralNames ::= SEQUENCE OF GeneralName; directoryName is [4] EXPLICIT Name.
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dirName}})
	if err != nil {
		return nil, fmt.Errorf("SAN: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(ekCertValidity),
		KeyUsage:              x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{oidEKCertificateEKU},
		BasicConstraintsValid: true,
		ExtraExtensions:       []pkix.Extension{{Id: oidSubjectAltName, Critical: true, Value: san}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, ekPub, caKey)
	if err != nil {
		return nil, fmt.Errorf("issue EK certificate: %w", err)
	}
	return der, nil
}

// writeNV (re)defines a platform-created NV index the way manufacturers
// provision EK certificates and writes data into it.
func writeNV(t transport.TPM, index tpm2.TPMHandle, data []byte) error {
	if len(data) > 0xffff {
		return fmt.Errorf("NV data of %d bytes is too large", len(data))
	}
	platform := tpm2.AuthHandle{Handle: tpm2.TPMRHPlatform, Auth: tpm2.PasswordAuth(nil)}
	if old, err := (tpm2.NVReadPublic{NVIndex: index}).Execute(t); err == nil {
		if _, err := (tpm2.NVUndefineSpace{
			AuthHandle: platform,
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: old.NVName},
		}).Execute(t); err != nil {
			return fmt.Errorf("undefine existing NV index 0x%08x: %w", uint32(index), err)
		}
	} else if !errors.Is(err, tpm2.TPMRCHandle) {
		return fmt.Errorf("read NV index 0x%08x: %w", uint32(index), err)
	}
	nvPub := tpm2.TPMSNVPublic{
		NVIndex: index,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			PPWrite: true, WriteDefine: true, PPRead: true, OwnerRead: true, AuthRead: true,
			NoDA: true, PlatformCreate: true, NT: tpm2.TPMNTOrdinary,
		},
		DataSize: uint16(len(data)),
	}
	if _, err := (tpm2.NVDefineSpace{
		AuthHandle: platform,
		PublicInfo: tpm2.New2B(nvPub),
	}).Execute(t); err != nil {
		return fmt.Errorf("define NV index 0x%08x: %w", uint32(index), err)
	}
	// The index is Written after the first write, which changes its Name.
	for off := 0; off < len(data); off += nvChunk {
		rp, err := (tpm2.NVReadPublic{NVIndex: index}).Execute(t)
		if err != nil {
			return fmt.Errorf("read NV index 0x%08x: %w", uint32(index), err)
		}
		end := min(off+nvChunk, len(data))
		if _, err := (tpm2.NVWrite{
			AuthHandle: platform,
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: rp.NVName},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: data[off:end]},
			Offset:     uint16(off),
		}).Execute(t); err != nil {
			return fmt.Errorf("write NV index 0x%08x at %d: %w", uint32(index), off, err)
		}
	}
	return nil
}
