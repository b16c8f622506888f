// Package app is edgeprovd's composition root: it turns the config into a
// store, catalog, verifiers, allocator, hub drivers, the registration service and
// its listeners, and handles signals. It is the only package that imports
// concrete drivers.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgeprov/edgeprov/daemon/config"
	"github.com/edgeprov/edgeprov/daemon/systemd"
)

// ExitError carries a process exit code.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// Exit codes.
const (
	ExitOK     = 0
	ExitFail   = 1
	ExitUsage  = 2
	ExitConfig = 3
)

const usage = `edgeprovd — on-premises IoT device provisioning, wire-compatible with Azure DPS

Usage:
  edgeprovd init  --config FILE [--state-dir D] [--san HOST]...  create the instance once (store, ID scope, TLS, policy key)
  edgeprovd run   --config FILE [--state-dir D] [--ready-file F] serve (the default command)
  edgeprovd ca COMMAND --config FILE ...          CA certificates with proof of possession (edgeprovd ca help)
  edgeprovd backup  --config FILE --out FILE      archive the state (store snapshot, TLS, policy keys), online if edgeprovd runs
  edgeprovd restore --config FILE --from FILE [--force]  restore an archive, with edgeprovd stopped
  edgeprovd check-catalog FILE                    validate an enrollment catalog without serving
  edgeprovd check-config FILE                     validate a daemon config without serving
  edgeprovd version

Run "edgeprovd COMMAND --help" for a command's flags.
`

// Version is set at build time with -ldflags "-X ...app.Version=...".
var Version = "dev"

// Main runs edgeprovd with args (without the program name).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 && (!strings.HasPrefix(args[0], "-") || args[0] == "--version") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "init":
		return cmdInit(ctx, args, stdout, stderr)
	case "run":
		return cmdRun(ctx, args, stderr)
	case "ca":
		return cmdCA(ctx, args, stdout, stderr)
	case "backup":
		return cmdBackup(ctx, args, stdout, stderr)
	case "restore":
		return cmdRestore(ctx, args, stdout, stderr)
	case "check-catalog":
		return cmdCheckCatalog(args, stdout, stderr)
	case "check-config":
		return cmdCheckConfig(args, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "edgeprovd", Version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return &ExitError{ExitUsage, fmt.Errorf("unknown command %q", cmd)}
	}
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("edgeprovd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse maps flag errors to usage exits; --help is a clean exit.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &ExitError{ExitOK, err}
		}
		return &ExitError{ExitUsage, err}
	}
	return nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// newLogger logs to w in the configured format, or, when w is a stderr that
// journald reads (JOURNAL_STREAM), in the journal's native protocol with
// priorities and one field per attribute.
func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	if w == io.Writer(os.Stderr) && systemd.StderrIsJournal() {
		return slog.New(systemd.NewJournalHandler(systemd.JournalOptions{Level: lv, Identifier: "edgeprovd", Fallback: w}))
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// loadConfig loads the config and applies the --state-dir override.
func loadConfig(path, stateDir string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, &ExitError{ExitConfig, err}
	}
	if stateDir != "" {
		abs, err := filepath.Abs(stateDir)
		if err != nil {
			return nil, err
		}
		cfg.StateDir = abs
	}
	return cfg, nil
}

func stateDirFlag(fs *flag.FlagSet) *string {
	return fs.String("state-dir", "", "override the config's stateDir")
}

func configFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("EDGEPROVD_CONFIG")
	if def == "" {
		def = "/etc/edgeprov/edgeprovd.yaml"
	}
	return fs.String("config", def, "daemon config file (env EDGEPROVD_CONFIG)")
}
