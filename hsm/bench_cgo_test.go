//go:build cgo

package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"testing"
)

// BenchmarkECDSAP256Sign compares an ECDSA P-256 signature by the token with
// one by crypto/ecdsa, in the same run.
func BenchmarkECDSAP256Sign(b *testing.B) {
	m := openToken(b, tokBench)
	hsmKey, err := m.FindOrGenerate(context.Background(), ECDSAP256, "bench-ecdsa")
	if err != nil {
		b.Fatal(err)
	}
	goKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("edgeprov benchmark"))
	for _, bc := range []struct {
		name string
		key  crypto.Signer
	}{{"hsm", hsmKey}, {"go", goKey}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := bc.key.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHMACSHA256 compares HMAC-SHA256 of a DPS SAS string-to-sign by the
// token with crypto/hmac, in the same run.
func BenchmarkHMACSHA256(b *testing.B) {
	m := openToken(b, tokBench)
	ctx := context.Background()
	key := make([]byte, 64)
	_, _ = rand.Read(key)
	hk, err := m.HMACKey(ctx, Label("bench-hmac"))
	if err != nil {
		// First run in this token dir: import the benchmark key.
		if hk, err = m.ImportHMACKey(ctx, "bench-hmac", key); err != nil {
			b.Fatal(err)
		}
	}
	msg := []byte("0ne00000A0A%2Fregistrations%2Fdevice-0001\n1767225600")
	b.Run("hsm", func(b *testing.B) {
		for b.Loop() {
			if _, err := hk.Sum(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go", func(b *testing.B) {
		for b.Loop() {
			h := hmac.New(sha256.New, key)
			h.Write(msg)
			_ = h.Sum(nil)
		}
	})
}
