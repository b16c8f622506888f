// Package softhsm gives tests a private SoftHSM2: a config file and a token
// directory in a temporary directory, with tokens initialised by
// softhsm2-util, so tests never touch /etc/softhsm or /var/lib/softhsm.
//
// SoftHSM2 reads SOFTHSM2_CONF once, when a process first loads the module,
// and does not see tokens that softhsm2-util creates afterwards. So a test
// binary sets its environment up once, in TestMain, before anything loads the
// module, and creates every token it needs there:
//
//	var env *softhsm.Env
//
//	func TestMain(m *testing.M) {
//		env = softhsm.Setup(m, "dev-agent", "ca")
//		defer env.Close()
//		m.Run()
//	}
//
// Tests then open env.Token("dev-agent").URI. End-to-end tests that start
// other binaries pass env.EnvVar() in the child's environment (the tokens must
// exist before the child starts).
//
// A missing softhsm2-util or module is a failure naming the package to
// install (InstallHint), never a skip.
package softhsm

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// InstallHint is the command that installs what this package needs.
const InstallHint = "apt-get install softhsm2"

// ModuleEnv names an environment variable that, when set, is the module path
// to use instead of searching DefaultModulePaths.
const ModuleEnv = "EDGEPROV_SOFTHSM2_MODULE"

// DefaultModulePaths are where distributions install the SoftHSM2 module.
var DefaultModulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so", // Debian, Ubuntu
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so", // Fedora, RHEL
	"/usr/lib/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// Env is a private SoftHSM2 installation.
type Env struct {
	Dir        string // holds everything below
	ConfigPath string // softhsm2.conf; SOFTHSM2_CONF points here
	TokenDir   string
	ModulePath string // the SoftHSM2 PKCS#11 module
	PIN        string // user PIN of every token (a random test value)
	SOPIN      string // security officer PIN of every token
	PINFile    string // file holding PIN, mode 0600: pin-source=file:<PINFile>
	Tokens     []Token

	removeDir bool
}

// Token is one initialised token.
type Token struct {
	Label  string
	Serial string
	// URI opens the token: pkcs11:token=<label>?module-path=…&pin-source=file:…
	URI string
}

