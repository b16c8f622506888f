package app

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/edgeprov/edgeprov/daemon/cacert"
	"github.com/edgeprov/edgeprov/daemon/store"
)

const caUsage = `edgeprovd ca — CA certificates for enrollment groups' caReferences, with proof of possession

Usage (on the store: the embedded one with edgeprovd stopped; a running
edgeprovd sees the changes when it starts or reloads with SIGHUP):
  edgeprovd ca add               --config F NAME CERT.pem   upload a CA certificate (unverified)
  edgeprovd ca verification-code --config F NAME            issue a code to sign
  edgeprovd ca verify            --config F NAME PROOF.pem  present a certificate with subject CN=<code>
                                                            signed by the CA's key: the CA becomes usable
  edgeprovd ca list              --config F
  edgeprovd ca delete            --config F NAME

CA certificates declared in the catalog (certificateAuthorities) need none of this.
`

func cmdCA(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, caUsage)
		if len(args) == 0 {
			return &ExitError{ExitUsage, errors.New("no ca command")}
		}
		return nil
	}
	sub, args := args[0], args[1:]
	nargs := map[string]int{"add": 2, "verification-code": 1, "verify": 2, "list": 0, "delete": 1}
	want, ok := nargs[sub]
	if !ok {
		fmt.Fprint(stderr, caUsage)
		return &ExitError{ExitUsage, fmt.Errorf("unknown ca command %q", sub)}
	}
	fs := newFlags("ca "+sub, stderr)
	cfgPath := configFlag(fs)
	stateDir := stateDirFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != want {
		fmt.Fprint(stderr, caUsage)
		return &ExitError{ExitUsage, fmt.Errorf("ca %s takes %d arguments, got %d", sub, want, fs.NArg())}
	}
	cfg, err := loadConfig(*cfgPath, *stateDir)
	if err != nil {
		return err
	}
	st, where, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	inst, err := st.Instance(ctx)
	if err != nil {
		return fmt.Errorf("no instance in %s: %w", where, err)
	}
	var svc cacert.Service = &cacert.Manager{Store: st}
	scope := inst.IDScope
	readArg := func(i int) (string, error) {
		data, err := os.ReadFile(fs.Arg(i))
		if err != nil {
			return "", &ExitError{ExitUsage, err}
		}
		return string(data), nil
	}
	switch sub {
	case "add":
		pem, err := readArg(1)
		if err != nil {
			return err
		}
		c, err := svc.Add(ctx, scope, fs.Arg(0), pem)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "added CA certificate %q (%s), not verified: run 'edgeprovd ca verification-code %s'\n", c.Name, subject(c), c.Name)
	case "verification-code":
		c, err := svc.VerificationCode(ctx, scope, fs.Arg(0), "")
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", c.VerificationCode)
		fmt.Fprintf(stderr, "sign a certificate with subject CN=%s using the key of %q, then run 'edgeprovd ca verify %s PROOF.pem' before %s\n",
			c.VerificationCode, c.Name, c.Name, c.VerificationCodeExpiry.Format(time.RFC3339))
	case "verify":
		pem, err := readArg(1)
		if err != nil {
			return err
		}
		c, err := svc.Verify(ctx, scope, fs.Arg(0), pem)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "CA certificate %q verified: groups may name it in caReferences\n", c.Name)
	case "list":
		cs, err := svc.List(ctx, scope)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tVERIFIED\tSUBJECT\tEXPIRES")
		for _, c := range cs {
			exp := ""
			if cert, err := x509.ParseCertificate(c.Certificate); err == nil {
				exp = cert.NotAfter.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%v\t%s\t%s\n", c.Name, c.Verified, subject(c), exp)
		}
		return tw.Flush()
	case "delete":
		if err := svc.Delete(ctx, scope, fs.Arg(0), ""); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted CA certificate %q\n", fs.Arg(0))
	}
	return nil
}

func subject(c *store.CACertificate) string {
	cert, err := x509.ParseCertificate(c.Certificate)
	if err != nil {
		return "?"
	}
	return cert.Subject.String()
}
