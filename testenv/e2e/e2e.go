// Package e2e drives edgeprov through its built binaries: it builds edgeprovd,
// edgeprovctl and edgeprov-agent once per test process, initialises daemons in
// temporary state directories on ephemeral loopback ports, and runs the agent.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// RepoRoot is the module root (the directory holding go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// BinDirEnv names a directory of already built binaries to use instead of
// building them (a test re-executed in a network namespace passes its parent's).
const BinDirEnv = "EDGEPROV_E2E_BIN_DIR"

// Bin returns the path of a built binary (edgeprovd, edgeprovctl, edgeprov-agent).
func Bin(t testing.TB, name string) string {
	t.Helper()
	if dir := os.Getenv(BinDirEnv); dir != "" {
		return filepath.Join(dir, name)
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "edgeprov-e2e-bin")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./daemon/cmd/...", "./agent/cmd/...")
		cmd.Dir = RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

// Cleanup removes the built binaries; call it from TestMain.
func Cleanup() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// Result is a finished command.
type Result struct {
	Code           int
	Stdout, Stderr string
}

// Run runs a binary with args and returns its exit code and output.
func Run(t testing.TB, env []string, name string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, Bin(t, name), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return Result{code, out.String(), errb.String()}
}

// Daemon is a running edgeprovd.
type Daemon struct {
	Dir, Config, StateDir string
	IDScope               string
	// DeviceAddr is host:port of the HTTPS device endpoint.
	DeviceAddr string
	// MetricsAddr is host:port of the metrics listener.
	MetricsAddr string
	// ServiceAddr is host:port of the service endpoint (Options.Service).
	ServiceAddr string
	// MQTTAddr is host:port of the MQTT/TLS endpoint (with Options.MQTT).
	MQTTAddr string
	CACert   string
	env      []string
	cmd      *exec.Cmd
	ready    string
	log      *syncBuffer
	done     chan error
}

// Options shape a daemon's config.
type Options struct {
	// Catalog is the YAML catalog text; files in CatalogFiles are written beside it.
	Catalog      string
	CatalogFiles map[string]string
	// Hubs is the linkedHubs YAML list; default: two local hubs.
	Hubs string
	// Store is the store block's YAML (indented two spaces); default: bolt.
	Store string
	// Extra is appended to the config (top-level YAML: issuingCA, secrets, ...).
	Extra string
	// Env is added to the environment of every edgeprovd run (e.g. a
	// softhsm.Env's EnvVar()).
	Env []string
	// Service turns the service endpoint on (on an ephemeral port);
	// ServiceYAML adds lines under service: (indented by two spaces).
	Service     bool
	ServiceYAML string
	// DeviceListen is device.listen; default 127.0.0.1:0.
	DeviceListen string
	// MQTT enables the MQTT endpoint (TLS on 127.0.0.1:0, and WebSockets).
	MQTT bool
}

// DefaultHubs are two local hubs.
const DefaultHubs = `
  - {name: hub-a, hostName: hub-a.e2e.local, driver: local}
  - {name: hub-b, hostName: hub-b.e2e.local, driver: local}
`

// NewDaemon writes a config and catalog into a temp dir and runs edgeprovd init.
func NewDaemon(t testing.TB, opts Options) *Daemon {
	t.Helper()
	dir := t.TempDir()
	d := &Daemon{Dir: dir, Config: filepath.Join(dir, "edgeprovd.yaml"), StateDir: filepath.Join(dir, "state"), env: opts.Env}
	for name, content := range opts.CatalogFiles {
		write(t, filepath.Join(dir, name), content)
	}
	if opts.Hubs == "" {
		opts.Hubs = DefaultHubs
	}
	catalogLine := ""
	if opts.Catalog != "" {
		write(t, filepath.Join(dir, "enrollments.yaml"), opts.Catalog)
		catalogLine = "catalog: enrollments.yaml"
	}
	storeBlock := ""
	if opts.Store != "" {
		storeBlock = "store:\n" + opts.Store
	}
	service := ""
	if opts.Service {
		service = "service:\n  listen: 127.0.0.1:0\n" + opts.ServiceYAML
	}
	if opts.DeviceListen == "" {
		opts.DeviceListen = "127.0.0.1:0"
	}
	mqttLines := ""
	if opts.MQTT {
		mqttLines = "mqtt:\n  listen: 127.0.0.1:0\n  webSocket: true\n"
	}
	write(t, d.Config, fmt.Sprintf(`version: 1
stateDir: state
%s
%s
device:
  listen: %s
  hostNames: [localhost, 127.0.0.1]
%s
%slinkedHubs:%s
metrics: {listen: 127.0.0.1:0}
log: {level: debug}
%s
`, catalogLine, storeBlock, opts.DeviceListen, service, mqttLines, opts.Hubs, opts.Extra))
	r := Run(t, d.env, "edgeprovd", "init", "--config", d.Config)
	if r.Code != 0 {
		t.Fatalf("edgeprovd init: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	d.CACert = filepath.Join(d.StateDir, "tls", "ca.pem")
	if m := regexp.MustCompile(`ID scope: +(\S+)`).FindStringSubmatch(r.Stdout); m != nil {
		d.IDScope = m[1]
	}
	return d
}

// NewReplica makes a second daemon sharing a's config (so a's store, which must
// be a shared one such as PostgreSQL) and a copy of a's TLS material and policy
// keys, as an operator deploying a replica would. It does not run init.
func NewReplica(t testing.TB, a *Daemon) *Daemon {
	t.Helper()
	dir := t.TempDir()
	d := &Daemon{Dir: dir, Config: filepath.Join(dir, "edgeprovd.yaml"), StateDir: filepath.Join(dir, "state"), env: a.env}
	entries, err := os.ReadDir(a.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || e.Name() == "ready.json" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(a.Dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, e.Name()), string(data))
	}
	for _, sub := range []string{"tls", "policies"} {
		files, _ := os.ReadDir(filepath.Join(a.StateDir, sub))
		for _, f := range files {
			data, err := os.ReadFile(filepath.Join(a.StateDir, sub, f.Name()))
			if err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(d.StateDir, sub, f.Name()), string(data))
		}
	}
	// Replicas seal store secrets with one data key: the operator copies it.
	if key, err := os.ReadFile(filepath.Join(a.StateDir, "secrets.key")); err == nil {
		write(t, filepath.Join(d.StateDir, "secrets.key"), string(key))
	}
	d.CACert = filepath.Join(d.StateDir, "tls", "ca.pem")
	return d
}

// Start runs the daemon and waits until it serves.
func (d *Daemon) Start(t testing.TB) { d.StartWith(t, StartOptions{}) }

// StartOptions change how StartWith runs the daemon.
type StartOptions struct {
	// Env is added to the test's environment.
	Env []string
	// ExtraFiles become descriptors 3, 4, ... of the daemon (socket activation).
	ExtraFiles []*os.File
	// Prefix runs the daemon through another program that ends by executing it
	// (systemd-socket-activate, a shell setting LISTEN_PID=$$).
	Prefix []string
	// Args are added to edgeprovd run's arguments.
	Args []string
	// Credential runs the daemon as another user.
	Credential *syscall.Credential
	// NoWait returns at once; call WaitReady.
	NoWait bool
}

// StartWith runs the daemon as o says and, unless o.NoWait, waits until it serves.
func (d *Daemon) StartWith(t testing.TB, o StartOptions) {
	t.Helper()
	d.ready = filepath.Join(d.Dir, "ready.json")
	os.Remove(d.ready)
	d.log = &syncBuffer{}
	args := append([]string{"run", "--config", d.Config, "--ready-file", d.ready}, o.Args...)
	argv := append(append(append([]string{}, o.Prefix...), Bin(t, "edgeprovd")), args...)
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Env = append(append(os.Environ(), d.env...), o.Env...)
	d.cmd.ExtraFiles = o.ExtraFiles
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: o.Credential}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.done = make(chan error, 1)
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() { d.Stop(t) })
	if !o.NoWait {
		d.WaitReady(t)
	}
}

