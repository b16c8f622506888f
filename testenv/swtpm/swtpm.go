// Package swtpm starts a private software TPM 2.0 (swtpm) per test.
//
// Each Instance is one `swtpm socket --tpm2` process with its state in a
// temporary directory, reachable over a unix socket (or TCP with WithTCP),
// already started up (TPM2_Startup(CLEAR)) and stopped by t.Cleanup. swtpm
// serves one connection at a time and has no resource manager: close your
// connection before another client (e.g. tpm2-tools) uses the instance, and
// flush what you load (3 transient objects and 3 sessions at most).
//
// A missing swtpm binary fails the test with the command to install it; it
// never skips.
package swtpm

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// InstallHint is the command that installs what this package needs.
const InstallHint = "apt-get install swtpm swtpm-tools"

const (
	maxUnixPath  = 107 // sizeof(sockaddr_un.sun_path) - 1 on Linux
	startTimeout = 10 * time.Second
	stopTimeout  = 2 * time.Second
)

// Option configures Start.
type Option func(*config)

type config struct {
	tcp    bool
	ekCA   *x509.Certificate
	ekKey  crypto.Signer
	logLvl int
}

// WithTCP makes the instance listen on TCP ports on 127.0.0.1 instead of
// unix sockets: commands (raw TPM framing, as on the unix socket) on port P,
// the control channel on P+1. Path then returns "tcp:127.0.0.1:P".
func WithTCP() Option { return func(c *config) { c.tcp = true } }

// WithEKCertificate provisions an EK certificate, signed by ca/caKey, into
// NV index 0x01c00002 right after start, as a TPM manufacturer would (see
// WriteEKCertificate). The EK itself is not persisted. Instance.EKCertificate
// returns the certificate.
func WithEKCertificate(ca *x509.Certificate, caKey crypto.Signer) Option {
	return func(c *config) { c.ekCA, c.ekKey = ca, caKey }
}

// WithLogLevel sets swtpm's --log level (default 1); the log is printed
// when start-up fails and kept in StateDir()/swtpm.log.
func WithLogLevel(level int) Option { return func(c *config) { c.logLvl = level } }

// Instance is one running swtpm process.
type Instance struct {
	dir    string
	sock   string // unix data socket, "" with TCP
	tcp    string // host:port with TCP
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited
	output *bytes.Buffer // swtpm's stdout and stderr
	ekCert *x509.Certificate
}

// Start starts swtpm for the duration of t and returns once it answers.
func Start(t testing.TB, opts ...Option) *Instance {
	t.Helper()
	cfg := config{logLvl: 1}
	for _, o := range opts {
		o(&cfg)
	}
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		t.Fatalf("swtpm: the swtpm binary is not installed (%v); install it with `%s`", err, InstallHint)
	}
	dir := stateDir(t)
	inst := &Instance{dir: dir}
	if !cfg.tcp {
		inst.sock = filepath.Join(dir, "swtpm.sock")
	}
	t.Cleanup(inst.Stop)
	// With TCP, swtpm binds the port itself (given a listening fd= it does
	// not serve a second connection), so a port chosen here can be taken
	// before swtpm binds it; swtpm then exits and we try another port.
	const attempts = 5
	for attempt := 1; ; attempt++ {
		if cfg.tcp {
			port, err := freePort()
			if err != nil {
				t.Fatalf("swtpm: %v", err)
			}
			inst.tcp = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		}
		err := inst.launch(bin, cfg.logLvl)
		if err == nil {
			break
		}
		if !cfg.tcp || !inst.Exited() || attempt == attempts {
			t.Fatalf("swtpm: %v\n%s", err, inst.diagnostics())
		}
	}
	if cfg.ekCA != nil {
		conn, err := inst.Dial()
		if err != nil {
			t.Fatalf("swtpm: %v", err)
		}
		cert, err := WriteEKCertificate(conn, cfg.ekCA, cfg.ekKey)
		conn.Close()
		if err != nil {
			t.Fatalf("swtpm: provisioning the EK certificate: %v", err)
		}
		inst.ekCert = cert
	}
	return inst
}

