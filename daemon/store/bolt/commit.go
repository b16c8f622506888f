package bolt

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	bbolt "go.etcd.io/bbolt"
)

// errClosed answers a write after Close.
var errClosed = errors.New("store closed")

// committer is group commit without a timer: one goroutine runs every write
// queued while the previous commit was in its fsync in a single transaction.
// An idle store commits a lone write at once; a busy one grows its batches to
// fill the commit time. (bbolt's Batch waits a fixed delay instead, which
// under load still commits a handful of writes per fsync.)
//
// As with bbolt's Batch, a function may run more than once: when one fails,
// the transaction is rolled back, the failing function runs again alone (its
// error is then its own) and the rest are retried together.
type committer struct {
	db      *bbolt.DB
	max     int
	commits atomic.Int64 // transactions run, for tests and figures

	mu      sync.Mutex
	queue   []*write
	closed  bool
	wake    chan struct{} // buffered 1: there is work
	stopped chan struct{} // closed when the loop has drained and exited
}

type write struct {
	fn   func(*bbolt.Tx) error
	done chan error
}

func newCommitter(db *bbolt.DB, maxBatch int) *committer {
	c := &committer{db: db, max: maxBatch, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	go c.loop()
	return c
}

// update runs fn in a shared transaction and returns once it is durable (or
// failed). It does not give up on a cancelled context: a write handed over
// may already be committed, and its caller must hear so.
func (c *committer) update(fn func(*bbolt.Tx) error) error {
	w := &write{fn: fn, done: make(chan error, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errClosed
	}
	c.queue = append(c.queue, w)
	select { // under the lock: close cannot close wake in between
	case c.wake <- struct{}{}:
	default:
	}
	c.mu.Unlock()
	return <-w.done
}

// close commits what is queued and stops the loop.
func (c *committer) close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.wake)
	}
	c.mu.Unlock()
	<-c.stopped
}

func (c *committer) loop() {
	defer close(c.stopped)
	for {
		_, open := <-c.wake
		for {
			c.mu.Lock()
			n := min(len(c.queue), c.max)
			batch := c.queue[:n:n]
			c.queue = c.queue[n:]
			if len(c.queue) == 0 {
				c.queue = nil // let the backing array go
			}
			c.mu.Unlock()
			if n == 0 {
				break
			}
			c.commit(batch)
		}
		if !open {
			return
		}
	}
}

func (c *committer) commit(batch []*write) {
	for len(batch) > 0 {
		failed := -1
		c.commits.Add(1)
		err := c.db.Update(func(tx *bbolt.Tx) error {
			for i, w := range batch {
				if err := safely(w.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			// Committed together, or the commit itself failed for all.
			for _, w := range batch {
				w.done <- err
			}
			return
		}
		solo := batch[failed]
		c.commits.Add(1)
		solo.done <- c.db.Update(func(tx *bbolt.Tx) error { return safely(solo.fn, tx) })
		batch = append(batch[:failed:failed], batch[failed+1:]...)
	}
}

// safely turns a panicking write into that write's error, so one bad request
// cannot take the others' commit (or the daemon) down with it.
func safely(fn func(*bbolt.Tx) error, tx *bbolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store write panicked: %v", p)
		}
	}()
	return fn(tx)
}
