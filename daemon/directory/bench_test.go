package directory_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/allocation"
	"github.com/edgeprov/edgeprov/daemon/attestation"
	"github.com/edgeprov/edgeprov/daemon/attestation/symkey"
	"github.com/edgeprov/edgeprov/daemon/catalog"
	"github.com/edgeprov/edgeprov/daemon/directory"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/daemon/hub/local"
	"github.com/edgeprov/edgeprov/daemon/registration"
	"github.com/edgeprov/edgeprov/daemon/secrets"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/daemon/store/bolt"
)

// benchN is how many API-made individual enrollments the lookup benchmarks
// run against: 1,000,000 (DPS's limit) unless EDGEPROV_BENCH_ENROLLMENTS says
// otherwise. The store is filled once per benchmark process.
func benchN() int {
	if v, err := strconv.Atoi(os.Getenv("EDGEPROV_BENCH_ENROLLMENTS")); err == nil && v > 0 {
		return v
	}
	return 1_000_000
}

var (
	bigOnce  sync.Once
	bigStore store.Store
	bigDir   *directory.Directory
	bigErr   error
	bigPath  string
)

var benchKey = []byte("benchmark enrollment key, 32 by.")

func benchID(i int) string { return fmt.Sprintf("bench-dev-%07d", i) }

// bigDirectory returns a Directory over a bbolt store holding benchN()
// API-made individual enrollments and 10 prefixed API-made groups, besides the
// test catalog.
func bigDirectory(b testing.TB) (*directory.Directory, store.Store) {
	bigOnce.Do(func() {
		dir, err := os.MkdirTemp("", "edgeprov-bench")
		if err != nil {
			bigErr = err
			return
		}
		bigPath = dir
		st, err := bolt.Open(filepath.Join(dir, "edgeprov.db"), bolt.Options{})
		if err != nil {
			bigErr = err
			return
		}
		n := benchN()
		start := time.Now()
		f, err := catalog.Parse(filepath.Join(dir, "enrollments.yaml"), []byte(fmt.Sprintf(catalogYAML, key1)))
		if err != nil {
			bigErr = err
			return
		}
		box, err := secrets.New([]byte("benchmark data key, thirty-two b"))
		if err != nil {
			bigErr = err
			return
		}
		d, err := directory.New(context.Background(), directory.Config{Scope: scope, Catalog: catalog.NewSource(scope, f), Store: st, Sealer: box})
		if err != nil {
			bigErr = err
			return
		}
		// Filled as imports fill it: bulk creates, keys sealed.
		const chunk = 10_000
		for lo := 0; lo < n; lo += chunk {
			batch := make([]*enrollment.Individual, 0, chunk)
			for i := lo; i < min(lo+chunk, n); i++ {
				e := sym(benchID(i), b64(benchKey))
				e.IoTHubs = []string{"hub-a.bench", "hub-b.bench"}
				e.InitialTwin = &enrollment.InitialTwin{Tags: map[string]any{"line": 7, "site": "w7"}}
				batch = append(batch, e)
			}
			errs, err := d.BulkIndividuals(context.Background(), directory.ModeCreate, batch)
			if err == nil && len(errs) > 0 {
				err = errs[0].Err
			}
			if err != nil {
				bigErr = err
				return
			}
		}
		for i := range 10 {
			g := &enrollment.Group{EnrollmentGroupID: fmt.Sprintf("line-%d", i), RegistrationIDPrefixes: []string{fmt.Sprintf("line%d-", i)},
				Common: sym("x", b64(benchKey)).Common}
			if _, _, err := d.PutGroup(context.Background(), g, ""); err != nil {
				bigErr = err
				return
			}
		}
		fi, _ := os.Stat(filepath.Join(dir, "edgeprov.db"))
		fmt.Fprintf(os.Stderr, "bench: %d enrollments stored in %s, store %d MB\n", n, time.Since(start).Round(time.Millisecond), fi.Size()>>20)
		bigStore, bigDir = st, d
	})
	if bigErr != nil {
		b.Fatal(bigErr)
	}
	return bigDir, bigStore
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bigStore != nil {
		bigStore.Close()
		os.RemoveAll(bigPath)
	}
	os.Exit(code)
}

