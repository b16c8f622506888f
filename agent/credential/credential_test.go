package credential_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/agent/credential"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

func TestCreateSignerFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys", "op.key")
	k1, c, created, err := credential.CreateSigner(ctx, path, "", credential.KindRSA2048)
	if err != nil || !created {
		t.Fatalf("CreateSigner = %v, created %v", err, created)
	}
	c.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v, %v", fi.Mode(), err)
	}
	k2, _, created, err := credential.CreateSigner(ctx, path, "", "")
	if err != nil || created || !k2.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k1.Public()) {
		t.Fatalf("second CreateSigner did not load the key: %v, created %v", err, created)
	}
	if _, _, _, err := credential.CreateSigner(ctx, filepath.Join(t.TempDir(), "x.key"), "", "dsa"); err == nil {
		t.Fatal("CreateSigner accepted an unknown kind")
	}
}

func TestTLSCertificate(t *testing.T) {
	root := testpki.NewRoot(t, "root")
	inter := root.Intermediate(t, "inter")
	leaf := inter.Leaf(t, "dev-1")
	dir := t.TempDir()
	certFile, keyFile := leaf.WriteFiles(t, dir, "dev", leaf.ChainPEM())
	key, _, err := credential.OpenSigner(context.Background(), keyFile, "")
	if err != nil {
		t.Fatal(err)
	}
	tc, err := credential.TLSCertificate(certFile, key)
	if err != nil || len(tc.Certificate) != 2 || tc.Leaf.Subject.CommonName != "dev-1" {
		t.Fatalf("TLSCertificate = %d certificates, %v", len(tc.Certificate), err)
	}
	other := root.Leaf(t, "dev-2")
	otherFile, _ := other.WriteFiles(t, dir, "other", other.PEM())
	if _, err := credential.TLSCertificate(otherFile, key); err == nil || !strings.Contains(err.Error(), "not for the configured key") {
		t.Fatalf("TLSCertificate with another certificate = %v", err)
	}

	if err := credential.CheckIssuedChain([]*x509.Certificate{leaf.Cert, inter.Cert, root.Cert}, leaf.Key); err != nil {
		t.Fatal(err)
	}
	if err := credential.CheckIssuedChain([]*x509.Certificate{leaf.Cert, root.Cert}, leaf.Key); err == nil {
		t.Fatal("CheckIssuedChain accepted a chain with a gap")
	}
	if err := credential.CheckIssuedChain([]*x509.Certificate{leaf.Cert, inter.Cert}, other.Key); err == nil {
		t.Fatal("CheckIssuedChain accepted a certificate for another key")
	}
}

func b64std(k []byte) string { return base64.StdEncoding.EncodeToString(k) }