// WaitReady waits until the daemon has written its ready file.
func (d *Daemon) WaitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		data, err := os.ReadFile(d.ready)
		if err == nil {
			var r struct{ Device, Service, IDScope, Metrics, MQTT string }
			if err := json.Unmarshal(data, &r); err != nil {
				t.Fatal(err)
			}
			d.DeviceAddr, d.ServiceAddr, d.IDScope, d.MetricsAddr, d.MQTTAddr = r.Device, r.Service, r.IDScope, r.Metrics, r.MQTT
			return
		}
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("edgeprovd exited before serving: %v\n%s", err, d.log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("edgeprovd not ready after 20 s\n%s", d.log)
		}
	}
}

// Exited waits up to timeout for the daemon to exit and returns its error.
func (d *Daemon) Exited(timeout time.Duration) (bool, error) {
	select {
	case err := <-d.done:
		d.done <- err
		return true, err
	case <-time.After(timeout):
		return false, nil
	}
}

// Stop sends SIGTERM and waits for a clean exit.
func (d *Daemon) Stop(t testing.TB) {
	t.Helper()
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case err := <-d.done:
		d.done <- err
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err
		if err != nil {
			t.Errorf("edgeprovd exited with %v\n%s", err, d.log)
		}
	case <-time.After(25 * time.Second):
		d.cmd.Process.Kill()
		t.Errorf("edgeprovd did not stop on SIGTERM\n%s", d.log)
	}
}