// BenchmarkLookup is the enrollment lookup of the registration path with
// benchN() API-made enrollments present: the device's own entry read by key
// from bbolt and decoded, or (group devices) a store miss and the in-memory
// group index.
func BenchmarkLookup(b *testing.B) {
	d, _ := bigDirectory(b)
	n := benchN()
	ctx := context.Background()
	b.Run("api-individual", func(b *testing.B) {
		b.ReportAllocs()
		measure(b, func() {
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(rand.Uint64(), 1))
				for pb.Next() {
					id := benchID(r.IntN(n))
					l, err := d.Lookup(ctx, scope, id)
					if err != nil || l.Individual(id) == nil {
						b.Fatalf("lookup %s: %v", id, err)
					}
				}
			})
		})
	})
	b.Run("group-device", func(b *testing.B) {
		b.ReportAllocs()
		measure(b, func() {
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(rand.Uint64(), 2))
				for pb.Next() {
					id := fmt.Sprintf("line%d-%06d", r.IntN(10), r.IntN(n))
					l, err := d.Lookup(ctx, scope, id)
					if err != nil || l.Individual(id) != nil || len(l.SymmetricKeyCandidates(id)) != 1 {
						b.Fatalf("lookup %s: %v", id, err)
					}
				}
			})
		})
	})
	b.Run("catalog-individual", func(b *testing.B) {
		b.ReportAllocs()
		measure(b, func() {
			for range b.N {
				if l, err := d.Lookup(ctx, scope, "cat-dev"); err != nil || l.Individual("cat-dev") == nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// BenchmarkRegisterWith1M is a whole registration (register + poll: lookup,
// SAS verification, allocation, local hub identity, durable record) of
// devices enrolled through the API, with benchN() enrollments present.
func BenchmarkRegisterWith1M(b *testing.B) {
	d, st := bigDirectory(b)
	n := benchN()
	box, err := secrets.New(make([]byte, secrets.KeySize))
	if err != nil {
		b.Fatal(err)
	}
	hubs := &staticHubs{linked: []*hub.Linked{
		{Name: "a", HostName: "hub-a.bench", Weight: 1, ApplyAllocationPolicy: true, Driver: local.New("hub-a.bench", st, box)},
		{Name: "b", HostName: "hub-b.bench", Weight: 1, ApplyAllocationPolicy: true, Driver: local.New("hub-b.bench", st, box)},
	}}
	svc := registration.New(registration.Config{Store: st, Enrollments: d, Hubs: hubs,
		Verifier: &attestation.Verifier{Symkey: &symkey.Verifier{Skew: time.Minute}},
		Policies: map[string]allocation.Policy{"hashed": allocation.Hashed{}, "static": allocation.Static{}},
		Scopes:   []string{scope}})
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(32) // registrations from many devices at once, as a factory floor sends them
	measure(b, func() {
		b.RunParallel(func(pb *testing.PB) {
			r := rand.New(rand.NewPCG(rand.Uint64(), 3))
			for pb.Next() {
				id := benchID(r.IntN(n))
				tok := sas.Build(benchKey, sas.DeviceResource(scope, id), time.Now().Add(time.Hour), "registration")
				op, err := svc.Register(ctx, registration.RegisterRequest{Scope: scope, RegistrationID: id, Authorization: tok})
				if err != nil {
					b.Fatalf("register %s: %v", id, err)
				}
				res, err := svc.OperationStatus(ctx, registration.PollRequest{Scope: scope, RegistrationID: id, OperationID: op.OperationID, Authorization: tok})
				if err != nil || res.Status != "assigned" {
					b.Fatalf("poll %s: %+v %v", id, res, err)
				}
			}
		})
	})
}

type staticHubs struct{ linked []*hub.Linked }

func (h *staticHubs) Linked() []*hub.Linked { return h.linked }

// cpuTime is the process's user+system CPU time: on a shared machine the
// wall-clock ns/op includes waiting for a core, CPU ns/op does not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure reports cpu-ns/op besides the usual ns/op.
func measure(b *testing.B, body func()) {
	b.ResetTimer()
	start := cpuTime()
	body()
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}
