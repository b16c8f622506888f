package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/daemon/store/postgres"
	"github.com/edgeprov/edgeprov/daemon/store/storetest"
	pgtest "github.com/edgeprov/edgeprov/testenv/postgres"
)

func TestConformance(t *testing.T) {
	srv := pgtest.Start(t)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) store.Store {
		dsn := srv.CreateSchema(t, fmt.Sprintf("conf%d", n.Add(1)))
		s, err := postgres.Open(context.Background(), dsn, 8)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestMigrationsIdempotentAndVersionChecked(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.CreateDB(t, "mig")
	ctx := context.Background()
	// Replicas starting together: both migrate under the advisory lock.
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			s, err := postgres.Open(ctx, dsn, 2)
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	s, err := postgres.Open(ctx, dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// A database migrated by a newer edgeprovd is refused with a clear message.
	bump, err := postgres.Open(ctx, dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := bump.ExecForTest(ctx, "INSERT INTO schema_migrations (version) VALUES (99)"); err != nil {
		t.Fatal(err)
	}
	bump.Close()
	if _, err := postgres.Open(ctx, dsn, 2); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("open of a newer schema: %v", err)
	}
}
