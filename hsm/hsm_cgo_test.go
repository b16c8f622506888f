//go:build cgo

package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/edgeprov/edgeprov/testenv/softhsm"
)

// Tokens, one per concern so parallel tests do not share labels.
const (
	tokKeys   = "edgeprov-keys"
	tokReopen = "edgeprov-reopen"
	tokHMAC   = "edgeprov-hmac"
	tokPIN    = "edgeprov-pin"
	tokTLS    = "edgeprov-tls"
	tokBench  = "edgeprov-bench"
)

var env *softhsm.Env

func TestMain(m *testing.M) {
	env = softhsm.Setup(m, tokKeys, tokReopen, tokHMAC, tokPIN, tokTLS, tokBench)
	defer env.Close()
	m.Run()
}

// openToken opens a token of the test environment and closes it with the test.
func openToken(t testing.TB, label string, opts ...Option) *Module {
	t.Helper()
	m, err := OpenURI(context.Background(), env.Token(label).URI, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return m
}

// uniqueLabel makes key labels unique across test runs with -count.
func uniqueLabel(t testing.TB, base string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%x", base, b)
}

var kinds = []struct {
	name string
	kind KeyKind
}{
	{"ok/ecdsa-p256", ECDSAP256},
	{"ok/rsa-2048", RSA2048},
}

// verify checks sig over digest with pub using crypto/ecdsa or crypto/rsa.
func verify(t *testing.T, pub crypto.PublicKey, digest, sig []byte, opts crypto.SignerOpts) {
	t.Helper()
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, digest, sig) {
			t.Fatal("ecdsa.VerifyASN1 failed")
		}
	case *rsa.PublicKey:
		var err error
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			err = rsa.VerifyPSS(pub, opts.HashFunc(), digest, sig, pss)
		} else {
			err = rsa.VerifyPKCS1v15(pub, opts.HashFunc(), digest, sig)
		}
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("unexpected public key %T", pub)
	}
}

func TestGenerateSignVerify(t *testing.T) {
	m := openToken(t, tokKeys)
	ctx := context.Background()
	for _, tc := range kinds {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			label := uniqueLabel(t, "sign")
			s, err := m.GenerateKey(ctx, tc.kind, label)
			if err != nil {
				t.Fatal(err)
			}
			if !isKind(s.Public(), tc.kind) {
				t.Fatalf("public key %T is not %s", s.Public(), tc.kind)
			}
			digest := sha256.Sum256([]byte("edgeprov"))
			opts := []crypto.SignerOpts{crypto.SHA256}
			if tc.kind == RSA2048 {
				opts = append(opts, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
			}
			for _, o := range opts {
				sig, err := s.Sign(rand.Reader, digest[:], o)
				if err != nil {
					t.Fatal(err)
				}
				verify(t, s.Public(), digest[:], sig, o)
			}

			// The same key is found by label and by id (from a URI).
			found, err := m.Signer(ctx, Label(label))
			if err != nil {
				t.Fatal(err)
			}
			if !publicEqual(found.Public(), s.Public()) {
				t.Fatal("Signer(label) found another key")
			}
			u := m.URI()
			u.Object = label
			found, err = m.SignerFromURI(ctx, u)
			if err != nil || !publicEqual(found.Public(), s.Public()) {
				t.Fatalf("SignerFromURI: %v", err)
			}

			// A second key with the label is refused.
			if _, err := m.GenerateKey(ctx, tc.kind, label); !errors.Is(err, ErrKeyExists) {
				t.Fatalf("second GenerateKey error = %v, want ErrKeyExists", err)
			}
		})
	}
}

func publicEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// TestReopen runs alone (not parallel), so Close really finalises the module
// and the keys are found again after a fresh C_Initialize.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	pubs := map[KeyKind]crypto.PublicKey{}
	labels := map[KeyKind]string{}
	m, err := OpenURI(ctx, env.Token(tokReopen).URI)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range kinds {
		labels[tc.kind] = uniqueLabel(t, "reopen")
		s, err := m.GenerateKey(ctx, tc.kind, labels[tc.kind])
		if err != nil {
			t.Fatal(err)
		}
		pubs[tc.kind] = s.Public()
	}
	hk, err := m.GenerateHMACKey(ctx, uniqueLabel(t, "reopen-hmac"), 256)
	if err != nil {
		t.Fatal(err)
	}
	macBefore, err := hk.Sum([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	loadMu.Lock()
	n := len(logins)
	loadMu.Unlock()
	if n != 0 {
		t.Fatalf("%d logins left after Close", n)
	}
	if _, err := m.Signer(ctx, Label(labels[ECDSAP256])); !errors.Is(err, ErrClosed) {
		t.Fatalf("Signer after Close: %v, want ErrClosed", err)
	}
	if _, err := hk.Sum([]byte("x")); err == nil {
		t.Fatal("HMAC with a key of a closed module succeeded")
	}

	m = openToken(t, tokReopen)
	for _, tc := range kinds {
		t.Run(tc.name, func(t *testing.T) {
			s, err := m.Signer(ctx, Label(labels[tc.kind]))
			if err != nil {
				t.Fatal(err)
			}
			if !publicEqual(s.Public(), pubs[tc.kind]) {
				t.Fatal("found another key after reopen")
			}
			digest := sha256.Sum256([]byte("after reopen"))
			sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			verify(t, pubs[tc.kind], digest[:], sig, crypto.SHA256)
		})
	}
	hk2, err := m.HMACKey(ctx, Label(hk.Label()))
	if err != nil {
		t.Fatal(err)
	}
	if mac, err := hk2.Sum([]byte("x")); err != nil || !bytes.Equal(mac, macBefore) {
		t.Fatalf("HMAC after reopen = %x, %v; want %x", mac, err, macBefore)
	}
}

func TestFindOrGenerate(t *testing.T) {
	t.Parallel()
	m := openToken(t, tokKeys)
	ctx := context.Background()
	label := uniqueLabel(t, "fog")
	first, err := m.FindOrGenerate(ctx, ECDSAP256, label)
	if err != nil {
		t.Fatal(err)
	}
	// Concurrent callers all get the one key.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := m.FindOrGenerate(ctx, ECDSAP256, label)
			if err == nil && !publicEqual(s.Public(), first.Public()) {
				err = errors.New("FindOrGenerate returned another key")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.FindOrGenerate(ctx, RSA2048, label); !errors.Is(err, ErrKeyKind) {
		t.Fatalf("FindOrGenerate with another kind: %v, want ErrKeyKind", err)
	}

	// Concurrent first use creates exactly one key.
	label2 := uniqueLabel(t, "fog-race")
	var wg2 sync.WaitGroup
	for range 4 {
		wg2.Add(1)
		go func() {
			defer wg2.Done()
			if _, err := m.FindOrGenerate(ctx, ECDSAP256, label2); err != nil {
				t.Error(err)
			}
		}()
	}
	wg2.Wait()
	if _, err := m.Signer(ctx, Label(label2)); err != nil {
		t.Fatalf("after concurrent FindOrGenerate: %v (want exactly one key)", err)
	}
}

func TestCSR(t *testing.T) {
	t.Parallel()
	m := openToken(t, tokKeys)
	for _, tc := range kinds {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := m.GenerateKey(context.Background(), tc.kind, uniqueLabel(t, "csr"))
			if err != nil {
				t.Fatal(err)
			}
			der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
				Subject:  pkix.Name{CommonName: "device-0001"},
				DNSNames: []string{"device-0001"},
			}, s)
			if err != nil {
				t.Fatal(err)
			}
			csr, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Fatal(err)
			}
			if !publicEqual(csr.PublicKey, s.Public()) || csr.Subject.CommonName != "device-0001" {
				t.Fatalf("CSR carries %T %v", csr.PublicKey, csr.Subject)
			}
		})
	}
}

