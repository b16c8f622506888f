package credential

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/hsm"
	"github.com/edgeprov/edgeprov/hsm/keyfile"
)

// HSMKey signs SAS tokens with the device's symmetric key held in a PKCS#11
// token as a generic secret: the HMAC is computed inside the token, the key
// never enters this process.
type HSMKey struct{ key *hsm.HMACKey }

var _ SASSigner = (*HSMKey)(nil)

// Token implements SASSigner.
func (h *HSMKey) Token(resource string, expiry time.Time) (string, error) {
	return sas.BuildWithMAC(h.key.Sum, resource, expiry, sas.DeviceKeyName)
}

// LogValue names the key.
func (h *HSMKey) LogValue() slog.Value { return slog.StringValue("[pkcs11 key " + h.key.Label() + "]") }

// OpenHSMKey opens the token keyURI names and finds the secret key in it.
// Close the returned Closer when done.
func OpenHSMKey(ctx context.Context, keyURI string) (*HSMKey, io.Closer, error) {
	m, err := hsm.OpenURI(ctx, keyURI)
	if err != nil {
		return nil, nil, err
	}
	k, err := m.HMACKeyFromURI(ctx, m.URI())
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return &HSMKey{key: k}, m, nil
}

// ImportSymmetricKey moves the base64 device key in keyFile into the token
// keyURI names, as a generic secret labelled with the URI's object. The file
// is not changed; remove it once the import succeeded.
func ImportSymmetricKey(ctx context.Context, keyFile, keyURI string) error {
	k, err := readKey(keyFile)
	if err != nil {
		return err
	}
	defer clear(k)
	m, err := hsm.OpenURI(ctx, keyURI)
	if err != nil {
		return err
	}
	defer m.Close()
	label := m.URI().Object
	if label == "" {
		return fmt.Errorf("%s: the URI must name the key with ;object=<label>", keyURI)
	}
	_, err = m.ImportHMACKey(ctx, label, k)
	return err
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// OpenSigner returns the private key in keyFile (PEM) or the one keyURI names
// in a PKCS#11 token. Close the returned Closer when done with the key.
func OpenSigner(ctx context.Context, keyFile, keyURI string) (crypto.Signer, io.Closer, error) {
	if keyURI != "" {
		m, err := hsm.OpenURI(ctx, keyURI)
		if err != nil {
			return nil, nil, err
		}
		s, err := m.SignerFromURI(ctx, m.URI())
		if err != nil {
			m.Close()
			return nil, nil, err
		}
		return s, m, nil
	}
	s, err := keyfile.LoadKey(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read key: %w", err)
	}
	return s, nopCloser{}, nil
}

// Key kinds keygen creates.
const (
	KindECDSAP256 = "ecdsa-p256"
	KindRSA2048   = "rsa-2048"
)

// CreateSigner returns the key in keyFile or named by keyURI, creating it
// first (kind: KindECDSAP256 when empty) when it does not exist. created
// reports whether it did. A key file is written with mode 0600.
func CreateSigner(ctx context.Context, keyFile, keyURI, kind string) (s crypto.Signer, c io.Closer, created bool, err error) {
	if kind == "" {
		kind = KindECDSAP256
	}
	if keyURI != "" {
		k, err := hsm.ParseKeyKind(kind)
		if err != nil {
			return nil, nil, false, err
		}
		m, err := hsm.OpenURI(ctx, keyURI)
		if err != nil {
			return nil, nil, false, err
		}
		ref, err := m.URI().KeyRef()
		if err == nil && ref.Label == "" {
			err = fmt.Errorf("%s: the URI must name the key with ;object=<label>", keyURI)
		}
		if err != nil {
			m.Close()
			return nil, nil, false, err
		}
		if s, err := m.Signer(ctx, ref); err == nil {
			return s, m, false, nil
		}
		s, err := m.FindOrGenerate(ctx, k, ref.Label)
		if err != nil {
			m.Close()
			return nil, nil, false, err
		}
		return s, m, true, nil
	}
	if s, c, err := OpenSigner(ctx, keyFile, ""); err == nil {
		return s, c, false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, false, err
	}
	var key crypto.Signer
	switch kind {
	case KindECDSAP256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KindRSA2048:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, nil, false, fmt.Errorf("unknown key kind %q (ecdsa-p256 or rsa-2048)", kind)
	}
	if err != nil {
		return nil, nil, false, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(keyFile), 0o700); err != nil {
		return nil, nil, false, err
	}
	f, err := os.OpenFile(keyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, nil, false, fmt.Errorf("create key file: %w", err)
	}
	werr := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clear(der)
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(keyFile)
		return nil, nil, false, fmt.Errorf("write key file: %w", err)
	}
	return key, nopCloser{}, true, nil
}

// TLSCertificate pairs the certificate chain in certFile (the device's
// certificate first, then the intermediates to send) with its key, which
// must be the certificate's.
func TLSCertificate(certFile string, key crypto.Signer) (tls.Certificate, error) {
	certs, err := keyfile.LoadCerts(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	if !samePublic(certs[0].PublicKey, key.Public()) {
		return tls.Certificate{}, fmt.Errorf("%s: the first certificate is not for the configured key", certFile)
	}
	tc := tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc, nil
}

func samePublic(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// CSR makes a PKCS#10 request (DER) for key with subject CN=commonName, the
// form DPS's certificate issuance wants (CN = registration ID).
func CSR(key crypto.Signer, commonName string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: commonName}}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	return der, nil
}

// CheckIssuedChain checks a chain the service issued for key: the first
// certificate is for key and each certificate is signed by the next.
func CheckIssuedChain(chain []*x509.Certificate, key crypto.Signer) error {
	if len(chain) == 0 {
		return errors.New("the service issued no certificate")
	}
	if !samePublic(chain[0].PublicKey, key.Public()) {
		return errors.New("the issued certificate is not for this device's key")
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return fmt.Errorf("issued chain: certificate %d is not signed by certificate %d: %w", i, i+1, err)
		}
	}
	return nil
}
