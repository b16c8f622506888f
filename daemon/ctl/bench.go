package ctl

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/loadgen"
	"github.com/edgeprov/edgeprov/daemon/pki"
	"github.com/edgeprov/edgeprov/hsm/keyfile"
)

// bench runs the load generator against a device endpoint, optionally with the
// ceiling measurement in the same run.
func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("bench", stderr)
	addrs := fs.String("addr", "127.0.0.1:8443", "device endpoint host:port; a comma-separated list spreads devices over replicas")
	transport := fs.String("transport", loadgen.HTTPS, "https or mqtt")
	caFile := fs.String("ca-file", "", "CA certificate of the endpoint (edgeprovd init wrote it)")
	serverName := fs.String("server-name", "localhost", "name to verify in the server certificate")
	scope := fs.String("id-scope", "", "ID scope")
	groupKey := fs.String("group-key-file", "", "file holding the base64 key of a symmetric-key enrollment group")
	x509Cert := fs.String("x509-ca-cert", "", "PEM certificate of an X.509 enrollment group's signing CA: devices get certificates it signs")
	x509Key := fs.String("x509-ca-key", "", "PEM private key of that CA")
	prefix := fs.String("prefix", "bench-", "registration ID prefix (the group must accept it)")
	devices := fs.Int("devices", 1000, "devices to register")
	conc := fs.Int("concurrency", 64, "devices registering at once (with --rate: the most in flight)")
	rate := fs.Float64("rate", 0, "start devices at this many per second (open loop) instead of back to back")
	pollWait := fs.Duration("poll-wait", -1, "wait before polling; negative honours retry-after as real devices do")
	kex := fs.String("key-exchange", "default", "key exchanges the devices offer: default (Go's, post-quantum hybrid first), x25519 or p256")
	ceiling := fs.Bool("ceiling", false, "also measure a bare TLS server with the same client (the box's ceiling)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *transport != loadgen.HTTPS && *transport != loadgen.MQTT {
		return &ExitError{ExitUsage, fmt.Errorf("--transport %q: want https or mqtt", *transport)}
	}
	curves, ok := keyExchanges[*kex]
	if !ok {
		return &ExitError{ExitUsage, fmt.Errorf("--key-exchange %q: want default, x25519 or p256", *kex)}
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		return &ExitError{3, fmt.Errorf("--ca-file: %w", err)}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return &ExitError{3, fmt.Errorf("--ca-file %s holds no certificate", *caFile)}
	}
	cfg := loadgen.Config{Addrs: strings.Split(*addrs, ","), Transport: *transport, IDScope: *scope, IDPrefix: *prefix,
		Devices: *devices, Concurrency: *conc, Rate: *rate, PollWait: *pollWait,
		TLS: &tls.Config{RootCAs: pool, ServerName: *serverName, MinVersion: tls.VersionTLS12, CurvePreferences: curves}}
	switch {
	case (*groupKey == "") == (*x509Cert == ""):
		return &ExitError{ExitUsage, errors.New("give either --group-key-file or --x509-ca-cert and --x509-ca-key")}
	case *groupKey != "":
		if cfg.GroupKey, err = readKey(*groupKey); err != nil {
			return &ExitError{3, err}
		}
	default:
		ca, err := pki.LoadCA(*x509Cert, *x509Key)
		if err != nil {
			return &ExitError{3, fmt.Errorf("X.509 group CA: %w", err)}
		}
		fmt.Fprintf(stderr, "issuing %d device certificates\n", *devices)
		if cfg.Certs, err = loadgen.DeviceCerts(ca.Cert, ca.Key, *prefix, *devices); err != nil {
			return err
		}
	}
	// The machine's load drifts: the ceiling is measured before and after the
	// run and averaged, so the fraction compares like with like.
	var cc loadgen.Config
	var ceil []float64
	var cleanups []func()
	defer func() {
		for _, c := range cleanups {
			c()
		}
	}()
	measureCeiling := func() error {
		if !*ceiling {
			return nil
		}
		if cc.Addrs == nil {
			c, stop, err := startCeiling(ctx, cfg, *x509Cert)
			if err != nil {
				return err
			}
			cleanups = append(cleanups, stop)
			cc = c
		}
		cc.Progress = progress(stderr, "ceiling", *devices)
		s, err := loadgen.Run(ctx, cc, loadgen.Bare)
		if err != nil {
			return err
		}
		if s.Failed > 0 {
			return fmt.Errorf("ceiling run: %d of %d requests failed: %v", s.Failed, s.Devices, s.Errors)
		}
		ceil = append(ceil, s.PerSecond)
		return nil
	}
	if err := measureCeiling(); err != nil {
		return err
	}
	cfg.Progress = progress(stderr, "edgeprovd", *devices)
	sum, err := loadgen.Run(ctx, cfg, loadgen.Register)
	if err != nil {
		return err
	}
	if err := measureCeiling(); err != nil {
		return err
	}
	if len(ceil) == 2 {
		sum.CeilingPerSec = (ceil[0] + ceil[1]) / 2
		sum.FractionOfCeil = sum.PerSecond / sum.CeilingPerSec
	}
	out, _ := json.MarshalIndent(sum, "", "  ")
	fmt.Fprintln(stdout, string(out))
	if sum.Failed > 0 {
		return &ExitError{4, fmt.Errorf("%d of %d registrations failed", sum.Failed, sum.Devices)}
	}
	return nil
}

