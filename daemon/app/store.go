package app

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/edgeprov/edgeprov/daemon/config"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/daemon/store/bolt"
	"github.com/edgeprov/edgeprov/daemon/store/postgres"
)

// openStore opens the configured store; where names it in messages.
func openStore(ctx context.Context, cfg *config.Config) (st store.Store, where string, err error) {
	switch cfg.Store.Type {
	case "postgres":
		p := cfg.Store.Postgres
		dsn := p.DSN
		if p.DSNFile != "" {
			b, err := os.ReadFile(cfg.Path(p.DSNFile))
			if err != nil {
				return nil, "", fmt.Errorf("store.postgres.dsnFile: %w", err)
			}
			dsn = strings.TrimSpace(string(b))
		}
		s, err := postgres.Open(ctx, dsn, p.MaxConns)
		return s, "the PostgreSQL store", err
	default:
		s, err := bolt.Open(cfg.StorePath(), bolt.Options{})
		return s, cfg.StorePath(), err
	}
}
