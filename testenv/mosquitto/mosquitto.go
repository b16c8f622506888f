// Package mosquitto starts a private Eclipse Mosquitto broker per test, with
// the dynamic-security plugin and an admin user, on ephemeral loopback ports.
//
// Each Broker is one `mosquitto -c` process with its config, its
// dynamic-security JSON (made by `mosquitto_ctrl dynsec init`) and its log in
// a temporary directory; it is stopped by t.Cleanup, and killed with the test
// binary (Pdeathsig) if that dies first. A missing mosquitto or plugin fails
// the test with the command that installs it; it never skips.
package mosquitto

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeprov/edgeprov/daemon/pki"
	"github.com/edgeprov/edgeprov/hsm/keyfile"
)

// InstallHint is the command that installs what this package needs.
const InstallHint = "apt-get install mosquitto (testenv/setup.sh does)"

// PluginPaths are where Debian and others put the dynamic-security plugin.
var PluginPaths = []string{
	"/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
	"/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
	"/usr/lib/mosquitto_dynamic_security.so",
	"/usr/local/lib/mosquitto_dynamic_security.so",
}

const (
	// AdminUser is the dynamic-security admin the broker starts with.
	AdminUser    = "edgeprov-admin"
	startTimeout = 10 * time.Second
	stopTimeout  = 3 * time.Second
)

// Broker is one running mosquitto.
type Broker struct {
	// Addr is the plain MQTT listener (127.0.0.1:port).
	Addr string
	// TLSAddr is the MQTT-over-TLS listener, with a server certificate for
	// 127.0.0.1 issued by the CA in CAFile (WithTLS).
	TLSAddr, CAFile string
	// CertAddr is a TLS listener that requires a client certificate issued by
	// the CA given to WithClientCertificates and takes its CN as the username.
	CertAddr string
	// AdminPassword is AdminUser's password.
	AdminPassword string
	Dir           string

	cfg    options
	bin    string
	cmd    *exec.Cmd
	done   chan struct{}
	output *syncBuffer
}

// Option configures Start.
type Option func(*options)

type options struct {
	tls    bool
	certCA string
}

// WithTLS adds a TLS listener (TLSAddr, CAFile).
func WithTLS() Option { return func(o *options) { o.tls = true } }

// WithClientCertificates adds a listener (CertAddr) for X.509 devices: it
// requires a client certificate issued by the CA in caFile (PEM) and uses the
// certificate's CN as the MQTT username. It implies WithTLS.
func WithClientCertificates(caFile string) Option {
	return func(o *options) { o.tls, o.certCA = true, caFile }
}

// Start starts a broker for the duration of t and returns once the admin can
// log in.
func Start(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	b := &Broker{Dir: t.TempDir(), AdminPassword: "admin-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	for _, o := range opts {
		o(&b.cfg)
	}
	var err error
	if b.bin, err = exec.LookPath("mosquitto"); err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr != nil {
			t.Fatalf("mosquitto: the mosquitto binary is not installed (%v); install it with `%s`", err, InstallHint)
		}
		b.bin = "/usr/sbin/mosquitto"
	}
	plugin := ""
	for _, p := range PluginPaths {
		if _, err := os.Stat(p); err == nil {
			plugin = p
			break
		}
	}
	if plugin == "" {
		t.Fatalf("mosquitto: the dynamic-security plugin is not in %s; install it with `%s`", strings.Join(PluginPaths, ", "), InstallHint)
	}
	ctrl, err := exec.LookPath("mosquitto_ctrl")
	if err != nil {
		t.Fatalf("mosquitto: mosquitto_ctrl is not installed (%v); install it with `%s`", err, InstallHint)
	}
	dynsec := filepath.Join(b.Dir, "dynamic-security.json")
	if out, err := exec.Command(ctrl, "dynsec", "init", dynsec, AdminUser, b.AdminPassword).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto: mosquitto_ctrl dynsec init: %v\n%s", err, out)
	}
	if b.cfg.tls {
		b.writeTLS(t)
	}
	t.Cleanup(b.Stop)
	// mosquitto binds its ports itself, so a port chosen here may be taken
	// before it binds; it then exits and we try others.
	const attempts = 5
	for attempt := 1; ; attempt++ {
		if err := b.launch(plugin, dynsec); err == nil {
			return b
		} else if !b.exited() || attempt == attempts {
			t.Fatalf("mosquitto: %v\n%s", err, b.output)
		}
	}
}

