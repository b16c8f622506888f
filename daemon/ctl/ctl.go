// Package ctl is edgeprovctl's command line. Commands that talk to a daemon go
// through its service API client only; the ones here are local computations an
// operator needs on a factory floor.
package ctl

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
)

// ExitError carries an exit code.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

const usage = `edgeprovctl — operate edgeprov

Usage:
  edgeprovctl keys derive --group-key-file F --registration-id ID
      print the device key derived from a symmetric-key group key
  edgeprovctl sas --key-file F (--resource R | --scope S --registration-id ID) [--ttl 1h] [--key-name N]
      mint a SharedAccessSignature token
  edgeprovctl bench --addr HOST:PORT --ca-file F --id-scope S --group-key-file F [--devices N] [--concurrency C] [--poll-wait D] [--ceiling]
      simulate N devices of a symmetric-key group, each over a fresh TLS connection; print a JSON summary
  edgeprovctl version

Keys are read from files, never from the command line. Run "edgeprovctl COMMAND --help" for flags.
`

// Version is set at build time.
var Version = "dev"

// Main runs edgeprovctl.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &ExitError{2, errors.New("no command")}
	}
	switch args[0] {
	case "keys":
		if len(args) < 2 || args[1] != "derive" {
			fmt.Fprint(stderr, usage)
			return &ExitError{2, errors.New("usage: edgeprovctl keys derive --group-key-file F --registration-id ID")}
		}
		return keysDerive(args[2:], stdout, stderr)
	case "sas":
		return mintSAS(args[1:], stdout, stderr)
	case "bench":
		return bench(ctx, args[1:], stdout, stderr)
	case "bench-ceiling-server":
		return ceilingServer(args[1:], stdout)
	case "version":
		fmt.Fprintln(stdout, "edgeprovctl", Version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return &ExitError{2, fmt.Errorf("unknown command %q", args[0])}
}

func flags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("edgeprovctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &ExitError{0, err}
		}
		return &ExitError{2, err}
	}
	return nil
}

func keysDerive(args []string, stdout, stderr io.Writer) error {
	fs := flags("keys derive", stderr)
	keyFile := fs.String("group-key-file", "", "file holding the base64 group key")
	regID := fs.String("registration-id", "", "the device's registration ID")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := dpsapi.ValidateRegistrationID(*regID); err != nil {
		return &ExitError{2, err}
	}
	k, err := readKey(*keyFile)
	if err != nil {
		return &ExitError{3, err}
	}
	fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(sas.DeriveDeviceKey(k, *regID)))
	return nil
}

func mintSAS(args []string, stdout, stderr io.Writer) error {
	fs := flags("sas", stderr)
	keyFile := fs.String("key-file", "", "file holding the base64 key (device key or policy key)")
	resource := fs.String("resource", "", "resource URI (sr), e.g. a host name for a service policy")
	scope := fs.String("scope", "", "ID scope, for a device token")
	regID := fs.String("registration-id", "", "registration ID, for a device token")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime")
	keyName := fs.String("key-name", "", `skn: "registration" for devices (the default with --scope), a policy name for the service API`)
	if err := parse(fs, args); err != nil {
		return err
	}
	res, skn := *resource, *keyName
	if res == "" {
		if err := dpsapi.ValidateIDScope(*scope); err != nil {
			return &ExitError{2, fmt.Errorf("give --resource, or --scope and --registration-id: %w", err)}
		}
		if err := dpsapi.ValidateRegistrationID(*regID); err != nil {
			return &ExitError{2, err}
		}
		res = sas.DeviceResource(*scope, *regID)
		if skn == "" {
			skn = sas.DeviceKeyName
		}
	}
	if *ttl <= 0 {
		return &ExitError{2, errors.New("--ttl must be positive")}
	}
	k, err := readKey(*keyFile)
	if err != nil {
		return &ExitError{3, err}
	}
	fmt.Fprintln(stdout, sas.Build(k, res, time.Now().Add(*ttl), skn))
	return nil
}

func readKey(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("a key file is required (keys are never taken from the command line)")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	return sas.DecodeKey(line)
}
