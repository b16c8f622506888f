package bolt

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/store"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edgeprov.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestPingWedged(t *testing.T) {
	s, _ := openTemp(t)
	if err := s.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- s.Update(context.Background(), func(store.Tx) error { <-release; return nil }) }()
	time.Sleep(50 * time.Millisecond) // the batch holds the writer lock
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := s.Ping(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Ping on a wedged store: %v", err)
		}
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The stuck write finishes and later pings commit again.
	if err := s.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotAndCheck(t *testing.T) {
	s, path := openTemp(t)
	ctx := context.Background()
	if err := s.CreateInstance(ctx, &store.Instance{IDScope: "0ne00000042", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(tx store.Tx) error {
		return tx.PutRecord(&store.Record{Scope: "0ne00000042", RegistrationID: "dev-1", Status: "assigned"})
	}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	err := s.Snapshot(func(size int64, w io.WriterTo) error {
		n, err := w.WriteTo(&buf)
		if err == nil && n != size {
			t.Errorf("wrote %d bytes, announced %d", n, size)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	os.WriteFile(copyPath, buf.Bytes(), 0o600)
	c, err := Open(copyPath, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sum, err := c.Check(ctx)
	if err != nil || sum.IDScope != "0ne00000042" || sum.Records != 1 || sum.SchemaVersion != store.SchemaVersion {
		t.Fatalf("check of the snapshot: %+v %v", sum, err)
	}

	// A read-only open waits for the writer's lock, then gives up.
	_, err = Open(path, Options{ReadOnly: true, Timeout: 100 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("read-only open of a locked store: %v", err)
	}
}
