package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/edgeprov/edgeprov/daemon/store"
)

// Health runs the daemon's health checks and joins their failures. It feeds
// systemd's watchdog (no ping while it fails, so systemd restarts a wedged
// daemon) and the admin endpoint's /v1/health.
//   - store: a tiny write transaction commits (writer lock free, disk takes
//     writes and syncs); a stuck commit fails when ctx ends. A store without
//     that capability (PostgreSQL) must answer a read.
//   - state directory: a small file can be created, synced and removed. bbolt
//     reuses free pages, so a full or read-only file system shows in store
//     writes only when the file must grow, perhaps at the next burst of
//     devices; this shows it now.
//   - device, MQTT and service endpoints: each socket accepts a connection
//     and completes a TLS handshake presenting our certificate.
func (d *Daemon) Health(ctx context.Context) error {
	var errs []error
	if p, ok := d.store.(store.Pinger); ok {
		if err := p.Ping(ctx); err != nil {
			errs = append(errs, fmt.Errorf("store: %w", err))
		}
	} else if err := d.ready(ctx); err != nil {
		// A store without Pinger (PostgreSQL): it answers a read.
		errs = append(errs, fmt.Errorf("store: %w", err))
	}
	if err := probeDir(d.cfg.Path(d.cfg.StateDir)); err != nil {
		errs = append(errs, fmt.Errorf("state directory: %w", err))
	}
	for _, a := range addrs(d.device) {
		if err := d.probeTLS(ctx, a); err != nil {
			errs = append(errs, fmt.Errorf("device endpoint %s: %w", a, err))
		}
	}
	for name, ln := range map[string]net.Listener{"service": d.serviceLn, "mqtt": d.mqttLn} {
		if ln == nil {
			continue
		}
		for _, a := range addrs(ln) {
			if err := d.probeTLS(ctx, a); err != nil {
				errs = append(errs, fmt.Errorf("%s endpoint %s: %w", name, a, err))
			}
		}
	}
	return errors.Join(errs...)
}

func probeDir(dir string) error {
	f, err := os.CreateTemp(dir, ".health-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString(time.Now().UTC().Format(time.RFC3339Nano))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// probeTLS dials addr (loopback for a wildcard address) and completes a
// handshake, accepting only our own certificate.
func (d *Daemon) probeTLS(ctx context.Context, a net.Addr) error {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return nil
	}
	ips := []net.IP{ta.IP}
	if ta.IP.IsUnspecified() {
		// [::] is usually dual-stack; try ::1 then 127.0.0.1.
		ips = []net.IP{net.IPv6loopback, net.IPv4(127, 0, 0, 1)}
		if ta.IP.To4() != nil {
			ips = ips[1:]
		}
	}
	own := d.tls.Certificates[0].Certificate[0]
	dialer := &tls.Dialer{Config: &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The name checked is ours, not the caller's: what matters is that
		// our listener answers with our certificate.
		InsecureSkipVerify: true, //nolint:gosec // verified below against our own certificate
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, own) {
				return errors.New("another certificate answered")
			}
			return nil
		},
	}}
	var err error
	for _, ip := range ips {
		var c net.Conn
		if c, err = dialer.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), fmt.Sprint(ta.Port))); err == nil {
			return c.Close()
		}
	}
	return err
}
