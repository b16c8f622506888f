package bolt

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	bbolt "go.etcd.io/bbolt"
)

func openDB(t *testing.T) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	return db
}

// Concurrent writes share commits; a failing or panicking write gets its own
// error and leaves nothing behind, and the others all land.
func TestCommitterIsolatesFailures(t *testing.T) {
	db := openDB(t)
	c := newCommitter(db, 16)
	const n = 200
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = c.update(func(tx *bbolt.Tx) error {
				if err := tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%03d", i), []byte("v")); err != nil {
					return err
				}
				switch i % 50 {
				case 7:
					return fmt.Errorf("refused %d", i)
				case 13:
					panic("bad write")
				}
				return nil
			})
		})
	}
	wg.Wait()
	c.close()
	for i, err := range errs {
		var want string
		switch i % 50 {
		case 7:
			want = fmt.Sprintf("refused %d", i)
		case 13:
			want = "panicked: bad write"
		}
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("write %d: error %v, want %q", i, err, want)
		}
	}
	db.View(func(tx *bbolt.Tx) error {
		for i := range n {
			got := tx.Bucket([]byte("b")).Get(fmt.Appendf(nil, "k%03d", i)) != nil
			if want := i%50 != 7 && i%50 != 13; got != want {
				t.Errorf("key %d stored %v, want %v", i, got, want)
			}
		}
		return nil
	})
	if err := c.update(func(*bbolt.Tx) error { return nil }); !errors.Is(err, errClosed) {
		t.Fatalf("write after close: %v, want errClosed", err)
	}
}

// Writes that arrive during a commit are batched into the next one, so under
// load the commits are far fewer than the writes.
func TestCommitterBatches(t *testing.T) {
	db := openDB(t)
	c := newCommitter(db, 1000)
	defer c.close()
	const n = 400
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := c.update(func(tx *bbolt.Tx) error {
				return tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%d", i), []byte("v"))
			}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	commits := c.commits.Load()
	t.Logf("%d writes in %d commits", n, commits)
	if commits > n/2 {
		t.Fatalf("%d writes took %d commits: not batched", n, commits)
	}
}
