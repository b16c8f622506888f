package tpm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/testenv/swtpm"
	"github.com/edgeprov/edgeprov/tpm"
	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		opts    []swtpm.Option
		keySize int
	}{
		{"ok/unix-socket/32-byte-key", nil, 32},
		{"ok/tcp/64-byte-key", []swtpm.Option{swtpm.WithTCP()}, 64},
		{"ok/unix-socket/16-byte-key", nil, 16},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inst := swtpm.Start(t, tc.opts...)
			d := openDevice(t, inst)
			ek, srk := deviceKeys(t, d)

			small := []byte("0ne00abcdef%2fregistrations%2fmy-device-01\n1795646830")
			large := bytes.Repeat([]byte("0123456789abcdef"), 300) // 4800 bytes: HMAC sequence
			var prevKey []byte
			// Twice on one TPM: the second import replaces the persisted key.
			for round := 1; round <= 2; round++ {
				key, blob := newBlob(t, ek, srk, tc.keySize)
				if err := d.ImportAuthenticationKey(blob, tpm.AuthKeyHandle); err != nil {
					t.Fatalf("round %d: ImportAuthenticationKey: %v", round, err)
				}
				for _, data := range [][]byte{small, large, nil} {
					got, err := d.HMAC(tpm.AuthKeyHandle, data)
					if err != nil {
						t.Fatalf("round %d: HMAC(%d bytes): %v", round, len(data), err)
					}
					if want := softHMAC(key, data); !bytes.Equal(got, want) {
						t.Fatalf("round %d: TPM HMAC over %d bytes = %x, want %x", round, len(data), got, want)
					}
					if prevKey != nil && bytes.Equal(got, softHMAC(prevKey, data)) {
						t.Fatalf("round %d: TPM still signs with the previous key", round)
					}
				}
				prevKey = key
			}

			// The key survives reconnecting (it is persisted), and nothing
			// transient was left behind.
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			assertNoLeaks(t, inst)
			d2 := openDevice(t, inst)
			got, err := d2.HMAC(tpm.AuthKeyHandle, small)
			if err != nil {
				t.Fatalf("HMAC after reopening: %v", err)
			}
			if want := softHMAC(prevKey, small); !bytes.Equal(got, want) {
				t.Fatalf("HMAC after reopening = %x, want %x", got, want)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	inst := swtpm.Start(t)
	var logBuf syncBuffer
	d, err := tpm.Open(inst.Path(), tpm.WithLogger(slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })

	ek1, err := d.EndorsementKey()
	if err != nil {
		t.Fatal(err)
	}
	srk1, err := d.StorageRootKey()
	if err != nil {
		t.Fatal(err)
	}
	// Second calls read the persisted keys back.
	ek2, err := d.EndorsementKey()
	if err != nil {
		t.Fatal(err)
	}
	srk2, err := d.StorageRootKey()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ek1, ek2) || !bytes.Equal(srk1, srk2) {
		t.Fatal("EK/SRK changed between calls")
	}
	if got := strings.Count(logBuf.String(), "creating and persisting primary key"); got != 2 {
		t.Errorf("logged %d key creations, want 2 (EK and SRK, once each):\n%s", got, logBuf.String())
	}
	if bytes.Equal(ek1, srk1) {
		t.Fatal("EK and SRK are the same key")
	}
	// RSA-2048: the SRK is the EK's layout minus the 32-byte authPolicy.
	if len(ek1) != 2+0x013a || len(srk1) != 2+0x011a {
		t.Errorf("EK is %d bytes, SRK %d; want 316 and 284", len(ek1), len(srk1))
	}
	id, err := d.RegistrationID()
	if err != nil {
		t.Fatal(err)
	}
	if want := dpsauth.RegistrationID(ek1); id != want || len(id) != 52 {
		t.Errorf("RegistrationID = %q, want %q (52 chars)", id, want)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	assertNoLeaks(t, inst)

	if os.Getenv("EDGEPROV_WRITE_TESTDATA") != "" {
		// Refresh the real swtpm keys used by dpsauth's tests and fuzz corpus.
		dir := filepath.Join("dpsauth", "testdata")
		for name, b := range map[string][]byte{"swtpm-ek.bin": ek1, "swtpm-srk.bin": srk1} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestConcurrentUse shares one Device (over a caller-owned transport) among
// goroutines; its methods must serialize so swtpm's slots never overflow.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	inst := swtpm.Start(t)
	conn, err := inst.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	d := tpm.New(conn)
	ek, srk := deviceKeys(t, d)
	key, blob := newBlob(t, ek, srk, 32)
	if err := d.ImportAuthenticationKey(blob, tpm.AuthKeyHandle); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 4 {
		wg.Go(func() {
			for i := range 8 {
				data := bytes.Repeat([]byte{byte(g), byte(i)}, 300*i) // up to 4200 bytes: sequences too
				mac, err := d.HMAC(tpm.AuthKeyHandle, data)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(mac, softHMAC(key, data)) {
					errs <- errors.New("wrong HMAC")
					return
				}
			}
		})
	}
	wg.Go(func() {
		// Re-importing the same blob (same key) while others sign.
		for range 3 {
			if err := d.ImportAuthenticationKey(blob, tpm.AuthKeyHandle); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := d.Close(); err != nil { // does not close conn
		t.Fatal(err)
	}
	if n := loadedHandles(t, conn); n != 0 {
		t.Errorf("%d transient objects or sessions left loaded", n)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and the test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestEKCertificate(t *testing.T) {
	t.Parallel()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "edgeprov test TPM manufacturer CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("ok/provisioned", func(t *testing.T) {
		t.Parallel()
		inst := swtpm.Start(t, swtpm.WithEKCertificate(ca, caKey))
		d := openDevice(t, inst)
		der, err := d.EKCertificate()
		if err != nil {
			t.Fatalf("EKCertificate: %v", err)
		}
		if !bytes.Equal(der, inst.EKCertificate().Raw) {
			t.Fatal("EKCertificate differs from what was provisioned")
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := cert.CheckSignatureFrom(ca); err != nil {
			t.Fatalf("certificate not signed by the test CA: %v", err)
		}
		ekBytes, err := d.EndorsementKey()
		if err != nil {
			t.Fatal(err)
		}
		ek, err := dpsauth.ParseEK(ekBytes)
		if err != nil {
			t.Fatal(err)
		}
		if !ek.PublicKey().Equal(cert.PublicKey) {
			t.Fatal("certificate key is not the device's EK")
		}
	})
	t.Run("fail/absent", func(t *testing.T) {
		t.Parallel()
		d := openDevice(t, swtpm.Start(t))
		_, err := d.EKCertificate()
		if !errors.Is(err, tpm.ErrNoEKCertificate) {
			t.Fatalf("EKCertificate error = %v, want ErrNoEKCertificate", err)
		}
	})
}

func TestOpen(t *testing.T) {
	t.Parallel()
	regular := filepath.Join(t.TempDir(), "not-a-device")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, wantErr string
	}{
		{"fail/missing-socket", "unix:" + filepath.Join(t.TempDir(), "nope.sock"), "no such file"},
		{"fail/empty-unix-path", "unix:", "empty address"},
		{"fail/tcp-without-port", "tcp:127.0.0.1", "want tcp:host:port"},
		{"fail/regular-file", regular, "not a device"},
		{"fail/missing-device", "/dev/edgeprov-no-such-tpm", "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := tpm.Open(tc.path)
			if err == nil {
				d.Close()
				t.Fatalf("Open(%q) succeeded", tc.path)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Open(%q) = %v, want it to mention %q", tc.path, err, tc.wantErr)
			}
		})
	}
}
