package app

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/config"
	"github.com/edgeprov/edgeprov/daemon/pki"
	"github.com/edgeprov/edgeprov/daemon/store"
)

// OwnerPolicy is the shared access policy with every right, as in DPS.
const OwnerPolicy = config.OwnerPolicy

func cmdInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("init", stderr)
	cfgPath := configFlag(fs)
	stateDir := stateDirFlag(fs)
	var sans multiFlag
	fs.Var(&sans, "san", "extra host name or IP for the server certificate (repeatable)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath, *stateDir)
	if err != nil {
		return err
	}
	hosts := append(append([]string{}, cfg.Device.HostNames...), sans...)
	res, err := Init(ctx, cfg, hosts)
	if err != nil {
		return err
	}
	host := hosts[0]
	if cfg.Service != nil {
		// edgeprovctl reaches another port through HostName; the stock Azure
		// SDKs only speak to 443 (give them HostName without the port).
		if _, port, err := net.SplitHostPort(cfg.Service.Listen); err == nil && port != "443" && port != "0" {
			host = net.JoinHostPort(host, port)
		}
	}
	fmt.Fprintf(stdout, "edgeprov instance created\n  ID scope:          %s\n  CA certificate:    %s\n  store:             %s\n  secrets data key:  %s\n  service policy key: %s\n  service connection string: HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s\n",
		res.IDScope, cfg.CACertPath(), cfg.StorePath(), res.SecretsKey, res.PolicyKeyPath, host, OwnerPolicy, res.policyKey)
	return nil
}

// InitResult is what Init made.
type InitResult struct {
	IDScope       string
	PolicyKeyPath string
	// SecretsKey says where the data key sealing the store's secrets is: a
	// file, or the PKCS#11 key it is derived with.
	SecretsKey string
	policyKey  string
}

// Init creates the instance: TLS material, the owner policy key, then the
// store's instance record last, so an interrupted init can simply be re-run and
// a finished one is never overwritten.
func Init(ctx context.Context, cfg *config.Config, hosts []string) (*InitResult, error) {
	if err := os.MkdirAll(cfg.TLSDir(), 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	if err := os.MkdirAll(cfg.PolicyDir(), 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	st, where, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if inst, err := st.Instance(ctx); err == nil {
		return nil, &ExitError{ExitFail, fmt.Errorf("an instance already exists in %s (ID scope %s); refusing to overwrite it", where, inst.IDScope)}
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}

	ca, err := pki.NewCA("edgeprov device endpoint CA", 10*365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	cert, key, err := ca.IssueServer(hosts, 2*365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	for _, w := range []func() error{
		func() error { return pki.WriteKey(cfg.CAKeyPath(), ca.Key) },
		func() error { return pki.WriteCert(cfg.CACertPath(), ca.Cert) },
		func() error { return pki.WriteKey(cfg.ServerKeyPath(), key) },
		func() error { return pki.WriteCert(cfg.ServerCertPath(), cert, ca.Cert) },
	} {
		if err := w(); err != nil {
			return nil, fmt.Errorf("write TLS material: %w", err)
		}
	}
	// The data key before the instance record: an init that fails here can
	// simply be run again.
	var cl closers
	_, err = openSecrets(ctx, cfg, true, slog.New(slog.DiscardHandler), &cl)
	if cerr := cl.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("secrets data key: %w", err)
	}
	var k [32]byte
	rand.Read(k[:])
	policyKey := base64.StdEncoding.EncodeToString(k[:])
	keyPath := filepath.Join(cfg.PolicyDir(), OwnerPolicy+".key")
	if err := pki.WriteFileAtomic(keyPath, []byte(policyKey+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write policy key: %w", err)
	}
	var b [4]byte
	rand.Read(b[:])
	scope := "0ne" + strings.ToUpper(hex.EncodeToString(b[:]))
	if err := st.CreateInstance(ctx, &store.Instance{IDScope: scope, CreatedAt: time.Now().UTC()}); err != nil {
		return nil, fmt.Errorf("create instance: %w", err)
	}
	secretsKey := cfg.SecretsKeyPath()
	if cfg.Secrets.KeyURI != "" {
		secretsKey = "derived in the token (" + cfg.Secrets.KeyURI + ")"
	}
	return &InitResult{IDScope: scope, PolicyKeyPath: keyPath, SecretsKey: secretsKey, policyKey: policyKey}, nil
}
