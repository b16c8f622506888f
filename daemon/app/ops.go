package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/edgeprov/edgeprov/daemon/backup"
	"github.com/edgeprov/edgeprov/daemon/config"
	"github.com/edgeprov/edgeprov/daemon/localadmin"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/daemon/store/bolt"
)

// embeddedOnly refuses backup and restore for a store edgeprovd does not own.
func embeddedOnly(cfg *config.Config, cmd string) error {
	if cfg.Store.Type != "bolt" {
		return &ExitError{ExitConfig, fmt.Errorf("%s covers the embedded store; back up a %s store with its own tools (pg_dump) and the state directory's tls/ and policies/ as files", cmd, cfg.Store.Type)}
	}
	return nil
}

// layout is what a backup holds of a state directory: the store, the TLS
// material, the policy keys, and the data key sealing the store's secrets
// when it lives there (the default).
func layout(cfg *config.Config) backup.Layout {
	l := backup.Layout{
		StateDir: cfg.Path(cfg.StateDir),
		Store:    filepath.Base(cfg.StorePath()),
		Dirs:     []string{filepath.Base(cfg.TLSDir()), filepath.Base(cfg.PolicyDir())},
	}
	if k := cfg.SecretsKeyPath(); filepath.Dir(k) == l.StateDir {
		l.Files = append(l.Files, filepath.Base(k))
	}
	return l
}

// outsideNote says what a backup cannot hold, to be kept some other way.
func outsideNote(cfg *config.Config) string {
	switch {
	case cfg.Secrets.KeyURI != "":
		return "\nnote: the data key sealing the store's secrets is in a PKCS#11 token (" + cfg.Secrets.KeyURI + "): the backup cannot restore them without that token\n"
	case filepath.Dir(cfg.SecretsKeyPath()) != cfg.Path(cfg.StateDir):
		return "\nnote: the data key sealing the store's secrets, " + cfg.SecretsKeyPath() + ", is outside the state directory: back it up with the archive\n"
	}
	return "\n"
}

// Backup implements localadmin.Daemon: the archive of this daemon's state,
// its store read in one transaction while registrations go on.
func (d *Daemon) Backup(w io.Writer) error {
	snap, ok := d.store.(backup.Snapshotter)
	if !ok {
		return errors.New("this store cannot be backed up by edgeprovd (use the database's own tools)")
	}
	return backup.Write(w, layout(d.cfg), snap, backup.Manifest{
		IDScope: d.scope, SchemaVersion: store.SchemaVersion, CreatedAt: time.Now().UTC(), Edgeprovd: Version,
	})
}

// verifyStore is backup.VerifyFunc over bbolt: consistency check, schema
// version this build reads, and the instance. The summary goes to *sum.
func verifyStore(ctx context.Context, sums ...*bolt.Summary) backup.VerifyFunc {
	return func(path string) (string, error) {
		st, err := bolt.Open(path, bolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			return "", err
		}
		defer st.Close()
		sum, err := st.Check(ctx)
		if err != nil {
			return "", err
		}
		for _, s := range sums {
			*s = *sum
		}
		return sum.IDScope, nil
	}
}

func cmdBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("backup", stderr)
	cfgPath := configFlag(fs)
	stateDir := stateDirFlag(fs)
	out := fs.String("out", "", "write the backup archive to this file (required; it holds private keys: kept 0600)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return &ExitError{ExitUsage, errors.New("backup: --out FILE is required")}
	}
	cfg, err := loadConfig(*cfgPath, *stateDir)
	if err != nil {
		return err
	}
	if err := embeddedOnly(cfg, "edgeprovd backup"); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), "."+filepath.Base(*out)+".*")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	how := "online, from the running edgeprovd"
	err = localadmin.NewClient(cfg.AdminSocketPath()).Backup(ctx, tmp)
	if errors.Is(err, localadmin.ErrNotRunning) {
		how = "offline, from the store file"
		err = offlineBackup(cfg, tmp)
	}
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	// Check what was written before it replaces anything: extract it beside
	// itself and run the store's consistency check.
	var sum bolt.Summary
	m, err := verifyArchive(ctx, layout(cfg), tmp.Name(), &sum)
	if err != nil {
		return fmt.Errorf("backup written but does not verify: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	st, _ := os.Stat(*out)
	fmt.Fprintf(stdout, "backup of ID scope %s written to %s (%s): %d bytes, %d files, store schema %d, consistency check passed, %d registration records%s",
		m.IDScope, *out, how, st.Size(), len(m.Files), sum.SchemaVersion, sum.Records, outsideNote(cfg))
	return nil
}

// offlineBackup reads the store of a stopped daemon. bbolt's shared lock
// conflicts with a running daemon's exclusive one, hence the short timeout.
func offlineBackup(cfg *config.Config, w io.Writer) error {
	st, err := bolt.Open(cfg.StorePath(), bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("%w (a running edgeprovd is backed up through %s)", err, cfg.AdminSocketPath())
	}
	defer st.Close()
	inst, err := st.Instance(context.Background())
	if err != nil {
		return fmt.Errorf("instance: %w", err)
	}
	return backup.Write(w, layout(cfg), st, backup.Manifest{
		IDScope: inst.IDScope, SchemaVersion: store.SchemaVersion, CreatedAt: time.Now().UTC(), Edgeprovd: Version,
	})
}

func verifyArchive(ctx context.Context, l backup.Layout, path string, sum *bolt.Summary) (*backup.Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dir := path + ".verify"
	defer os.RemoveAll(dir)
	return backup.Extract(f, dir, l, verifyStore(ctx, sum))
}

func cmdRestore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("restore", stderr)
	cfgPath := configFlag(fs)
	stateDir := stateDirFlag(fs)
	from := fs.String("from", "", "the backup archive (required)")
	force := fs.Bool("force", false, "replace an existing state, moving it into pre-restore-<time>/ in the state directory")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *from == "" {
		return &ExitError{ExitUsage, errors.New("restore: --from FILE is required")}
	}
	cfg, err := loadConfig(*cfgPath, *stateDir)
	if err != nil {
		return err
	}
	if err := embeddedOnly(cfg, "edgeprovd restore"); err != nil {
		return err
	}
	f, err := os.Open(*from)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	var sum bolt.Summary
	m, err := backup.Restore(f, layout(cfg), verifyStore(ctx, &sum), backup.RestoreOptions{Force: *force})
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	fmt.Fprintf(stdout, "restored ID scope %s into %s: store schema %d, consistency check passed, %d registration records, %d operations, %d hub identities (backed up %s by edgeprovd %s)\n",
		m.IDScope, cfg.Path(cfg.StateDir), sum.SchemaVersion, sum.Records, sum.Operations, sum.Identities, m.CreatedAt.Format(time.RFC3339), m.Edgeprovd)
	return nil
}
