//go:build cgo

package credential_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/agent/credential"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/testenv/softhsm"
	"github.com/edgeprov/edgeprov/testenv/testpki"
)

var env *softhsm.Env

func TestMain(m *testing.M) {
	env = softhsm.Setup(m, "agent")
	defer env.Close()
	m.Run()
}

// TestHSMKeySignsSAS: a key imported into the token signs the same token as
// the key in memory.
func TestHSMKeySignsSAS(t *testing.T) {
	ctx := context.Background()
	key := []byte("agent symmetric key, 32 bytes..!")
	keyFile := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(keyFile, []byte(b64std(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	uri := env.KeyURI("agent", "sas-test")
	if err := credential.ImportSymmetricKey(ctx, keyFile, uri); err != nil {
		t.Fatal(err)
	}
	h, c, err := credential.OpenHSMKey(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exp := time.Unix(1767225600, 0)
	got, err := h.Token(sas.DeviceResource("0ne00000001", "dev-1"), exp)
	if err != nil {
		t.Fatal(err)
	}
	if want := sas.Build(key, sas.DeviceResource("0ne00000001", "dev-1"), exp, sas.DeviceKeyName); got != want {
		t.Fatalf("token %q, want %q", got, want)
	}
	if _, _, err := credential.OpenHSMKey(ctx, env.KeyURI("agent", "no-such-key")); err == nil {
		t.Fatal("OpenHSMKey found a key that does not exist")
	}
}

// BenchmarkSASToken is what the agent does per request with a symmetric key:
// one SAS token, HMAC-SHA256 in the token (PKCS#11) and in memory.
func BenchmarkSASToken(b *testing.B) {
	ctx := context.Background()
	key := make([]byte, 32)
	rand.Read(key)
	keyFile := filepath.Join(b.TempDir(), "k")
	os.WriteFile(keyFile, []byte(b64std(key)+"\n"), 0o600)
	uri := env.KeyURI("agent", "bench-sas")
	if _, _, err := credential.OpenHSMKey(ctx, uri); err != nil {
		if err := credential.ImportSymmetricKey(ctx, keyFile, uri); err != nil {
			b.Fatal(err)
		}
	}
	h, c, err := credential.OpenHSMKey(ctx, uri)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	mem, err := credential.FromKeyFile(keyFile)
	if err != nil {
		b.Fatal(err)
	}
	res := sas.DeviceResource("0ne00000001", "bench-device")
	exp := time.Now().Add(time.Hour)
	for _, bc := range []struct {
		name string
		s    credential.SASSigner
	}{{"pkcs11", h}, {"memory", mem}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := bc.s.Token(res, exp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSign is one ECDSA P-256 signature of the device key (what a TLS
// client-certificate handshake costs the device), in the token and in memory,
// and BenchmarkMTLSHandshake the whole handshake against a loopback server.
func BenchmarkSign(b *testing.B) {
	ctx := context.Background()
	hsmKey, c, _, err := credential.CreateSigner(ctx, "", env.KeyURI("agent", "bench-sign"), credential.KindECDSAP256)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	memKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("handshake transcript"))
	for _, bc := range []struct {
		name string
		k    crypto.Signer
	}{{"pkcs11", hsmKey}, {"memory", memKey}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := bc.k.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMTLSHandshake(b *testing.B) {
	ctx := context.Background()
	ca := testpki.NewRoot(b, "bench CA")
	server := ca.Leaf(b, "localhost", testpki.DNSNames("localhost"), testpki.ExtKeyUsage(x509.ExtKeyUsageServerAuth))
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{server.Cert.Raw}, PrivateKey: server.Key}},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: pool,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { conn.(*tls.Conn).Handshake(); conn.Close() }()
		}
	}()
	hsmKey, c, _, err := credential.CreateSigner(ctx, "", env.KeyURI("agent", "bench-mtls"), credential.KindECDSAP256)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	memKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, bc := range []struct {
		name string
		k    crypto.Signer
	}{{"pkcs11", hsmKey}, {"memory", memKey}} {
		b.Run(bc.name, func(b *testing.B) {
			leaf := ca.Leaf(b, "bench-device", testpki.Key(bc.k))
			cfg := &tls.Config{RootCAs: pool, ServerName: "localhost",
				Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: bc.k}}}
			for b.Loop() {
				conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				conn.Close()
			}
		})
	}
}