// launch starts the swtpm process and waits until it answers.
func (i *Instance) launch(bin string, logLevel int) error {
	args := []string{"socket", "--tpm2",
		"--tpmstate", "dir=" + i.dir,
		"--flags", "not-need-init,startup-clear",
		"--log", "file=" + filepath.Join(i.dir, "swtpm.log") + ",level=" + strconv.Itoa(logLevel),
	}
	if i.tcp != "" {
		// tpm2-tools' swtpm TCTI expects the control channel on port+1.
		_, p, _ := net.SplitHostPort(i.tcp)
		port, _ := strconv.Atoi(p)
		args = append(args,
			"--server", "type=tcp,bindaddr=127.0.0.1,port="+p,
			"--ctrl", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(port+1))
	} else {
		// tpm2-tools' swtpm TCTI expects the control socket at <path>.ctrl.
		args = append(args,
			"--server", "type=unixio,path="+i.sock,
			"--ctrl", "type=unixio,path="+i.sock+".ctrl")
	}
	cmd := exec.Command(bin, args...)
	i.output = new(bytes.Buffer)
	cmd.Stdout = i.output
	cmd.Stderr = i.output
	// Kill swtpm if the test binary dies without running its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	i.cmd = cmd
	i.done = make(chan struct{})
	done := i.done
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	if err := i.waitReady(); err != nil {
		i.Stop()
		return err
	}
	return nil
}

// freePort returns a port P on 127.0.0.1 such that P and P+1 are free now.
func freePort() (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("choose a TCP port: %w", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1)))
		ln.Close()
		if err == nil {
			ln2.Close()
			return port, nil
		}
	}
	return 0, errors.New("choose a TCP port: found no two adjacent free ports")
}

// stateDir returns a fresh directory whose socket paths fit sun_path:
// t.TempDir() when it is short enough, else a short directory under /tmp.
func stateDir(t testing.TB) string {
	dir := t.TempDir()
	if len(filepath.Join(dir, "swtpm.sock.ctrl")) <= maxUnixPath {
		return dir
	}
	dir, err := os.MkdirTemp("/tmp", "swtpm")
	if err != nil {
		t.Fatalf("swtpm: %v", err)
	}
	// Registered before Start's Stop, so it runs after it (LIFO).
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (i *Instance) network() (string, string) {
	if i.tcp != "" {
		return "tcp", i.tcp
	}
	return "unix", i.sock
}

// waitReady polls until swtpm answers a TPM2_GetRandom. Asking a real TPM
// question (rather than only connecting) makes sure it is our swtpm that
// answers and not another process that holds the TCP port.
func (i *Instance) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-i.done:
			return fmt.Errorf("swtpm exited during start-up: %v", i.cmd.ProcessState)
		default:
		}
		err := i.probe(deadline)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("swtpm did not answer on %s within %v: %w", i.Path(), startTimeout, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (i *Instance) probe(deadline time.Time) error {
	network, addr := i.network()
	c, err := net.Dial(network, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	_, err = tpm2.GetRandom{BytesRequested: 8}.Execute(transport.FromReadWriteCloser(c))
	return err
}

func (i *Instance) diagnostics() string {
	log, _ := os.ReadFile(filepath.Join(i.dir, "swtpm.log"))
	return fmt.Sprintf("swtpm output:\n%s\nswtpm.log:\n%s", i.output, log)
}

// Stop terminates swtpm: SIGTERM, then SIGKILL after 2 s. It is registered
// with t.Cleanup by Start and safe to call more than once.
func (i *Instance) Stop() {
	if i.cmd == nil || i.Exited() {
		return
	}
	_ = i.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-i.done:
	case <-time.After(stopTimeout):
		_ = i.cmd.Process.Kill()
		<-i.done
	}
}

// Path is the address for tpm.Open: "unix:<socket>" or "tcp:127.0.0.1:<port>".
func (i *Instance) Path() string {
	if i.tcp != "" {
		return "tcp:" + i.tcp
	}
	return "unix:" + i.sock
}

// TCTI is the tpm2-tools TCTI string for this instance, for
// TPM2TOOLS_TCTI: "swtpm:path=<socket>" (the swtpm TCTI finds the control
// socket at <socket>.ctrl) or "swtpm:host=127.0.0.1,port=<port>".
func (i *Instance) TCTI() string {
	if i.tcp != "" {
		host, port, _ := net.SplitHostPort(i.tcp)
		return "swtpm:host=" + host + ",port=" + port
	}
	return "swtpm:path=" + i.sock
}

// StateDir is the directory holding swtpm's state, log and sockets.
func (i *Instance) StateDir() string { return i.dir }

// EKCertificate returns the certificate written by WithEKCertificate, or nil.
func (i *Instance) EKCertificate() *x509.Certificate { return i.ekCert }

// Dial opens a raw go-tpm transport to the instance. Close it before anyone
// else talks to this TPM: swtpm serves one connection at a time.
func (i *Instance) Dial() (transport.TPMCloser, error) {
	network, addr := i.network()
	c, err := net.Dial(network, addr)
	if err != nil {
		return nil, fmt.Errorf("dial swtpm: %w", err)
	}
	return transport.FromReadWriteCloser(c), nil
}

// Exited reports whether the swtpm process has exited.
func (i *Instance) Exited() bool {
	select {
	case <-i.done:
		return true
	default:
		return false
	}
}
