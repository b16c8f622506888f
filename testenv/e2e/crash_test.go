package e2e_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/loadgen"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/daemon/store/bolt"
)

// SIGKILL the daemon in the middle of a few thousand registrations, restart,
// re-run the devices that did not finish: every device that heard "assigned"
// has a record, no identity exists twice, and records and identities agree.
func TestCrashLosesNothing(t *testing.T) {
	t.Parallel()
	const devices = 2000
	d := newDaemon(t)
	d.Start(t)
	pem, err := os.ReadFile(d.CACert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := loadgen.Config{IDScope: d.IDScope, GroupKey: groupKey, IDPrefix: "line-crash-", Devices: devices, Concurrency: 32,
		TLS: &tls.Config{RootCAs: pool, ServerName: "localhost"}}

	heard := make([]atomic.Bool, devices)
	var assigned atomic.Int64
	run := func(addr string, todo []int, kill func()) {
		cfg.Addrs = []string{addr}
		var wg sync.WaitGroup
		next := atomic.Int64{}
		for range cfg.Concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					k := int(next.Add(1)) - 1
					if k >= len(todo) {
						return
					}
					i := todo[k]
					if _, err := loadgen.Register(context.Background(), &cfg, i); err == nil {
						heard[i].Store(true)
						if assigned.Add(1) == 600 && kill != nil {
							kill()
						}
					}
				}
			}()
		}
		wg.Wait()
	}
	cfg.PollWait = 0
	all := make([]int, devices)
	for i := range all {
		all[i] = i
	}
	var once sync.Once
	run(d.DeviceAddr, all, func() { once.Do(func() { d.Kill(t) }) })
	before := int(assigned.Load())
	if before >= devices {
		t.Fatalf("the daemon was not killed mid-run (%d assigned)", before)
	}

	d.Start(t)
	var todo []int
	for i := range devices {
		if !heard[i].Load() {
			todo = append(todo, i)
		}
	}
	run(d.DeviceAddr, todo, nil)
	for i := range devices {
		if !heard[i].Load() {
			t.Fatalf("device %d never provisioned after the restart", i)
		}
	}
	d.Stop(t)

	st, err := bolt.Open(filepath.Join(d.StateDir, "edgeprov.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = st.View(context.Background(), func(tx store.Tx) error {
		recs, err := tx.Records(d.IDScope, "", 0)
		if err != nil {
			return err
		}
		byID := map[string]*store.Record{}
		for _, r := range recs {
			byID[r.RegistrationID] = r
		}
		for i := range devices {
			if byID[fmt.Sprintf("line-crash-%d", i)] == nil {
				return fmt.Errorf("device %d heard assigned but has no record", i)
			}
		}
		seen := map[string]string{}
		for _, h := range []string{"hub-a.e2e.local", "hub-b.e2e.local"} {
			ids, err := tx.Identities(h, "", 0)
			if err != nil {
				return err
			}
			for _, id := range ids {
				if other, dup := seen[id.DeviceID]; dup {
					return fmt.Errorf("device %s has identities on %s and %s", id.DeviceID, other, h)
				}
				seen[id.DeviceID] = h
				if r := byID[id.DeviceID]; r == nil || r.AssignedHub != h {
					return fmt.Errorf("identity of %s on %s disagrees with its record %+v", id.DeviceID, h, r)
				}
			}
		}
		for id, r := range byID {
			if seen[id] != r.AssignedHub {
				return fmt.Errorf("record of %s names %s but the identity is on %q", id, r.AssignedHub, seen[id])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed after %d of %d devices heard assigned; all %d consistent after restart", before, devices, devices)
}
