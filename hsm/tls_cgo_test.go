//go:build cgo

package hsm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestMTLS authenticates a TLS client with an HSM-held key over a real
// loopback listener. The CA key is in the HSM too: it issues both the server
// and the client certificate.
func TestMTLS(t *testing.T) {
	t.Parallel()
	m := openToken(t, tokTLS)
	ctx := context.Background()
	caKey, err := m.GenerateKey(ctx, ECDSAP256, uniqueLabel(t, "tls-ca"))
	if err != nil {
		t.Fatal(err)
	}
	ca := newCA(t, caKey, "edgeprov TLS test CA")
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	serverKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serverCert := issue(t, ca, caKey, serverKey.Public(), "localhost", x509.ExtKeyUsageServerAuth)

	clientKeys := map[KeyKind]tls.Certificate{}
	for _, tc := range kinds {
		key, err := m.GenerateKey(ctx, tc.kind, uniqueLabel(t, "tls-client"))
		if err != nil {
			t.Fatal(err)
		}
		cert := issue(t, ca, caKey, key.Public(), "device-"+tc.kind.String(), x509.ExtKeyUsageClientAuth)
		clientKeys[tc.kind] = tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	}

	tests := []struct {
		name    string
		kind    KeyKind
		version uint16
	}{
		{"ok/tls13-ecdsa-p256", ECDSAP256, tls.VersionTLS13},
		{"ok/tls12-ecdsa-p256", ECDSAP256, tls.VersionTLS12},
		{"ok/tls13-rsa-2048", RSA2048, tls.VersionTLS13}, // RSA-PSS
		{"ok/tls12-rsa-2048", RSA2048, tls.VersionTLS12},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
				Certificates: []tls.Certificate{{Certificate: [][]byte{serverCert.Raw}, PrivateKey: serverKey}},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    pool,
				MinVersion:   tc.version,
				MaxVersion:   tc.version,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			type result struct {
				cn  string
				err error
			}
			done := make(chan result, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					done <- result{err: err}
					return
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					done <- result{err: err}
					return
				}
				peers := tc.ConnectionState().PeerCertificates
				if len(peers) == 0 {
					done <- result{err: errors.New("no client certificate")}
					return
				}
				_, err = io.WriteString(c, "hello "+peers[0].Subject.CommonName)
				done <- result{cn: peers[0].Subject.CommonName, err: err}
			}()

			dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: &tls.Config{
				Certificates: []tls.Certificate{clientKeys[tc.kind]},
				RootCAs:      pool,
				ServerName:   "localhost",
				MinVersion:   tc.version,
				MaxVersion:   tc.version,
			}}
			conn, err := dialer.DialContext(ctx, "tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			msg, err := io.ReadAll(conn)
			if err != nil {
				t.Fatal(err)
			}
			res := <-done
			if res.err != nil {
				t.Fatal(res.err)
			}
			want := "device-" + tc.kind.String()
			if res.cn != want || string(msg) != "hello "+want {
				t.Fatalf("server saw %q, client read %q", res.cn, msg)
			}
			if v := conn.(*tls.Conn).ConnectionState().Version; v != tc.version {
				t.Fatalf("negotiated %x, want %x", v, tc.version)
			}
		})
	}
}
