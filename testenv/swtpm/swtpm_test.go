package swtpm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgeprov/edgeprov/testenv/swtpm"
)

func TestStart(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		opts       []swtpm.Option
		pathPrefix string
		tcti       string
	}{
		{"ok/unix", nil, "unix:/", "swtpm:path=/"},
		{"ok/tcp", []swtpm.Option{swtpm.WithTCP()}, "tcp:127.0.0.1:", "swtpm:host=127.0.0.1,port="},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inst := swtpm.Start(t, tc.opts...)
			if !strings.HasPrefix(inst.Path(), tc.pathPrefix) || !strings.HasPrefix(inst.TCTI(), tc.tcti) {
				t.Fatalf("Path %q, TCTI %q; want prefixes %q, %q", inst.Path(), inst.TCTI(), tc.pathPrefix, tc.tcti)
			}
			// Started up already (startup-clear): commands work at once,
			// and a second connection after the first closed is served.
			for range 2 {
				c, err := inst.Dial()
				if err != nil {
					t.Fatal(err)
				}
				r, err := tpm2.GetRandom{BytesRequested: 16}.Execute(c)
				if err != nil {
					t.Fatalf("GetRandom: %v", err)
				}
				if len(r.RandomBytes.Buffer) != 16 {
					t.Fatalf("GetRandom returned %d bytes", len(r.RandomBytes.Buffer))
				}
				c.Close()
			}
			if _, err := os.Stat(filepath.Join(inst.StateDir(), "tpm2-00.permall")); err != nil {
				t.Errorf("no TPM state in StateDir: %v", err)
			}
			inst.Stop()
			if !inst.Exited() {
				t.Fatal("swtpm still running after Stop")
			}
			inst.Stop() // idempotent
			if c, err := inst.Dial(); err == nil {
				c.Close()
				t.Fatal("Dial succeeded after Stop")
			}
		})
	}
}

// TestStartLongTempDir checks the fallback for sun_path's 107-byte limit.
func TestStartLongTempDir(t *testing.T) {
	base, err := os.MkdirTemp("", "swtpm-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	long := filepath.Join(base, strings.Repeat("d", 100))
	if err := os.MkdirAll(long, 0o700); err != nil {
		t.Fatal(err)
	}
	// t.TempDir (used by Start) now creates its directory under long.
	t.Setenv("TMPDIR", long)
	inst := swtpm.Start(t)
	sock := strings.TrimPrefix(inst.Path(), "unix:")
	if len(sock) > 107 || !strings.HasPrefix(sock, "/tmp/swtpm") {
		t.Fatalf("socket %q (%d bytes) does not use the short fallback", sock, len(sock))
	}
	if _, err := net.Dial("unix", sock); err != nil {
		t.Fatal(err)
	}
}

func testCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test TPM manufacturer CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          []byte{1, 2, 3, 4},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestWithEKCertificate(t *testing.T) {
	t.Parallel()
	ca, caKey := testCA(t)
	inst := swtpm.Start(t, swtpm.WithEKCertificate(ca, caKey))
	cert := inst.EKCertificate()
	if cert == nil {
		t.Fatal("no EK certificate")
	}
	if err := cert.CheckSignatureFrom(ca); err != nil {
		t.Fatal(err)
	}
	// Shaped like a manufacturer's EK certificate.
	if len(cert.Subject.Names) != 0 || cert.KeyUsage != x509.KeyUsageKeyEncipherment ||
		len(cert.UnknownExtKeyUsage) != 1 || !cert.UnknownExtKeyUsage[0].Equal(asn1.ObjectIdentifier{2, 23, 133, 8, 1}) {
		t.Errorf("subject %v, key usage %v, EKUs %v", cert.Subject, cert.KeyUsage, cert.UnknownExtKeyUsage)
	}
	if len(cert.UnhandledCriticalExtensions) != 1 || !cert.UnhandledCriticalExtensions[0].Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
		t.Errorf("want the critical directoryName-only SAN left unhandled by Go, got %v", cert.UnhandledCriticalExtensions)
	}

	c, err := inst.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The key is the TPM's EK from the default template, and NV holds the DER.
	ek, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.RSAEKTemplate),
	}.Execute(c)
	if err != nil {
		t.Fatal(err)
	}
	tpm2.FlushContext{FlushHandle: ek.ObjectHandle}.Execute(c)
	pub, _ := ek.OutPublic.Contents()
	parms, _ := pub.Parameters.RSADetail()
	n, _ := pub.Unique.RSA()
	rsaPub, err := tpm2.RSAPub(parms, n)
	if err != nil {
		t.Fatal(err)
	}
	if !rsaPub.Equal(cert.PublicKey) {
		t.Fatal("certificate is not for the TPM's EK")
	}
	rp, err := tpm2.NVReadPublic{NVIndex: swtpm.EKCertNVIndex}.Execute(c)
	if err != nil {
		t.Fatal(err)
	}
	var nv []byte
	for off := 0; off < len(cert.Raw); off += 512 {
		r, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: swtpm.EKCertNVIndex, Name: rp.NVName, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: swtpm.EKCertNVIndex, Name: rp.NVName},
			Size:       uint16(min(512, len(cert.Raw)-off)),
			Offset:     uint16(off),
		}.Execute(c)
		if err != nil {
			t.Fatal(err)
		}
		nv = append(nv, r.Data.Buffer...)
	}
	if !bytes.Equal(nv, cert.Raw) {
		t.Fatal("NV index does not hold the certificate")
	}

	// Writing again replaces the index.
	again, err := swtpm.WriteEKCertificate(c, ca, caKey)
	if err != nil {
		t.Fatalf("second WriteEKCertificate: %v", err)
	}
	if again.SerialNumber.Cmp(cert.SerialNumber) == 0 {
		t.Fatal("second certificate has the same serial")
	}
	if _, err := swtpm.WriteEKCertificate(c, nil, nil); err == nil {
		t.Fatal("WriteEKCertificate without CA succeeded")
	}
}