// newCA makes a self-signed CA certificate for an HSM-held key.
func newCA(t *testing.T, key crypto.Signer, cn string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// issue signs a leaf certificate for pub with the CA.
func issue(t *testing.T, ca *x509.Certificate, caKey crypto.Signer, pub crypto.PublicKey, cn string, eku x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{eku},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestHSMCertificateAuthority(t *testing.T) {
	t.Parallel()
	m := openToken(t, tokKeys)
	for _, tc := range kinds {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			caKey, err := m.GenerateKey(context.Background(), tc.kind, uniqueLabel(t, "ca"))
			if err != nil {
				t.Fatal(err)
			}
			ca := newCA(t, caKey, "edgeprov test CA")
			if err := ca.CheckSignatureFrom(ca); err != nil {
				t.Fatal(err)
			}
			leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			leaf := issue(t, ca, caKey, leafKey.Public(), "device-0002", x509.ExtKeyUsageClientAuth)
			roots := x509.NewCertPool()
			roots.AddCert(ca)
			chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			if err != nil {
				t.Fatal(err)
			}
			if len(chains) != 1 || len(chains[0]) != 2 {
				t.Fatalf("chains = %v", chains)
			}
		})
	}
}

func TestConcurrentSign(t *testing.T) {
	t.Parallel()
	m := openToken(t, tokKeys)
	s, err := m.GenerateKey(context.Background(), ECDSAP256, uniqueLabel(t, "concurrent"))
	if err != nil {
		t.Fatal(err)
	}
	pub := s.Public().(*ecdsa.PublicKey)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				d := sha256.Sum256(fmt.Appendf(nil, "%d/%d", g, i))
				sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
				if err != nil {
					t.Error(err)
					return
				}
				if !ecdsa.VerifyASN1(pub, d[:], sig) {
					t.Error("bad signature")
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestHMAC(t *testing.T) {
	t.Parallel()
	m := openToken(t, tokHMAC)
	ctx := context.Background()
	msg := []byte("0ne00000A0A/registrations/device-0001\n1767225600")

	t.Run("ok/imported-equals-crypto-hmac", func(t *testing.T) {
		t.Parallel()
		key := make([]byte, 64) // a DPS symmetric key is 64 bytes
		_, _ = rand.Read(key)
		keyCopy := bytes.Clone(key)
		label := uniqueLabel(t, "dps-symkey")
		k, err := m.ImportHMACKey(ctx, label, key)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(key, keyCopy) {
			t.Fatal("ImportHMACKey modified the caller's key")
		}
		for _, data := range [][]byte{msg, nil, bytes.Repeat([]byte{7}, 10000)} {
			got, err := k.Sum(data)
			if err != nil {
				t.Fatal(err)
			}
			h := hmac.New(sha256.New, key)
			h.Write(data)
			if want := h.Sum(nil); !hmac.Equal(got, want) {
				t.Fatalf("HSM HMAC %x != crypto/hmac %x", got, want)
			}
		}
		// Found again by label, by URI, and refused a second time.
		again, err := m.HMACKey(ctx, Label(label))
		if err != nil {
			t.Fatal(err)
		}
		u := m.URI()
		u.Object, u.Type = label, TypeSecretKey
		viaURI, err := m.HMACKeyFromURI(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := again.Sum(msg)
		b, _ := viaURI.Sum(msg)
		c, _ := k.Sum(msg)
		if !bytes.Equal(a, c) || !bytes.Equal(b, c) {
			t.Fatal("the key found again computes another HMAC")
		}
		if _, err := m.ImportHMACKey(ctx, label, key); !errors.Is(err, ErrKeyExists) {
			t.Fatalf("second import: %v, want ErrKeyExists", err)
		}
		assertNotExtractable(t, m, label, pkcs11.CKO_SECRET_KEY)
	})

	t.Run("ok/generated", func(t *testing.T) {
		t.Parallel()
		label := uniqueLabel(t, "generated")
		k, err := m.GenerateHMACKey(ctx, label, 256)
		if err != nil {
			t.Fatal(err)
		}
		mac1, err := k.Sum(msg)
		if err != nil {
			t.Fatal(err)
		}
		mac2, err := k.Sum(msg)
		if err != nil || len(mac1) != sha256.Size || !bytes.Equal(mac1, mac2) {
			t.Fatalf("HMAC = %x then %x (%v)", mac1, mac2, err)
		}
		other, _ := k.Sum([]byte("other"))
		if bytes.Equal(other, mac1) {
			t.Fatal("different messages, same HMAC")
		}
		if _, err := m.GenerateHMACKey(ctx, label, 256); !errors.Is(err, ErrKeyExists) {
			t.Fatalf("second generate: %v, want ErrKeyExists", err)
		}
		assertNotExtractable(t, m, label, pkcs11.CKO_SECRET_KEY)
	})

	t.Run("ok/private-key-not-extractable", func(t *testing.T) {
		t.Parallel()
		label := uniqueLabel(t, "ec")
		if _, err := m.GenerateKey(ctx, ECDSAP256, label); err != nil {
			t.Fatal(err)
		}
		assertNotExtractable(t, m, label, pkcs11.CKO_PRIVATE_KEY)
	})

	t.Run("ok/concurrent", func(t *testing.T) {
		t.Parallel()
		key := bytes.Repeat([]byte{0x42}, 32)
		k, err := m.ImportHMACKey(ctx, uniqueLabel(t, "concurrent"), key)
		if err != nil {
			t.Fatal(err)
		}
		h := hmac.New(sha256.New, key)
		h.Write(msg)
		want := h.Sum(nil)
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 50 {
					if got, err := k.Sum(msg); err != nil || !bytes.Equal(got, want) {
						t.Errorf("Sum = %x, %v", got, err)
						return
					}
				}
			}()
		}
		wg.Wait()
	})

	fails := []struct {
		name string
		do   func() error
		want error
	}{
		{"fail/unknown-label", func() error { _, err := m.HMACKey(ctx, Label("no-such-key")); return err }, ErrKeyNotFound},
		{"fail/unknown-id", func() error { _, err := m.HMACKey(ctx, ID([]byte{9, 9, 9})); return err }, ErrKeyNotFound},
		{"fail/import-short-key", func() error { _, err := m.ImportHMACKey(ctx, "short", make([]byte, 8)); return err }, nil},
		{"fail/generate-odd-bits", func() error { _, err := m.GenerateHMACKey(ctx, "odd", 257); return err }, nil},
		{"fail/empty-label", func() error { _, err := m.ImportHMACKey(ctx, "", make([]byte, 32)); return err }, nil},
		{"fail/uri-wrong-type", func() error {
			u := m.URI()
			u.Object, u.Type = "x", TypePrivate
			_, err := m.HMACKeyFromURI(ctx, u)
			return err
		}, ErrInvalidURI},
	}
	for _, tc := range fails {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("error = %v, want %v", err, tc.want)
			}
		})
	}
}