func (b *Broker) writeTLS(t testing.TB) {
	ca, err := pki.NewCA("edgeprov test broker CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.IssueServer([]string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b.CAFile = filepath.Join(b.Dir, "ca.pem")
	if err := pki.WriteCert(b.CAFile, ca.Cert); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCert(filepath.Join(b.Dir, "server.pem"), cert); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKey(filepath.Join(b.Dir, "server.key"), key); err != nil {
		t.Fatal(err)
	}
}

func (b *Broker) launch(plugin, dynsec string) error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	b.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	var conf strings.Builder
	fmt.Fprintf(&conf, `# edgeprov test broker
per_listener_settings false
allow_anonymous false
persistence false
# The test runs as root, and the files are the test's.
user root
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
plugin %s
plugin_opt_config_file %s

listener %d 127.0.0.1
`, plugin, dynsec, ports[0])
	if b.cfg.tls {
		b.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
		fmt.Fprintf(&conf, "\nlistener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n", ports[1], b.CAFile,
			filepath.Join(b.Dir, "server.pem"), filepath.Join(b.Dir, "server.key"))
	}
	if b.cfg.certCA != "" {
		b.CertAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
		fmt.Fprintf(&conf, "\nlistener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\nuse_identity_as_username true\n",
			ports[2], b.cfg.certCA, filepath.Join(b.Dir, "server.pem"), filepath.Join(b.Dir, "server.key"))
	}
	confFile := filepath.Join(b.Dir, "mosquitto.conf")
	if err := os.WriteFile(confFile, []byte(conf.String()), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(b.bin, "-c", confFile)
	b.output = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = b.output, b.output
	// Kill mosquitto if the test binary dies without running its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", b.bin, err)
	}
	b.cmd, b.done = cmd, make(chan struct{})
	done := b.done
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	if err := b.waitReady(); err != nil {
		b.Stop()
		return err
	}
	return nil
}

// waitReady polls until the admin can log in: that it is our broker answering,
// with its plugin loaded, not another process on the port.
func (b *Broker) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	for {
		if b.exited() {
			return fmt.Errorf("mosquitto exited during start-up: %v", b.cmd.ProcessState)
		}
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + b.Addr).SetClientID("ready-probe").
			SetUsername(AdminUser).SetPassword(b.AdminPassword).SetConnectTimeout(time.Second).SetAutoReconnect(false))
		t := c.Connect()
		t.Wait()
		err := t.Error()
		if err == nil {
			c.Disconnect(0)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mosquitto did not let the admin in on %s within %v: %w", b.Addr, startTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop terminates mosquitto: SIGTERM, then SIGKILL. It is registered with
// t.Cleanup by Start and safe to call more than once.
func (b *Broker) Stop() {
	if b.cmd == nil || b.exited() {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(stopTimeout):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

func (b *Broker) exited() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// URL is the plain listener's URL for the edgeprov driver (mqtt://).
func (b *Broker) URL() string { return "mqtt://" + b.Addr }

// TLSURL is the TLS listener's URL (mqtts://).
func (b *Broker) TLSURL() string { return "mqtts://" + b.TLSAddr }

// Log is what mosquitto logged so far.
func (b *Broker) Log() string { return b.output.String() }

// RootCAs is a pool holding the broker's CA (WithTLS).
func (b *Broker) RootCAs(t testing.TB) *x509.CertPool {
	t.Helper()
	certs, err := keyfile.LoadCerts(b.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool
}

// Client is a device's connection to the broker, for tests.
type Client struct{ mqtt.Client }

// Connect logs in to addr as a device would (the client ID is the username
// unless clientID is given). tlsCfg nil means plain MQTT.
func Connect(addr, clientID, username, password string, tlsCfg *tls.Config) (*Client, error) {
	scheme := "tcp://"
	if tlsCfg != nil {
		scheme = "ssl://"
	}
	opts := mqtt.NewClientOptions().AddBroker(scheme + addr).SetClientID(clientID).SetUsername(username).SetPassword(password).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).SetCleanSession(true)
	if tlsCfg != nil {
		opts.SetTLSConfig(tlsCfg)
	}
	c := mqtt.NewClient(opts)
	t := c.Connect()
	if !t.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect: no answer within 10s")
	}
	if err := t.Error(); err != nil {
		return nil, err
	}
	return &Client{c}, nil
}

// Close disconnects.
func (c *Client) Close() { c.Disconnect(100) }

func freePorts(n int) ([]int, error) {
	var out []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("choose a TCP port: %w", err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