// New creates dir (if needed), writes a SoftHSM2 config whose token directory
// is inside dir, and initialises one token per label with softhsm2-util. It
// does not change this process's environment (see Activate and EnvVar).
func New(dir string, labels ...string) (*Env, error) {
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		return nil, fmt.Errorf("softhsm: softhsm2-util not found (%w); install SoftHSM2: %s", err, InstallHint)
	}
	module, err := findModule()
	if err != nil {
		return nil, err
	}
	if len(labels) == 0 {
		return nil, errors.New("softhsm: New needs at least one token label")
	}
	seen := map[string]bool{}
	for _, l := range labels {
		if l == "" || len(l) > 32 || seen[l] {
			return nil, fmt.Errorf("softhsm: token label %q: want 1 to 32 bytes, no duplicates", l)
		}
		seen[l] = true
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	e := &Env{
		Dir:        dir,
		ConfigPath: filepath.Join(dir, "softhsm2.conf"),
		TokenDir:   filepath.Join(dir, "tokens"),
		ModulePath: module,
		PIN:        randomPIN(),
		SOPIN:      randomPIN(),
		PINFile:    filepath.Join(dir, "user.pin"),
	}
	if err := os.MkdirAll(e.TokenDir, 0o700); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	conf := fmt.Sprintf("# written by edgeprov testenv/softhsm\n"+
		"directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", e.TokenDir)
	if err := os.WriteFile(e.ConfigPath, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	if err := os.WriteFile(e.PINFile, []byte(e.PIN+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	// One at a time: concurrent --init-token --free on one token directory
	// fails ("Could not get info about the token in slot 0").
	for _, label := range labels {
		if _, err := e.util(util, "--init-token", "--free", "--label", label, "--pin", e.PIN, "--so-pin", e.SOPIN); err != nil {
			return nil, err
		}
	}
	serials, err := e.serials(util)
	if err != nil {
		return nil, err
	}
	for _, label := range labels {
		serial, ok := serials[label]
		if !ok {
			return nil, fmt.Errorf("softhsm: token %q was initialised but softhsm2-util --show-slots does not list it", label)
		}
		e.Tokens = append(e.Tokens, Token{Label: label, Serial: serial, URI: e.URI(label)})
	}
	return e, nil
}

// Setup is New in a fresh temporary directory plus Activate, for TestMain
// (m only marks that: SOFTHSM2_CONF is process-wide and must be set before
// any test loads the module). On failure it prints the reason, including
// InstallHint when SoftHSM2 is missing, and exits with status 1. Close removes
// the directory.
func Setup(m *testing.M, labels ...string) *Env {
	dir, err := os.MkdirTemp("", "edgeprov-softhsm-")
	if err == nil {
		var e *Env
		if e, err = New(dir, labels...); err == nil {
			if err = e.Activate(); err == nil {
				e.removeDir = true
				return e
			}
		}
		_ = os.RemoveAll(dir)
	}
	fmt.Fprintf(os.Stderr, "FAIL: SoftHSM2 test environment: %v\n", err)
	os.Exit(1)
	return nil
}

// Activate points this process's SOFTHSM2_CONF at the Env. It only has an
// effect before the process first loads the SoftHSM2 module.
func (e *Env) Activate() error { return os.Setenv("SOFTHSM2_CONF", e.ConfigPath) }

// EnvVar returns "SOFTHSM2_CONF=<config path>", for a child process's
// environment (exec.Cmd.Env).
func (e *Env) EnvVar() string { return "SOFTHSM2_CONF=" + e.ConfigPath }

// Token returns the token labelled label, or panics: tests ask for tokens
// they created.
func (e *Env) Token(label string) Token {
	for _, t := range e.Tokens {
		if t.Label == label {
			return t
		}
	}
	panic(fmt.Sprintf("softhsm: no token %q in this Env (have %v)", label, e.labels()))
}

// URI returns the pkcs11: URI of the token labelled label, with the module
// path and the PIN file.
func (e *Env) URI(label string) string {
	return "pkcs11:token=" + escape(label, "") + e.query()
}

// KeyURI returns the pkcs11: URI of the object labelled object on the token
// labelled token.
func (e *Env) KeyURI(token, object string) string {
	return "pkcs11:token=" + escape(token, "") + ";object=" + escape(object, "") + e.query()
}

func (e *Env) query() string {
	return "?module-path=" + escape(e.ModulePath, "/") + "&pin-source=file:" + escape(e.PINFile, "/")
}

// Close removes the directory if Setup created it.
func (e *Env) Close() error {
	if !e.removeDir {
		return nil
	}
	return os.RemoveAll(e.Dir)
}

func (e *Env) labels() []string {
	var l []string
	for _, t := range e.Tokens {
		l = append(l, t.Label)
	}
	return l
}

// util runs softhsm2-util with this Env's config (never the system one).
func (e *Env) util(path string, args ...string) ([]byte, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = append(withoutConf(os.Environ()), e.EnvVar())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		// Name the command, not its arguments: they hold the PINs.
		return nil, fmt.Errorf("softhsm: softhsm2-util %s: %w: %s%s", args[0], err, stderr.Bytes(), out)
	}
	return out, nil
}

// serials maps token labels to serial numbers from --show-slots.
func (e *Env) serials(util string) (map[string]string, error) {
	out, err := e.util(util, "--show-slots")
	if err != nil {
		return nil, err
	}
	serials := map[string]string{}
	serial := ""
	for _, line := range strings.Split(string(out), "\n") {
		key, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "Slot":
			serial = ""
		case "Serial number":
			serial = val
		case "Label":
			if val != "" {
				serials[val] = serial
			}
		}
	}
	return serials, nil
}

func withoutConf(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "SOFTHSM2_CONF=") {
			out = append(out, kv)
		}
	}
	return out
}

func findModule() (string, error) {
	if p := os.Getenv(ModuleEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("softhsm: %s=%s: %w; install SoftHSM2 (%s) or fix the variable", ModuleEnv, p, err, InstallHint)
		}
		return p, nil
	}
	for _, p := range DefaultModulePaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("softhsm: SoftHSM2 module libsofthsm2.so not found in %s; install SoftHSM2 (%s) or set %s",
		strings.Join(DefaultModulePaths, ", "), InstallHint, ModuleEnv)
}

func randomPIN() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail on Linux
	return hex.EncodeToString(b)
}

// escape percent-encodes all but RFC 3986 unreserved characters and keep.
func escape(s, keep string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~"+keep, c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}