// assertNotExtractable reads the key's attributes through a raw PKCS#11
// session: the value must be refused, the flags must say so.
func assertNotExtractable(t *testing.T, m *Module, label string, class uint) {
	t.Helper()
	sh, err := m.raw.OpenSession(m.slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer m.raw.CloseSession(sh)
	if err := m.raw.FindObjectsInit(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}); err != nil {
		t.Fatal(err)
	}
	objs, _, err := m.raw.FindObjects(sh, 2)
	_ = m.raw.FindObjectsFinal(sh)
	if err != nil || len(objs) != 1 {
		t.Fatalf("found %d objects labelled %q: %v", len(objs), label, err)
	}
	_, err = m.raw.GetAttributeValue(sh, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
	if !errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE)) {
		t.Fatalf("reading CKA_VALUE: %v, want CKR_ATTRIBUTE_SENSITIVE", err)
	}
	attrs, err := m.raw.GetAttributeValue(sh, objs[0], []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{1, 0, 1}
	for i, a := range attrs {
		if len(a.Value) != 1 || a.Value[0] != want[i] {
			t.Errorf("attribute %#x = %v, want %d", a.Type, a.Value, want[i])
		}
	}
}

func TestOpenFailures(t *testing.T) {
	dir := t.TempDir()
	wrongPIN := filepath.Join(dir, "wrong.pin")
	if err := os.WriteFile(wrongPIN, []byte("not-the-pin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mod := "module-path=" + env.ModulePath
	good := "pin-source=file:" + env.PINFile
	tests := []struct {
		name string
		uri  string
		want error
		msg  string
	}{
		{"fail/wrong-pin", "pkcs11:token=" + tokPIN + "?" + mod + "&pin-source=file:" + wrongPIN, ErrPINIncorrect, "refused the PIN"},
		{"fail/unknown-token", "pkcs11:token=no-such-token?" + mod + "&" + good, ErrTokenNotFound, tokKeys},
		{"fail/unknown-serial", "pkcs11:serial=0000?" + mod + "&" + good, ErrTokenNotFound, ""},
		{"fail/token-and-wrong-serial", "pkcs11:token=" + tokPIN + ";serial=0000?" + mod + "&" + good, ErrTokenNotFound, ""},
		{"fail/library-mismatch", "pkcs11:token=" + tokPIN + ";library-manufacturer=Thales?" + mod + "&" + good, ErrTokenNotFound, "library attributes"},
		{"fail/ambiguous", "pkcs11:?" + mod + "&" + good, ErrAmbiguous, "tokens match"},
		{"fail/missing-pin-file", "pkcs11:token=" + tokPIN + "?" + mod + "&pin-source=file:" + filepath.Join(dir, "missing"), ErrPIN, "no such file"},
		{"fail/no-pin-source", "pkcs11:token=" + tokPIN + "?" + mod, ErrPIN, "no pin-source"},
		{"fail/unset-pin-env", "pkcs11:token=" + tokPIN + "?" + mod + "&pin-source=env:EDGEPROV_TEST_UNSET", ErrPIN, "not set"},
		{"fail/pin-value", "pkcs11:token=" + tokPIN + "?" + mod + "&pin-value=1234", ErrInvalidURI, "pin-source"},
		{"fail/missing-module", "pkcs11:token=" + tokPIN + "?module-path=/nonexistent/lib.so&" + good, ErrModuleNotFound, ""},
		{"fail/not-a-module", "pkcs11:token=" + tokPIN + "?module-path=" + env.PINFile + "&" + good, ErrModuleNotFound, "cannot load"},
		{"fail/no-module", "pkcs11:token=" + tokPIN + "?" + good, ErrModuleNotFound, "module-path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := OpenURI(context.Background(), tc.uri)
			if err == nil {
				m.Close()
				t.Fatal("OpenURI succeeded")
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error = %v, want %v containing %q", err, tc.want, tc.msg)
			}
			if strings.Contains(err.Error(), env.PIN) {
				t.Fatalf("error %v contains the PIN", err)
			}
		})
	}

	// PKCS#11 login state is per process: with the token already logged in,
	// the token itself would accept any PIN. Open must still refuse it.
	t.Run("fail/wrong-pin-while-open", func(t *testing.T) {
		openToken(t, tokPIN)
		u := "pkcs11:token=" + tokPIN + "?" + mod + "&pin-source=file:" + wrongPIN
		if m, err := OpenURI(context.Background(), u); !errors.Is(err, ErrPINIncorrect) {
			if m != nil {
				m.Close()
			}
			t.Fatalf("second Open with a wrong PIN: %v, want ErrPINIncorrect", err)
		}
		m2 := openToken(t, tokPIN) // the right PIN still works alongside
		if _, err := m2.GenerateHMACKey(context.Background(), uniqueLabel(t, "k"), 256); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("fail/canceled-context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := OpenURI(ctx, env.Token(tokPIN).URI); !errors.Is(err, context.Canceled) {
			t.Fatalf("error = %v, want context.Canceled", err)
		}
		m := openToken(t, tokPIN)
		if _, err := m.Signer(ctx, Label("x")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Signer error = %v, want context.Canceled", err)
		}
	})
}

func TestOpenSelection(t *testing.T) {
	ctx := context.Background()
	tok := env.Token(tokPIN)
	base := "?module-path=" + env.ModulePath + "&pin-source=file:" + env.PINFile
	link := filepath.Join(t.TempDir(), "softhsm-link.so")
	if err := os.Symlink(env.ModulePath, link); err != nil {
		t.Fatal(err)
	}
	t.Setenv("EDGEPROV_TEST_PIN", env.PIN)
	tests := []struct {
		name string
		uri  string
	}{
		{"ok/label", tok.URI},
		{"ok/serial", "pkcs11:serial=" + tok.Serial + base},
		{"ok/label-and-serial", "pkcs11:token=" + tokPIN + ";serial=" + tok.Serial + base},
		{"ok/token-and-library-attributes", "pkcs11:token=" + tokPIN + ";manufacturer=SoftHSM%20project;model=SoftHSM%20v2;library-manufacturer=SoftHSM" + base},
		{"ok/module-name", "pkcs11:token=" + tokPIN + "?module-name=softhsm2&pin-source=file:" + env.PINFile},
		{"ok/pin-from-env", "pkcs11:token=" + tokPIN + "?module-path=" + env.ModulePath + "&pin-source=env:EDGEPROV_TEST_PIN"},
		{"ok/symlinked-module-path", "pkcs11:token=" + tokPIN + "?module-path=" + link + "&pin-source=file:" + env.PINFile},
	}
	var mods []*Module
	defer func() {
		for _, m := range mods {
			m.Close()
		}
	}()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Keep each open: several Modules on one token and two spellings
			// of one module path must coexist.
			m, err := OpenURI(ctx, tc.uri)
			if err != nil {
				t.Fatal(err)
			}
			mods = append(mods, m)
			if m.token.serial != tok.Serial {
				t.Fatalf("opened %s, want serial %s", m.token, tok.Serial)
			}
		})
	}
	// The slot ID from one Module selects the token in a URI too.
	if len(mods) > 0 {
		u := &URI{SlotID: &mods[0].token.slotID, ModulePath: env.ModulePath, PINSource: "file:" + env.PINFile}
		m, err := Open(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		mods = append(mods, m)
	}
}