// syncBuffer is a bytes.Buffer the daemon's output goroutine and the test may
// use at once.
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

// Kill stops the daemon abruptly (SIGKILL), as a crash would.
func (d *Daemon) Kill(t testing.TB) {
	t.Helper()
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	d.cmd.Process.Kill()
	err := <-d.done
	d.done <- err
}

// Log returns what the daemon logged so far.
func (d *Daemon) Log() string { return d.log.String() }

// Run runs edgeprovd with args in the daemon's environment (e.g. the ca
// commands, with the daemon stopped).
func (d *Daemon) Run(t testing.TB, args ...string) Result {
	t.Helper()
	return Run(t, d.env, "edgeprovd", args...)
}

// PolicyKey is the base64 key of the provisioningserviceowner policy.
func (d *Daemon) PolicyKey(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(d.StateDir, "policies", "provisioningserviceowner.key"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// ConnectionString is the owner policy's service connection string for host
// (e.g. "localhost" for the stock SDK, or ServiceAddr for edgeprovctl).
func (d *Daemon) ConnectionString(t testing.TB, host string) string {
	return "HostName=" + host + ";SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=" + d.PolicyKey(t)
}

// ServicePort is the service endpoint's port.
func (d *Daemon) ServicePort() string {
	return d.ServiceAddr[strings.LastIndexByte(d.ServiceAddr, ':')+1:]
}

// Signal sends sig to the running daemon.
func (d *Daemon) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// Port is the device endpoint's port.
func (d *Daemon) Port() string { return d.DeviceAddr[strings.LastIndexByte(d.DeviceAddr, ':')+1:] }

// MQTTPort is the MQTT endpoint's port.
func (d *Daemon) MQTTPort() string { return d.MQTTAddr[strings.LastIndexByte(d.MQTTAddr, ':')+1:] }

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Write writes a file (creating directories).
func Write(t testing.TB, path, content string) { write(t, path, content) }

// Reload sends SIGHUP (re-read the config's linked hubs, then the catalog)
// and waits until the daemon has logged the catalog's outcome, the last step.
func (d *Daemon) Reload(t testing.TB) {
	t.Helper()
	count := func() int {
		l := d.Log()
		return strings.Count(l, "catalog reloaded") + strings.Count(l, "catalog reload refused")
	}
	before := count()
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for count() == before {
		if time.Now().After(deadline) {
			t.Fatalf("edgeprovd did not finish reloading within 20 s\n%s", d.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
