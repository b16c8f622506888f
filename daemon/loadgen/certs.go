package loadgen

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// DeviceCerts issues n device certificates (ECDSA P-256, common name prefix +
// number, client authentication) signed by the group's CA, spread over the
// CPUs. They are made before a run starts, as a factory's devices leave the
// line with theirs.
func DeviceCerts(caCert *x509.Certificate, caKey crypto.Signer, prefix string, n int) ([]tls.Certificate, error) {
	certs := make([]tls.Certificate, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	now := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				if err == nil {
					tmpl := &x509.Certificate{
						SerialNumber: big.NewInt(int64(i) + 1),
						Subject:      pkix.Name{CommonName: prefix + strconv.Itoa(i)},
						NotBefore:    now.Add(-time.Hour),
						NotAfter:     now.Add(24 * time.Hour),
						KeyUsage:     x509.KeyUsageDigitalSignature,
						ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
					}
					var der []byte
					if der, err = x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey); err == nil {
						certs[i] = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
						continue
					}
				}
				select {
				case errs <- fmt.Errorf("device certificate %d: %w", i, err):
				default:
				}
				next.Store(int64(n)) // stop the others
				return
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
		return certs, nil
	}
}