func TestKeyFailures(t *testing.T) {
	t.Parallel()
	m := openToken(t, tokKeys)
	other := openToken(t, tokHMAC)
	ctx := context.Background()
	dup := uniqueLabel(t, "dup")
	for range 2 {
		// Two key pairs with one label, made behind GenerateKey's back.
		id, _ := newID()
		pub, err := crypto11.NewAttributeSetWithIDAndLabel(id, []byte(dup))
		if err != nil {
			t.Fatal(err)
		}
		priv := pub.Copy()
		if _, err := m.p11.GenerateECDSAKeyPairWithAttributes(pub, priv, elliptic.P256()); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		do   func() error
		want error
	}{
		{"fail/unknown-label", func() error { _, err := m.Signer(ctx, Label("no-such-key")); return err }, ErrKeyNotFound},
		{"fail/unknown-id", func() error { _, err := m.Signer(ctx, ID([]byte{1, 2, 3})); return err }, ErrKeyNotFound},
		{"fail/no-label-no-id", func() error { _, err := m.Signer(ctx, KeyRef{}); return err }, nil},
		{"fail/ambiguous-label", func() error { _, err := m.Signer(ctx, Label(dup)); return err }, ErrAmbiguous},
		{"fail/generate-unknown-kind", func() error { _, err := m.GenerateKey(ctx, KeyKind(99), "x"); return err }, nil},
		{"fail/generate-empty-label", func() error { _, err := m.GenerateKey(ctx, ECDSAP256, ""); return err }, nil},
		{"fail/uri-without-object", func() error { _, err := m.SignerFromURI(ctx, m.URI()); return err }, ErrInvalidURI},
		{"fail/uri-wrong-type", func() error {
			u := m.URI()
			u.Object, u.Type = "x", TypeCert
			_, err := m.SignerFromURI(ctx, u)
			return err
		}, ErrInvalidURI},
		{"fail/uri-other-token", func() error {
			u := other.URI()
			u.Object = "x"
			_, err := m.SignerFromURI(ctx, u)
			return err
		}, ErrTokenNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("error = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestLogValue(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := openToken(t, tokKeys, WithLogger(log))
	if _, err := m.GenerateKey(context.Background(), ECDSAP256, uniqueLabel(t, "log")); err != nil {
		t.Fatal(err)
	}
	log.Info("module", "hsm", m)
	out := logs.String()
	for _, want := range []string{`"token":"` + tokKeys + `"`, `"serial":"` + env.Token(tokKeys).Serial + `"`, "generated key pair"} {
		if !strings.Contains(out, want) {
			t.Errorf("log does not contain %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, env.PIN) {
		t.Errorf("log contains the PIN:\n%s", out)
	}
	if s := fmt.Sprintf("%+v %#v", m, m); strings.Contains(s, env.PIN) {
		t.Errorf("fmt of Module contains the PIN: %s", s)
	}
}
