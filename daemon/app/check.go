package app

import (
	"fmt"
	"io"

	"github.com/edgeprov/edgeprov/daemon/catalog"
	"github.com/edgeprov/edgeprov/daemon/config"
)

func cmdCheckCatalog(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check-catalog", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return &ExitError{ExitUsage, fmt.Errorf("usage: edgeprovd check-catalog FILE")}
	}
	f, err := catalog.Load(fs.Arg(0))
	if err != nil {
		return &ExitError{ExitConfig, err}
	}
	fmt.Fprintf(stdout, "%s: ok (%d individual enrollments, %d enrollment groups)\n", f.Path, len(f.Individuals), len(f.Groups))
	return nil
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check-config", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return &ExitError{ExitUsage, fmt.Errorf("usage: edgeprovd check-config FILE")}
	}
	cfg, err := config.Load(fs.Arg(0))
	if err != nil {
		return &ExitError{ExitConfig, err}
	}
	if cfg.Catalog != "" {
		if _, err := catalog.Load(cfg.Path(cfg.Catalog)); err != nil {
			return &ExitError{ExitConfig, err}
		}
	}
	fmt.Fprintf(stdout, "%s: ok (%d linked hubs)\n", fs.Arg(0), len(cfg.LinkedHubs))
	return nil
}
