package loadgen

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/pki"
)

// ceilingConfig starts an in-process ceiling server for transport and returns
// a load configuration aimed at it; with x509 the devices carry certificates
// from a group CA that the server verifies.
func ceilingConfig(t testing.TB, transport string, x509Group bool, devices, conc int) Config {
	t.Helper()
	ca, err := pki.NewCA("loadgen test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, key, err := ca.IssueServer([]string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Transport: transport, Devices: devices, Concurrency: conc, IDPrefix: "dev-", IDScope: "0ne00000001"}
	var clientCAs *x509.CertPool
	if x509Group {
		group, err := pki.NewCA("loadgen test group", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Certs, err = DeviceCerts(group.Cert, group.Key, cfg.IDPrefix, devices); err != nil {
			t.Fatal(err)
		}
		clientCAs = x509.NewCertPool()
		clientCAs.AddCert(group.Cert)
	} else {
		cfg.GroupKey = []byte("0123456789abcdef0123456789abcdef")
	}
	ln, err := ListenCeiling(tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}, clientCAs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if transport == MQTT {
		go ServeMQTTCeiling(ln)
	} else {
		go ServeCeiling(ln)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	cfg.Addrs = []string{ln.Addr().String()}
	cfg.TLS = &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	return cfg
}

func TestRunCeiling(t *testing.T) {
	for _, tc := range []struct {
		name      string
		transport string
		x509      bool
		rate      float64
	}{
		{"https symmetric key", HTTPS, false, 0},
		{"https x509", HTTPS, true, 0},
		{"mqtt symmetric key", MQTT, false, 0},
		{"mqtt x509", MQTT, true, 0},
		{"https open loop", HTTPS, false, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := ceilingConfig(t, tc.transport, tc.x509, 100, 8)
			cfg.Rate = tc.rate
			var calls int
			cfg.Progress = func(done, failed int) { calls++ }
			s, err := Run(context.Background(), cfg, Bare)
			if err != nil {
				t.Fatal(err)
			}
			if s.Devices != 100 || s.Succeeded != 100 || s.Failed != 0 {
				t.Fatalf("summary %+v, want 100 succeeded", s)
			}
			if s.P50ms <= 0 || s.P99ms < s.P50ms || s.MaxMs < s.P99ms || s.PerSecond <= 0 {
				t.Fatalf("implausible latencies %+v", s)
			}
			if tc.rate > 0 && (s.OfferedRate != tc.rate || s.Seconds < 99/tc.rate) {
				t.Fatalf("open loop at %v/s took %.3f s for 100 devices, want at least %.3f", tc.rate, s.Seconds, 99/tc.rate)
			}
			if calls == 0 {
				t.Fatal("progress never called")
			}
		})
	}
}

// A device whose certificate the server does not trust fails, and the
// failure is counted, not hidden.
func TestRunCountsFailures(t *testing.T) {
	cfg := ceilingConfig(t, HTTPS, true, 10, 2)
	other := ceilingConfig(t, HTTPS, true, 10, 2)
	cfg.Certs = other.Certs
	s, err := Run(context.Background(), cfg, Bare)
	if err != nil {
		t.Fatal(err)
	}
	if s.Failed != 10 || s.Errors["transport"] != 10 {
		t.Fatalf("summary %+v, want 10 transport failures", s)
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no devices":     {Addrs: []string{"x:1"}, Concurrency: 1},
		"no concurrency": {Addrs: []string{"x:1"}, Devices: 1},
		"no address":     {Devices: 1, Concurrency: 1},
		"short of certs": {Addrs: []string{"x:1"}, Devices: 2, Concurrency: 1, Certs: make([]tls.Certificate, 1)},
	} {
		if _, err := Run(context.Background(), cfg, Bare); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestDeviceCerts(t *testing.T) {
	group, err := pki.NewCA("group", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := DeviceCerts(group.Cert, group.Key, "line-", 5)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(group.Cert)
	for i, c := range certs {
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if want := "line-" + string(rune('0'+i)); leaf.Subject.CommonName != want {
			t.Errorf("certificate %d names %q, want %q", i, leaf.Subject.CommonName, want)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("certificate %d: %v", i, err)
		}
	}
}

// The MQTT ceiling drops a client that sends garbage rather than hang on it.
func TestMQTTCeilingDropsGarbage(t *testing.T) {
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- mqttCeilingConn(a) }()
	b.Write([]byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f})
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("no error for a 2^35-byte remaining length")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ceiling still reading")
	}
}

// BenchmarkCeiling is the cost of one fresh-TLS request/response on loopback,
// client and server in one process: the floor under every registration.
func BenchmarkCeiling(b *testing.B) {
	for _, tc := range []struct {
		name      string
		transport string
		x509      bool
	}{{"https", HTTPS, false}, {"https-x509", HTTPS, true}, {"mqtt", MQTT, false}} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := ceilingConfig(b, tc.transport, tc.x509, b.N, 32)
			b.ResetTimer()
			s, err := Run(context.Background(), cfg, Bare)
			if err != nil || s.Failed > 0 {
				b.Fatal(err, s)
			}
			b.ReportMetric(s.PerSecond, "conns/s")
		})
	}
}
