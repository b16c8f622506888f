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
)

// bench runs the load generator against a device endpoint, optionally with the
// ceiling measurement in the same run.
func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("bench", stderr)
	addr := fs.String("addr", "127.0.0.1:8443", "device endpoint host:port")
	caFile := fs.String("ca-file", "", "CA certificate of the endpoint (edgeprovd init wrote it)")
	serverName := fs.String("server-name", "localhost", "name to verify in the server certificate")
	scope := fs.String("id-scope", "", "ID scope")
	groupKey := fs.String("group-key-file", "", "file holding the base64 key of a symmetric-key enrollment group")
	prefix := fs.String("prefix", "bench-", "registration ID prefix (the group must accept it)")
	devices := fs.Int("devices", 1000, "devices to register")
	conc := fs.Int("concurrency", 64, "devices registering at once")
	pollWait := fs.Duration("poll-wait", -1, "wait before polling; negative honours retry-after as real devices do")
	ceiling := fs.Bool("ceiling", false, "also measure a bare TLS server with the same client (the box's ceiling)")
	if err := parse(fs, args); err != nil {
		return err
	}
	var cleanups []func()
	key, err := readKey(*groupKey)
	if err != nil {
		return &ExitError{3, err}
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		return &ExitError{3, fmt.Errorf("--ca-file: %w", err)}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return &ExitError{3, fmt.Errorf("--ca-file %s holds no certificate", *caFile)}
	}
	cfg := loadgen.Config{Addr: *addr, IDScope: *scope, GroupKey: key, IDPrefix: *prefix, Devices: *devices, Concurrency: *conc,
		PollWait: *pollWait, TLS: &tls.Config{RootCAs: pool, ServerName: *serverName, MinVersion: tls.VersionTLS12},
		Progress: progress(stderr, "edgeprovd", *devices)}
	// The machine's load drifts: the ceiling is measured before and after the
	// run and averaged, so the fraction compares like with like.
	var cc loadgen.Config
	var ceil []float64
	measureCeiling := func(label string) error {
		if !*ceiling {
			return nil
		}
		if cc.Addr == "" {
			c, stop, err := startCeiling(ctx, cfg)
			if err != nil {
				return err
			}
			cleanups = append(cleanups, stop)
			cc = c
		}
		cc.Progress = progress(stderr, label, *devices)
		s, err := loadgen.Run(ctx, cc, loadgen.Bare)
		if err != nil {
			return err
		}
		ceil = append(ceil, s.PerSecond)
		return nil
	}
	defer func() {
		for _, c := range cleanups {
			c()
		}
	}()
	if err := measureCeiling("ceiling"); err != nil {
		return err
	}
	sum, err := loadgen.Run(ctx, cfg, loadgen.Register)
	if err != nil {
		return err
	}
	if err := measureCeiling("ceiling"); err != nil {
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

// startCeiling runs the bare TLS server in a child process, as edgeprovd is
// one, with a throw-away CA and a P-256 certificate (the key type edgeprovd init
// uses), and returns the load configuration that targets it.
func startCeiling(ctx context.Context, cfg loadgen.Config) (loadgen.Config, func(), error) {
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
	cmd := exec.CommandContext(ctx, exe, "bench-ceiling-server", certFile, keyFile)
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
	cfg.Addr = strings.TrimSpace(line)
	cfg.TLS = &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	return cfg, stop, nil
}

// ceilingServer is the hidden child command: serve until killed.
func ceilingServer(args []string, stdout io.Writer) error {
	if len(args) != 2 {
		return &ExitError{2, errors.New("usage: edgeprovctl bench-ceiling-server CERT KEY")}
	}
	cert, err := tls.LoadX509KeyPair(args[0], args[1])
	if err != nil {
		return err
	}
	ln, err := loadgen.ListenCeiling(cert)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, ln.Addr().String())
	return loadgen.ServeCeiling(ln)
}

// progress reports progress on stderr: a redrawn bar on a terminal, a line
// every few seconds otherwise.
func progress(w io.Writer, what string, total int) func(done, failed int) {
	start, last := time.Now(), time.Time{}
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return func(done, failed int) {
		rate := float64(done) / time.Since(start).Seconds()
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
