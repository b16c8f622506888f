// Package cli is edgeprov-agent's command line: it reads the config, builds the
// credential and the client, and maps outcomes to exit codes.
package cli

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/edgeprov/edgeprov/agent/config"
	"github.com/edgeprov/edgeprov/agent/credential"
	"github.com/edgeprov/edgeprov/agent/provision"
	"github.com/edgeprov/edgeprov/agent/state"
)

// Exit codes, documented in README.md.
const (
	ExitOK          = 0 // assigned now, or already provisioned
	ExitFail        = 1 // unexpected error
	ExitUsage       = 2 // bad command line
	ExitConfig      = 3 // bad config, key or trust bundle
	ExitRefused     = 4 // the service said no: unknown device, bad key, disabled, failed
	ExitUnreachable = 5 // could not talk to the service (network, TLS, 5xx, timeout)
)

// ExitError carries an exit code.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// Version is set at build time.
var Version = "dev"

const usage = `edgeprov-agent — provisions this device against edgeprov (or Azure DPS)

Usage:
  edgeprov-agent provision  --config agent.yaml [--force] [--log-level debug]
  edgeprov-agent keygen     --config agent.yaml [--for csr|x509] [--kind ecdsa-p256|rsa-2048] [--out FILE]
  edgeprov-agent keygen     --key-uri URI | --key-file FILE  --cn NAME [--kind K] [--out FILE]
                            create the key (in the PKCS#11 token, or a file) if missing and
                            write a CSR for it (PEM; stdout by default)
  edgeprov-agent import-key --config agent.yaml --key-file FILE
                            move the device's symmetric key into the token attestation.symmetricKey.keyURI names
  edgeprov-agent version

Exit codes: 0 provisioned, 2 usage, 3 config, 4 refused by the service, 5 service unreachable, 1 other.
`

// Main runs the agent.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &ExitError{ExitUsage, errors.New("no command")}
	}
	switch args[0] {
	case "provision":
		return cmdProvision(ctx, args[1:], stdout, stderr)
	case "keygen":
		return cmdKeygen(ctx, args[1:], stdout, stderr)
	case "import-key":
		return cmdImportKey(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "edgeprov-agent", Version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return &ExitError{ExitUsage, fmt.Errorf("unknown command %q", args[0])}
}

func cmdProvision(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgeprov-agent provision", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "/etc/edgeprov/agent.yaml", "agent config file")
	force := fs.Bool("force", false, "register again even if a result is cached")
	logLevel := fs.String("log-level", "warn", "log level on stderr: debug (phase timings), info, warn, error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &ExitError{ExitUsage, err}
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*logLevel)); err != nil {
		return &ExitError{ExitUsage, fmt.Errorf("--log-level: %w", err)}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return &ExitError{ExitConfig, err}
	}
	timings := &provision.Timings{}
	c := &provision.Client{IDScope: cfg.IDScope, RegistrationID: cfg.RegistrationID, Log: log, Timings: timings}
	var tpmCred *credential.TPM
	if t := cfg.Attestation.TPM; cfg.Attestation.Type == "tpm" {
		err := c.Time("tpm", "open TPM, read EK, SRK and EK certificate", func() error {
			var err error
			tpmCred, err = credential.OpenTPM(t.Path, t.Handle(), log)
			return err
		})
		if err != nil {
			return &ExitError{ExitConfig, fmt.Errorf("TPM %s: %w", t.Path, err)}
		}
		defer tpmCred.Close()
		c.TPM = tpmCred
		if c.RegistrationID == "" {
			c.RegistrationID = tpmCred.RegistrationID()
		}
	}
	stateFile := cfg.Path(cfg.StateFile)
	if !*force {
		prev, err := state.Load(stateFile)
		switch {
		case err == nil && prev.Status == "assigned" && prev.RegistrationID == c.RegistrationID && prev.IDScope == cfg.IDScope && haveChain(cfg):
			return printResult(stdout, prev, true)
		case err != nil && !errors.Is(err, state.ErrNone):
			fmt.Fprintf(stderr, "edgeprov-agent: ignoring unreadable result file: %v\n", err)
		}
	}

	var cl closers
	defer cl.Close()
	if c.Signer, err = buildSigner(ctx, cfg, &cl); err != nil {
		return &ExitError{ExitConfig, err}
	}
	clientCert, err := buildClientCert(ctx, cfg, &cl)
	if err != nil {
		return &ExitError{ExitConfig, err}
	}
	tc, err := buildTLS(cfg, clientCert)
	if err != nil {
		return &ExitError{ExitConfig, err}
	}
	var csrKey crypto.Signer
	if r := cfg.CSR; r != nil {
		k, closer, created, err := credential.CreateSigner(ctx, cfg.Path(r.KeyFile), r.KeyURI, r.KeyType)
		if err != nil {
			return &ExitError{ExitConfig, fmt.Errorf("csr key: %w", err)}
		}
		cl = append(cl, closer)
		if created {
			fmt.Fprintln(stderr, "edgeprov-agent: created the operational key for the CSR")
		}
		if c.CSR, err = credential.CSR(k, c.RegistrationID); err != nil {
			return &ExitError{ExitFail, err}
		}
		csrKey = k
	}
	c.Host, _ = cfg.HostPort()
	switch cfg.TransportName() {
	case config.TransportMQTT:
		c.Transport = &provision.MQTT{Host: c.Host, TLS: tc, IDScope: cfg.IDScope, RegistrationID: c.RegistrationID,
			ClientVersion: "edgeprov-agent/" + Version}
	default:
		c.HTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: tc, TLSHandshakeTimeout: 15 * time.Second, ResponseHeaderTimeout: 30 * time.Second},
			Timeout: 60 * time.Second}
	}
	var payload json.RawMessage
	if cfg.Payload != nil {
		payload, _ = json.Marshal(cfg.Payload)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.TimeoutDuration())
	defer cancel()
	start := time.Now()
	op, err := c.Register(ctx, payload)
	log.Debug("provisioning timings", "total", time.Since(start).String(), "split", timings)
	if err != nil {
		var refused *provision.RefusedError
		if errors.As(err, &refused) {
			return &ExitError{ExitRefused, err}
		}
		return &ExitError{ExitUnreachable, err}
	}
	rs := op.RegistrationState
	res := &state.Result{ProvisioningHost: cfg.ProvisioningHost, IDScope: cfg.IDScope, RegistrationID: rs.RegistrationID,
		DeviceID: rs.DeviceID, AssignedHub: rs.AssignedHub, Status: op.Status, Substatus: rs.Substatus, Payload: rs.Payload,
		OperationID: op.OperationID, ProvisionedAt: time.Now().UTC()}
	if csrKey != nil {
		chainFile := cfg.Path(cfg.CSR.ChainFile)
		if err := saveChain(chainFile, rs.IssuedCertificateChain, csrKey); err != nil {
			return &ExitError{ExitFail, err}
		}
		res.IssuedCertificateFile = chainFile
	}
	if tpmCred != nil {
		res.TPM = &state.TPMKey{Path: tpmCred.Path(), HubKeyHandle: fmt.Sprintf("0x%08x", tpmCred.Handle())}
	}
	if err := state.Save(stateFile, res); err != nil {
		return &ExitError{ExitFail, fmt.Errorf("write result: %w", err)}
	}
	return printResult(stdout, res, false)
}

