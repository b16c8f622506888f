package keyfile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseKey(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(ec)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	block := func(typ string, der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	for _, tc := range []struct {
		name, data, err string
	}{
		{"pkcs8", block("PRIVATE KEY", pkcs8), ""},
		{"sec1", block("EC PRIVATE KEY", sec1), ""},
		{"pkcs1", block("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk)), ""},
		{"key after a certificate block", block("CERTIFICATE", []byte{1}) + block("PRIVATE KEY", pkcs8), ""},
		{"no key", block("CERTIFICATE", []byte{1}), "no PEM private key"},
		{"not PEM", "garbage", "no PEM private key"},
		{"corrupt key", block("PRIVATE KEY", []byte{0x30, 0x01}), "k.pem: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseKey("k.pem", []byte(tc.data))
			if tc.err == "" {
				if err != nil || s == nil {
					t.Fatalf("ParseKey = %v, %v", s, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("ParseKey error %v, want %q", err, tc.err)
			}
		})
	}
}

func TestLoadCerts(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var data []byte
	for i := range 2 {
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)),
			Subject: pkix.Name{CommonName: "c" + string(rune('0'+i))}, NotAfter: time.Now().Add(time.Hour)},
			&x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "ca"}}, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	path := filepath.Join(dir, "chain.pem")
	os.WriteFile(path, data, 0o600)
	certs, err := LoadCerts(path)
	if err != nil || len(certs) != 2 || certs[0].Subject.CommonName != "c0" || certs[1].Subject.CommonName != "c1" {
		t.Fatalf("LoadCerts = %v, %v; want c0, c1 in order", certs, err)
	}
	empty := filepath.Join(dir, "empty.pem")
	os.WriteFile(empty, []byte("nothing"), 0o600)
	if _, err := LoadCerts(empty); err == nil || !strings.Contains(err.Error(), "no certificate") {
		t.Fatalf("LoadCerts of a file without certificates: %v", err)
	}
}
