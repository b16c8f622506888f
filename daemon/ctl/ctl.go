// Package ctl is edgeprovctl's command line. Commands that talk to a daemon go
// through its service API client (daemon/adminclient) only; keys derive and
// sas are local computations an operator needs on a factory floor.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeprov/edgeprov/daemon/adminclient"
)

// ExitError carries an exit code.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// Exit codes.
const (
	ExitOK          = 0
	ExitFail        = 1
	ExitUsage       = 2
	ExitConfig      = 3 // a key file, connection string or input file is unusable
	ExitRefused     = 4 // the service refused the request
	ExitUnreachable = 5
)

// Version is set at build time.
var Version = "dev"

func usageErr(format string, args ...any) error {
	return &ExitError{ExitUsage, fmt.Errorf(format, args...)}
}

// Main runs edgeprovctl.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return nil
	}
	var ee *ExitError
	switch {
	case errors.As(err, &ee):
		return err
	case strings.HasPrefix(err.Error(), "unknown command"), strings.HasPrefix(err.Error(), "unknown flag"),
		strings.HasPrefix(err.Error(), "unknown shorthand flag"), strings.Contains(err.Error(), "flag needs an argument"),
		strings.HasPrefix(err.Error(), "invalid argument"), strings.HasPrefix(err.Error(), "required flag"):
		return &ExitError{ExitUsage, err}
	}
	return classify(err)
}

// classify maps a client error to an exit code.
func classify(err error) error {
	var ae *adminclient.Error
	if errors.As(err, &ae) {
		return &ExitError{ExitRefused, err}
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return err
	}
	if strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "no such host") ||
		strings.Contains(err.Error(), "i/o timeout") || strings.Contains(err.Error(), "certificate") {
		return &ExitError{ExitUnreachable, err}
	}
	return &ExitError{ExitFail, err}
}

// globals are the flags every command that talks to a daemon shares.
type globals struct {
	connString, connFile, caFile, address, output string
	timeout                                       time.Duration
	stdout, stderr                                io.Writer
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "edgeprovctl",
		Short: "Operate edgeprov: enrollments, registrations, the local hub registry, keys and health",
		Long: `edgeprovctl operates an edgeprovd through its service API (the DPS service REST API).

Connection: the service connection string that "edgeprovd init" printed, from
--connection-string-file, $EDGEPROV_CONNECTION_STRING_FILE, $EDGEPROV_CONNECTION_STRING
or --connection-string (the key is never required on the command line), and
the daemon's CA certificate from --ca-file or $EDGEPROV_CA_FILE.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &ExitError{ExitUsage, err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.connString, "connection-string", "", "service connection string (prefer the file or the environment: it holds a key)")
	pf.StringVar(&g.connFile, "connection-string-file", "", "file holding the service connection string (env EDGEPROV_CONNECTION_STRING_FILE)")
	pf.StringVar(&g.caFile, "ca-file", "", "PEM CA certificate the daemon's TLS certificate chains to (env EDGEPROV_CA_FILE)")
	pf.StringVar(&g.address, "address", "", "host:port to dial instead of the connection string's HostName")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&g.timeout, "timeout", 5*time.Minute, "timeout of one request")
	root.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp
	})

	root.AddCommand(enrollmentCmd(g), groupCmd(g), registrationCmd(g), deviceCmd(g), importCmd(g), checkCmd(g),
		keysCmd(g), sasCmd(g), benchCmd(g), versionCmd(g))
	root.AddCommand(&cobra.Command{Use: "bench-ceiling-server", Hidden: true, DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error { return ceilingServer(args, g.stdout, g.stderr) }})
	return root
}

// benchCmd is the load generator; it parses its own flags (edgeprovctl bench --help).
func benchCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:                "bench --addr HOST:PORT[,…] --ca-file F --id-scope S (--group-key-file F | --x509-ca-cert F --x509-ca-key F) [--transport https|mqtt] [--devices N] [--concurrency C] [--rate R] [--poll-wait D] [--ceiling]",
		Short:              "Simulate N devices of a symmetric-key or X.509 group over HTTPS or MQTT; print a JSON summary",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return bench(cmd.Context(), args, g.stdout, g.stderr)
		},
	}
}

// flags and parse serve the commands that use the flag package (bench).
func flags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("edgeprovctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &ExitError{ExitOK, err}
		}
		return &ExitError{ExitUsage, err}
	}
	return nil
}

// client builds the service API client from the connection flags.
func (g *globals) client() (*adminclient.Client, error) {
	cs := g.connString
	file := g.connFile
	if file == "" {
		file = os.Getenv("EDGEPROV_CONNECTION_STRING_FILE")
	}
	switch {
	case cs != "":
	case file != "":
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, &ExitError{ExitConfig, fmt.Errorf("connection string file: %w", err)}
		}
		cs = strings.TrimSpace(string(data))
	default:
		cs = os.Getenv("EDGEPROV_CONNECTION_STRING")
	}
	if cs == "" {
		return nil, usageErr("no connection string: give --connection-string-file, or set EDGEPROV_CONNECTION_STRING(_FILE)")
	}
	ca := g.caFile
	if ca == "" {
		ca = os.Getenv("EDGEPROV_CA_FILE")
	}
	c, err := adminclient.New(cs, adminclient.Options{CAFile: ca, Address: g.address, Timeout: g.timeout})
	if err != nil {
		return nil, &ExitError{ExitConfig, err}
	}
	return c, nil
}

func (g *globals) checkOutput() error {
	if g.output != "table" && g.output != "json" {
		return usageErr("--output must be table or json, not %q", g.output)
	}
	return nil
}

func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErr("usage: %s %s", cmd.CommandPath(), names)
		}
		return nil
	}
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) != 0 {
		return usageErr("%s takes no arguments (got %q)", cmd.CommandPath(), args)
	}
	return nil
}

func versionCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "version", Short: "Print the version", Args: noArgs, RunE: func(cmd *cobra.Command, _ []string) error {
		fmt.Fprintln(g.stdout, "edgeprovctl", Version)
		return nil
	}}
}