// keyExchanges are the groups a device's TLS stack may offer: Go's default
// leads with the post-quantum hybrid; the embedded stacks of today's devices
// offer X25519 or, with a secure element, P-256.
var keyExchanges = map[string][]tls.CurveID{
	"default": nil,
	"x25519":  {tls.X25519},
	"p256":    {tls.CurveP256},
}

// startCeiling runs the bare server in a child process, as edgeprovd is one,
// with a throw-away CA and a P-256 certificate (the key type edgeprovd init
// uses), speaking cfg's transport and, for an X.509 run, verifying the
// devices' certificates against clientCA as the device endpoint does. It
// returns the load configuration that targets it: the same devices, the same
// client settings.
func startCeiling(ctx context.Context, cfg loadgen.Config, clientCA string) (loadgen.Config, func(), error) {
	dir, err := os.MkdirTemp("", "edgeprovctl-ceiling")
	if err != nil {
		return cfg, nil, err
	}
	ca, err := pki.NewCA("edgeprovctl bench ceiling CA", time.Hour)
	if err != nil {
		return cfg, nil, err
	}
	leaf, key, err := ca.IssueServer([]string{"localhost"}, time.Hour)
	if err != nil {
		return cfg, nil, err
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := pki.WriteCert(certFile, leaf, ca.Cert); err != nil {
		return cfg, nil, err
	}
	if err := pki.WriteKey(keyFile, key); err != nil {
		return cfg, nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return cfg, nil, err
	}
	args := []string{"bench-ceiling-server", "--transport", cfg.Transport}
	if clientCA != "" {
		args = append(args, "--client-ca", clientCA)
	}
	cmd := exec.CommandContext(ctx, exe, append(args, certFile, keyFile)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return cfg, nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return cfg, nil, err
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait(); os.RemoveAll(dir) }
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		stop()
		return cfg, nil, fmt.Errorf("ceiling server: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	cfg.Addrs = []string{strings.TrimSpace(line)}
	cfg.TLS = cfg.TLS.Clone()
	cfg.TLS.RootCAs, cfg.TLS.ServerName = pool, "localhost"
	cfg.Rate = 0 // the ceiling is a capacity: as fast as it goes
	return cfg, stop, nil
}

// ceilingServer is the hidden child command: serve until killed.
func ceilingServer(args []string, stdout, stderr io.Writer) error {
	fs := flags("bench-ceiling-server", stderr)
	transport := fs.String("transport", loadgen.HTTPS, "https or mqtt")
	clientCA := fs.String("client-ca", "", "verify client certificates against this CA")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return &ExitError{ExitUsage, errors.New("usage: edgeprovctl bench-ceiling-server [--transport T] [--client-ca F] CERT KEY")}
	}
	cert, err := tls.LoadX509KeyPair(fs.Arg(0), fs.Arg(1))
	if err != nil {
		return err
	}
	var pool *x509.CertPool
	if *clientCA != "" {
		certs, err := keyfile.LoadCerts(*clientCA)
		if err != nil {
			return err
		}
		pool = x509.NewCertPool()
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	ln, err := loadgen.ListenCeiling(cert, pool)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, ln.Addr().String())
	if *transport == loadgen.MQTT {
		return loadgen.ServeMQTTCeiling(ln)
	}
	return loadgen.ServeCeiling(ln)
}

// progress reports progress on stderr: a redrawn bar on a terminal, a line
// every few seconds otherwise.
func progress(w io.Writer, what string, total int) func(done, failed int) {
	var start, last time.Time
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return func(done, failed int) {
		if start.IsZero() { // the run starts with the first report
			start = time.Now()
		}
		rate := float64(done) / max(time.Since(start).Seconds(), 0.001)
		if !tty {
			if done == total || time.Since(last) > 5*time.Second {
				last = time.Now()
				fmt.Fprintf(w, "%s: %d/%d done, %d failed, %.0f/s\n", what, done, total, failed, rate)
			}
			return
		}
		const width = 30
		filled := width * done / max(total, 1)
		bar := []byte(strings.Repeat("#", filled) + strings.Repeat(".", width-filled))
		fmt.Fprintf(w, "\r%-9s [%s] %d/%d  %d failed  %.0f/s ", what, bar, done, total, failed, rate)
		if done == total {
			fmt.Fprintln(w)
		}
	}
}