func printResult(w io.Writer, r *state.Result, cached bool) error {
	out := struct {
		*state.Result
		Cached bool `json:"cached"`
	}{r, cached}
	data, _ := json.MarshalIndent(out, "", "  ")
	fmt.Fprintln(w, string(data))
	return nil
}

// closers are the PKCS#11 modules a command opened.
type closers []io.Closer

func (c closers) Close() {
	for i := len(c) - 1; i >= 0; i-- {
		c[i].Close()
	}
}

// buildSigner returns the SAS signer of symmetric-key attestation (nil for
// X.509).
func buildSigner(ctx context.Context, cfg *config.Config, cl *closers) (credential.SASSigner, error) {
	sk := cfg.Attestation.SymmetricKey
	switch {
	case sk == nil:
		return nil, nil
	case sk.KeyURI != "":
		k, c, err := credential.OpenHSMKey(ctx, sk.KeyURI)
		if err != nil {
			return nil, err
		}
		*cl = append(*cl, c)
		return k, nil
	case sk.GroupKeyFile != "":
		return credential.FromGroupKeyFile(cfg.Path(sk.GroupKeyFile), cfg.RegistrationID)
	}
	return credential.FromKeyFile(cfg.Path(sk.KeyFile))
}

// buildClientCert returns the TLS client certificate of X.509 attestation.
func buildClientCert(ctx context.Context, cfg *config.Config, cl *closers) (*tls.Certificate, error) {
	x := cfg.Attestation.X509
	if x == nil {
		return nil, nil
	}
	key, c, err := credential.OpenSigner(ctx, cfg.Path(x.KeyFile), x.KeyURI)
	if err != nil {
		return nil, err
	}
	*cl = append(*cl, c)
	tc, err := credential.TLSCertificate(cfg.Path(x.CertFile), key)
	if err != nil {
		return nil, err
	}
	return &tc, nil
}

// haveChain reports whether the issued chain a CSR asks for is on disk (or no
// CSR is configured).
func haveChain(cfg *config.Config) bool {
	if cfg.CSR == nil {
		return true
	}
	_, err := os.Stat(cfg.Path(cfg.CSR.ChainFile))
	return err == nil
}

