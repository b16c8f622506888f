// Package cli is edgeprov-agent's command line: it reads the config, builds the
// credential and the client, and maps outcomes to exit codes.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
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
  edgeprov-agent provision --config agent.yaml [--force]
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
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &ExitError{ExitUsage, err}
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return &ExitError{ExitConfig, err}
	}
	stateFile := cfg.Path(cfg.StateFile)
	if !*force {
		prev, err := state.Load(stateFile)
		switch {
		case err == nil && prev.Status == "assigned" && prev.RegistrationID == cfg.RegistrationID && prev.IDScope == cfg.IDScope:
			return printResult(stdout, prev, true)
		case err != nil && !errors.Is(err, state.ErrNone):
			fmt.Fprintf(stderr, "edgeprov-agent: ignoring unreadable result file: %v\n", err)
		}
	}

	signer, err := buildSigner(cfg)
	if err != nil {
		return &ExitError{ExitConfig, err}
	}
	httpc, err := buildHTTP(cfg)
	if err != nil {
		return &ExitError{ExitConfig, err}
	}
	host, _ := cfg.HostPort()
	var payload json.RawMessage
	if cfg.Payload != nil {
		payload, _ = json.Marshal(cfg.Payload)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.TimeoutDuration())
	defer cancel()
	c := &provision.Client{Host: host, IDScope: cfg.IDScope, RegistrationID: cfg.RegistrationID, HTTP: httpc, Signer: signer}
	op, err := c.Register(ctx, payload)
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

func buildSigner(cfg *config.Config) (credential.SASSigner, error) {
	sk := cfg.Attestation.SymmetricKey
	if sk.GroupKeyFile != "" {
		return credential.FromGroupKeyFile(cfg.Path(sk.GroupKeyFile), cfg.RegistrationID)
	}
	return credential.FromKeyFile(cfg.Path(sk.KeyFile))
}

func buildHTTP(cfg *config.Config) (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
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
	tr := &http.Transport{TLSClientConfig: tc, TLSHandshakeTimeout: 15 * time.Second, ResponseHeaderTimeout: 30 * time.Second}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}, nil
}
