package app

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/edgeprov/edgeprov/daemon/config"
	"github.com/edgeprov/edgeprov/daemon/issuance"
	"github.com/edgeprov/edgeprov/daemon/secrets"
	"github.com/edgeprov/edgeprov/hsm"
	"github.com/edgeprov/edgeprov/hsm/keyfile"
)

// closers closes what the daemon opened (PKCS#11 modules), last first.
type closers []io.Closer

func (c *closers) add(x io.Closer) { *c = append(*c, x) }

func (c closers) Close() error {
	var errs []error
	for i := len(c) - 1; i >= 0; i-- {
		errs = append(errs, c[i].Close())
	}
	return errors.Join(errs...)
}

// loadSigner reads a private key from a PEM file or finds it in a PKCS#11
// token (the module is added to cl).
func loadSigner(ctx context.Context, keyFile, keyURI string, log *slog.Logger, cl *closers) (crypto.Signer, error) {
	if keyURI != "" {
		m, err := hsm.OpenURI(ctx, keyURI, hsm.WithLogger(log))
		if err != nil {
			return nil, err
		}
		cl.add(m)
		return m.SignerFromURI(ctx, m.URI())
	}
	return keyfile.LoadKey(keyFile)
}

// buildIssuer loads the issuing CA, or returns nil when none is configured.
func buildIssuer(ctx context.Context, cfg *config.Config, log *slog.Logger, cl *closers) (*issuance.Issuer, error) {
	ca := cfg.IssuingCA
	if ca == nil {
		return nil, nil
	}
	chain, err := keyfile.LoadCerts(cfg.Path(ca.CertFile))
	if err != nil {
		return nil, fmt.Errorf("issuing CA certificate: %w", err)
	}
	key, err := loadSigner(ctx, cfg.Path(ca.KeyFile), ca.KeyURI, log, cl)
	if err != nil {
		return nil, fmt.Errorf("issuing CA key: %w", err)
	}
	iss, err := issuance.NewIssuer(ca.Name, chain, key)
	if err != nil {
		return nil, err
	}
	log.Info("certificate issuance enabled", "issuingCA", chain[0].Subject.String(), "name", iss.Name, "hsm", ca.KeyURI != "")
	return iss, nil
}

// secretsKeyBits is the size of an HSM HMAC key init creates for secrets.
const secretsKeyBits = 256

// openSecrets returns the Sealer for secrets in the store. init creates a
// missing data key file or HSM key. At run time a missing key file is created
// only for the embedded store (a daemon upgraded from a version without one):
// replicas sharing PostgreSQL must share the key file init made, and a new
// key there, or a new HSM key anywhere, would orphan every sealed secret.
func openSecrets(ctx context.Context, cfg *config.Config, init bool, log *slog.Logger, cl *closers) (secrets.Sealer, error) {
	if uri := cfg.Secrets.KeyURI; uri != "" {
		m, err := hsm.OpenURI(ctx, uri, hsm.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("secrets key: %w", err)
		}
		cl.add(m)
		k, err := m.HMACKeyFromURI(ctx, m.URI())
		if init && errors.Is(err, hsm.ErrKeyNotFound) {
			label := m.URI().Object
			if label == "" {
				return nil, fmt.Errorf("secrets key: %w (and the URI has no object=<label> to create it under)", err)
			}
			k, err = m.GenerateHMACKey(ctx, label, secretsKeyBits)
		}
		if err != nil {
			return nil, fmt.Errorf("secrets key: %w", err)
		}
		return secrets.FromMAC(k.Sum)
	}
	path := cfg.SecretsKeyPath()
	if init || cfg.Store.Type == "bolt" {
		switch err := secrets.CreateKeyFile(path); {
		case err == nil:
			log.Info("created the secrets data key file", "file", path)
		case !errors.Is(err, os.ErrExist):
			return nil, err
		}
	}
	b, err := secrets.LoadKeyFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (replicas sharing a store need the data key file edgeprovd init made: copy it here, mode 0600)", err)
	}
	return b, err
}