// saveChain checks the issued chain against the key and writes it as PEM.
func saveChain(path string, b64 []string, key crypto.Signer) error {
	var chain []*x509.Certificate
	var out []byte
	for i, s := range b64 {
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return fmt.Errorf("issuedCertificateChain[%d] is not base64: %w", i, err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("issuedCertificateChain[%d]: %w", i, err)
		}
		chain = append(chain, c)
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	if err := credential.CheckIssuedChain(chain, key); err != nil {
		return err
	}
	if err := state.WriteFile(path, out, 0o644); err != nil {
		return fmt.Errorf("write issued certificate chain: %w", err)
	}
	return nil
}

// buildTLS is the client TLS config of either transport: the trust bundle, and
// the device certificate for X.509 attestation.
func buildTLS(cfg *config.Config, clientCert *tls.Certificate) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if clientCert != nil {
		tc.Certificates = []tls.Certificate{*clientCert}
	}
	if cfg.TrustBundle != "" {
		pem, err := os.ReadFile(cfg.Path(cfg.TrustBundle))
		if err != nil {
			return nil, fmt.Errorf("trust bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("trust bundle %s holds no certificate", cfg.TrustBundle)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

func cmdKeygen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgeprov-agent keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "agent config file")
	target := fs.String("for", "", "with --config: the key of csr (default when the config has csr) or x509 (attestation.x509)")
	kind := fs.String("kind", "", "key to create: ecdsa-p256 (default) or rsa-2048")
	keyURI := fs.String("key-uri", "", "without --config: pkcs11: URI of the key")
	keyFile := fs.String("key-file", "", "without --config: PEM key file")
	cn := fs.String("cn", "", "without --config: the CSR's subject CN (the registration ID)")
	out := fs.String("out", "", "write the CSR (PEM) here instead of stdout")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &ExitError{ExitUsage, err}
	}
	if (*cfgPath == "") == (*keyURI == "" && *keyFile == "") || (*keyURI != "" && *keyFile != "") {
		return &ExitError{ExitUsage, errors.New("keygen: give --config, or one of --key-uri and --key-file with --cn")}
	}
	if *cfgPath != "" {
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			return &ExitError{ExitConfig, err}
		}
		*cn = cfg.RegistrationID
		t := *target
		if t == "" {
			t = "x509"
			if cfg.CSR != nil {
				t = "csr"
			}
		}
		switch {
		case t == "csr" && cfg.CSR != nil:
			*keyURI, *keyFile = cfg.CSR.KeyURI, cfg.Path(cfg.CSR.KeyFile)
			if *kind == "" {
				*kind = cfg.CSR.KeyType
			}
		case t == "x509" && cfg.Attestation.X509 != nil:
			*keyURI, *keyFile = cfg.Attestation.X509.KeyURI, cfg.Path(cfg.Attestation.X509.KeyFile)
		default:
			return &ExitError{ExitConfig, fmt.Errorf("keygen --for %s: the config has no %s key", t, t)}
		}
	} else if *cn == "" {
		return &ExitError{ExitUsage, errors.New("keygen: --cn is required with --key-uri or --key-file")}
	}
	key, c, created, err := credential.CreateSigner(ctx, *keyFile, *keyURI, *kind)
	if err != nil {
		return &ExitError{ExitConfig, err}
	}
	defer c.Close()
	der, err := credential.CSR(key, *cn)
	if err != nil {
		return &ExitError{ExitFail, err}
	}
	pemCSR := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	if *out != "" {
		if err := state.WriteFile(*out, pemCSR, 0o644); err != nil {
			return &ExitError{ExitFail, err}
		}
	} else {
		stdout.Write(pemCSR)
	}
	what := "existing"
	if created {
		what = "new"
	}
	fmt.Fprintf(stderr, "edgeprov-agent: CSR for CN=%s with the %s key\n", *cn, what)
	return nil
}

func cmdImportKey(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgeprov-agent import-key", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "/etc/edgeprov/agent.yaml", "agent config file")
	keyFile := fs.String("key-file", "", "the device's base64 symmetric key")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &ExitError{ExitUsage, err}
	}
	if *keyFile == "" {
		return &ExitError{ExitUsage, errors.New("import-key: --key-file is required")}
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return &ExitError{ExitConfig, err}
	}
	sk := cfg.Attestation.SymmetricKey
	if sk == nil || sk.KeyURI == "" {
		return &ExitError{ExitConfig, errors.New("import-key: the config has no attestation.symmetricKey.keyURI")}
	}
	if err := credential.ImportSymmetricKey(ctx, *keyFile, sk.KeyURI); err != nil {
		return &ExitError{ExitFail, err}
	}
	fmt.Fprintf(stdout, "imported the symmetric key into the token; %s may now be deleted\n", *keyFile)
	return nil
}
