package registration_test

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/allocation"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/daemon/registration"
	rt "github.com/edgeprov/edgeprov/daemon/registration/registrationtest"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/testenv/tcpdelay"
)

// registerAll registers ids with 32 devices at a time (group commit) and
// returns each one's outcome.
func registerAll(t *testing.T, f *rt.Fixture, ids []string) map[string]*dpsapi.DeviceRegistrationResult {
	t.Helper()
	out := make(map[string]*dpsapi.DeviceRegistrationResult, len(ids))
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan string)
	var failed atomic.Value
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				tok := deviceToken(f, id)
				op, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: id, Authorization: tok})
				if err == nil {
					op, err = f.Service.OperationStatus(ctx, registration.PollRequest{Scope: rt.Scope, RegistrationID: id, OperationID: op.OperationID, Authorization: tok})
				}
				if err != nil {
					failed.Store(fmt.Errorf("%s: %w", id, err))
					continue
				}
				mu.Lock()
				out[id] = op.RegistrationState
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	return out
}

// within fails unless count is within 5 binomial standard deviations of n*p.
// The hash is deterministic, so this cannot flake.
func within(t *testing.T, what string, count, n int, p float64) {
	t.Helper()
	mean := float64(n) * p
	tol := 5 * math.Sqrt(float64(n)*p*(1-p))
	if math.Abs(float64(count)-mean) > tol {
		t.Errorf("%s: %d of %d, want %.0f ± %.0f", what, count, n, mean, tol)
	} else {
		t.Logf("%s: %d of %d (expected %.0f ± %.0f)", what, count, n, mean, tol)
	}
}

func identityCount(t *testing.T, f *rt.Fixture, hubName string) int {
	t.Helper()
	n := 0
	err := f.Store.View(ctx, func(tx store.Tx) error {
		ids, err := tx.Identities(hubName, "", 0)
		n = len(ids)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestServiceWeightedDistribution registers 10,000 devices through the
// service over hubs of weight 1, 2 and 3, then links a fourth hub of weight 4
// and registers them all again: only the devices the new hub wins move
// (about 4/10), each migrated and removed from the hub it left.
func TestServiceWeightedDistribution(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000 registrations")
	}
	weights := map[string]int{"w1": 1, "w2": 2, "w3": 3}
	f := rt.NewWith(t, rt.Options{Groups: []*enrollment.Group{symGroup("fleet", "fleet-", nil)},
		Hubs: func(f *rt.Fixture) []*hub.Linked {
			return []*hub.Linked{f.LocalHub("w1", "w1.test", 1), f.LocalHub("w2", "w2.test", 2), f.LocalHub("w3", "w3.test", 3)}
		}})
	const n = 10000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("fleet-%05d", i)
	}
	t0 := time.Now()
	before := registerAll(t, f, ids)
	t.Logf("first pass %v", time.Since(t0))
	counts := map[string]int{}
	for _, st := range before {
		counts[st.AssignedHub]++
	}
	for name, w := range weights {
		within(t, name, counts[name+".test"], n, float64(w)/6)
		if got := identityCount(t, f, name+".test"); got != counts[name+".test"] {
			t.Errorf("%s: %d identities, %d devices assigned", name, got, counts[name+".test"])
		}
	}

	f.Hubs.Set(append(f.Hubs.Linked(), f.LocalHub("w4", "w4.test", 4)))
	t0 = time.Now()
	after := registerAll(t, f, ids)
	t.Logf("second pass %v", time.Since(t0))
	moved := 0
	for _, id := range ids {
		a, b := before[id], after[id]
		if a.AssignedHub == b.AssignedHub {
			if b.Substatus != dpsapi.SubstatusInitialAssignment {
				t.Fatalf("%s stayed on %s but its substatus is %s", id, b.AssignedHub, b.Substatus)
			}
			continue
		}
		moved++
		if b.AssignedHub != "w4.test" || b.Substatus != dpsapi.SubstatusDeviceDataMigrated {
			t.Fatalf("%s moved from %s to %s (%s): only moves to the new hub are expected", id, a.AssignedHub, b.AssignedHub, b.Substatus)
		}
	}
	within(t, "moved to the new hub", moved, n, 4.0/10)
	total := 0
	for _, h := range []string{"w1.test", "w2.test", "w3.test", "w4.test"} {
		total += identityCount(t, f, h)
	}
	if total != n || identityCount(t, f, "w4.test") != moved {
		t.Fatalf("%d identities over the four hubs for %d devices (%d on the new hub, %d moved): moved devices were not removed from the hubs they left",
			total, n, identityCount(t, f, "w4.test"), moved)
	}
}

// TestServiceLowestLatency: two hubs, one behind a delaying proxy. Devices
// go to the near hub; when it stops answering its probe, to the other, and a
// device registering again moves there.
func TestServiceLowestLatency(t *testing.T) {
	near := tcpdelay.StartServer(t)
	farUpstream := tcpdelay.StartServer(t)
	far := tcpdelay.StartProxy(t, farUpstream.Addr(), 50*time.Millisecond)
	var hubs []*hub.Linked
	prober := allocation.NewProber(allocation.ProberConfig{Hubs: func() []*hub.Linked { return hubs }, Interval: time.Hour, Timeout: time.Second})
	t.Cleanup(prober.Close)
	f := rt.NewWith(t, rt.Options{
		Groups: []*enrollment.Group{
			symGroup("geo", "geo-", nil), // the service default: lowest latency
			symGroup("spread", "spread-", func(c *enrollment.Common) { c.AllocationPolicy = enrollment.AllocationHashed }),
		},
		DefaultPolicy: enrollment.AllocationGeoLatency,
		Policies:      map[string]allocation.Policy{enrollment.AllocationGeoLatency: allocation.Latency{RTTs: prober, Tolerance: 5 * time.Millisecond}},
		Hubs: func(f *rt.Fixture) []*hub.Linked {
			n, r := f.LocalHub("near", "near.test", 1), f.LocalHub("far", "far.test", 1)
			n.LatencyProbe, r.LatencyProbe = near.Addr(), far.Addr()
			hubs = []*hub.Linked{n, r}
			return hubs
		},
	})
	assigned := func(prefix string, from, to int) map[string]int {
		counts := map[string]int{}
		for i := from; i < to; i++ {
			counts[mustRegister(t, f, fmt.Sprintf("%s-%02d", prefix, i), "").AssignedHub]++
		}
		return counts
	}
	if got := assigned("geo", 0, 30); got["near.test"] != 30 {
		t.Fatalf("with both hubs up: %v, want all on near.test (%+v)", got, prober.Measurements())
	}
	// The per-enrollment policy overrides the default.
	if got := assigned("spread", 0, 30); got["near.test"] == 0 || got["far.test"] == 0 {
		t.Fatalf("hashed enrollment: %v, want both hubs", got)
	}

	near.Close()
	prober.ProbeOnce(ctx)
	if got := assigned("geo", 30, 60); got["far.test"] != 30 {
		t.Fatalf("with near.test down: %v, want all on far.test (%+v)", got, prober.Measurements())
	}
	again := mustRegister(t, f, "geo-00", "")
	if again.AssignedHub != "far.test" || again.Substatus != dpsapi.SubstatusDeviceDataMigrated || identityOn(t, f, "near.test", "geo-00") != nil {
		t.Fatalf("re-registration with near.test down: %+v", again)
	}

	near.Restart(t)
	prober.ProbeOnce(ctx)
	if got := assigned("geo", 60, 70); got["near.test"] != 10 {
		t.Fatalf("after near.test came back: %v", got)
	}
}

// allocFunc is an allocation function behind HTTPS, answering by path.
type allocFunc struct {
	srv      *httptest.Server
	release  chan struct{}
	inflight atomic.Int32
	mu       sync.Mutex
	payloads map[string]string // device payload seen, by registration ID
}

func startAllocFunc(t *testing.T) *allocFunc {
	a := &allocFunc{release: make(chan struct{}), payloads: map[string]string{}}
	a.srv = httptest.NewTLSServer(http.HandlerFunc(a.serve))
	t.Cleanup(func() {
		select {
		case <-a.release:
		default:
			close(a.release)
		}
		a.srv.Close()
	})
	return a
}

func (a *allocFunc) serve(w http.ResponseWriter, r *http.Request) {
	var req allocation.AllocationRequest
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.payloads[req.DeviceRuntimeContext.RegistrationID] = string(req.DeviceRuntimeContext.Payload)
	a.mu.Unlock()
	answer := func() {
		// Always the last hub offered: not what hashing would pick for all.
		fmt.Fprintf(w, `{"iotHubHostName":%q,"initialTwin":{"tags":{"by":"webhook"},"properties":{"desired":{"mode":"%s"}}},"payload":{"gateway":"gw-7"}}`,
			req.LinkedHubs[len(req.LinkedHubs)-1], req.DeviceRuntimeContext.RegistrationID)
	}
	switch r.URL.Path {
	case "/ok":
		answer()
	case "/slow":
		a.inflight.Add(1)
		defer a.inflight.Add(-1)
		select {
		case <-a.release:
			answer()
		case <-r.Context().Done():
			// A function that never answers: no response at all, not
			// the empty 200 a handler that returns would send.
			panic(http.ErrAbortHandler)
		}
	case "/fail":
		http.Error(w, "function crashed", http.StatusInternalServerError)
	case "/garbage":
		fmt.Fprint(w, "<html>502 Bad Gateway</html>")
	case "/wrong-hub":
		fmt.Fprint(w, `{"iotHubHostName":"hub-z.elsewhere.test"}`)
	default:
		http.NotFound(w, r)
	}
}

func customGroup(a *allocFunc, id, path string) *enrollment.Group {
	return symGroup(id, id+"-", func(c *enrollment.Common) {
		c.AllocationPolicy = enrollment.AllocationCustom
		c.CustomAllocationDefinition = &enrollment.CustomAllocationDefinition{WebhookURL: a.srv.URL + path + "?code=k", APIVersion: "2021-10-01"}
	})
}

// TestServiceCustomAllocation: a real HTTPS allocation function decides the
// hub, the twin and the payload; a slow, failing, garbage or wrong-hub answer
// fails that device's registration with a clear error, and nothing blocks the
// other devices.
func TestServiceCustomAllocation(t *testing.T) {
	a := startAllocFunc(t)
	pool := x509.NewCertPool()
	pool.AddCert(a.srv.Certificate())
	slowWebhook := allocation.NewWebhook(allocation.WebhookConfig{Timeout: 200 * time.Millisecond, Retries: 1, Backoff: time.Millisecond, RootCAs: pool})
	t.Cleanup(slowWebhook.Close)
	f := rt.NewWith(t, rt.Options{
		Groups: []*enrollment.Group{customGroup(a, "cok", "/ok"), customGroup(a, "cslow", "/slow"), customGroup(a, "cfail", "/fail"),
			customGroup(a, "cgarbage", "/garbage"), customGroup(a, "cwrong", "/wrong-hub"), symGroup("plain", "plain-", nil)},
		Policies: map[string]allocation.Policy{enrollment.AllocationCustom: slowWebhook},
	})

	t.Run("ok/webhook-decides-hub-twin-payload", func(t *testing.T) {
		st := mustRegister(t, f, "cok-1", `{"model":"toaster"}`)
		if st.AssignedHub != rt.HubB || string(st.Payload) != `{"gateway":"gw-7"}` {
			t.Fatalf("state %+v payload %s", st, st.Payload)
		}
		if a.payloads["cok-1"] != `{"model":"toaster"}` {
			t.Fatalf("the webhook saw payload %q", a.payloads["cok-1"])
		}
		if got := twinOf(t, identityOn(t, f, rt.HubB, "cok-1")); got != canonicalJSON(t, `{"tags":{"by":"webhook"},"properties":{"desired":{"mode":"cok-1"}}}`) {
			t.Fatalf("twin %s", got)
		}
	})
	for _, tt := range []struct {
		name, regID string
		code        int
		msg         string
	}{
		{"fail/slow", "cslow-1", dpsapi.CodeWebhookUnavailable, "no answer within 200ms"},
		{"fail/failing", "cfail-1", dpsapi.CodeWebhookUnavailable, "answered HTTP 500"},
		{"fail/garbage", "cgarbage-1", dpsapi.CodeWebhookResponse, "not a JSON object"},
		{"fail/wrong-hub", "cwrong-1", dpsapi.CodeWebhookResponse, `chose hub "hub-z.elsewhere.test", which is not one of the linked hubs it was offered`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			op, err := register(t, f, tt.regID, deviceToken(f, tt.regID), `{"x":1}`)
			if err != nil {
				t.Fatal(err)
			}
			rs := op.RegistrationState
			if op.Status != dpsapi.StatusFailed || rs.ErrorCode != tt.code || !strings.Contains(rs.ErrorMessage, tt.msg) ||
				!strings.HasPrefix(rs.ErrorMessage, "Custom allocation failed: ") {
				t.Fatalf("status %s, error %d %q; want %d containing %q", op.Status, rs.ErrorCode, rs.ErrorMessage, tt.code, tt.msg)
			}
			if strings.Contains(rs.ErrorMessage, "code=k") {
				t.Fatalf("the message shows the function key: %s", rs.ErrorMessage)
			}
			assertNoRecord(t, f, tt.regID)
			for _, h := range []string{rt.HubA, rt.HubB} {
				if identityOn(t, f, h, tt.regID) != nil {
					t.Fatalf("identity created on %s", h)
				}
			}
		})
	}
}

// TestCustomAllocationDoesNotBlock: while the webhook holds one device's
// registration, other devices — hashed and custom — register.
func TestCustomAllocationDoesNotBlock(t *testing.T) {
	a := startAllocFunc(t)
	pool := x509.NewCertPool()
	pool.AddCert(a.srv.Certificate())
	wh := allocation.NewWebhook(allocation.WebhookConfig{Timeout: time.Minute, RootCAs: pool})
	t.Cleanup(wh.Close)
	f := rt.NewWith(t, rt.Options{
		Groups:   []*enrollment.Group{customGroup(a, "cok", "/ok"), customGroup(a, "cslow", "/slow"), symGroup("plain", "plain-", nil)},
		Policies: map[string]allocation.Policy{enrollment.AllocationCustom: wh},
	})
	slow := make(chan *dpsapi.RegistrationOperationStatus, 1)
	go func() {
		op, err := register(t, f, "cslow-1", deviceToken(f, "cslow-1"), "")
		if err != nil {
			t.Error(err)
		}
		slow <- op
	}()
	for a.inflight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ids := []string{}
	for i := range 20 {
		ids = append(ids, fmt.Sprintf("plain-%02d", i), fmt.Sprintf("cok-%02d", i))
	}
	for id, st := range registerAll(t, f, ids) {
		if st.Status != dpsapi.StatusAssigned {
			t.Fatalf("%s: %+v", id, st)
		}
	}
	select {
	case op := <-slow:
		t.Fatalf("the held registration finished early: %+v", op)
	default:
	}
	close(a.release)
	if op := <-slow; op == nil || op.Status != dpsapi.StatusAssigned {
		t.Fatalf("the held registration, once released: %+v", op)
	}
}

// BenchmarkRegisterPolicy measures register + poll, in process with durable
// bbolt records, under each allocation policy: one device at a time (latency,
// dominated by the commit's fsync) and 64 at a time (throughput, where the
// disk is shared by group commit and the policy's own cost shows). custom
// includes the HTTPS round trip to an allocation function on loopback
// (kept-alive connections). Compare with static for what a policy adds.
func BenchmarkRegisterPolicy(b *testing.B) {
	near := tcpdelay.StartServer(b)
	a := &allocFunc{release: make(chan struct{}), payloads: map[string]string{}}
	a.srv = httptest.NewTLSServer(http.HandlerFunc(a.serve))
	defer a.srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(a.srv.Certificate())
	wh := allocation.NewWebhook(allocation.WebhookConfig{Timeout: 5 * time.Second, RootCAs: pool})
	defer wh.Close()
	var hubs []*hub.Linked
	prober := allocation.NewProber(allocation.ProberConfig{Hubs: func() []*hub.Linked { return hubs }, Interval: time.Hour, Timeout: time.Second})
	defer prober.Close()

	for _, bc := range []string{"static", "hashed", "geoLatency", "custom", "static/parallel", "hashed/parallel", "geoLatency/parallel", "custom/parallel"} {
		policy, mode, _ := strings.Cut(bc, "/")
		parallel := mode == "parallel"
		b.Run(bc, func(b *testing.B) {
			g := symGroup("bench", "bench-", func(c *enrollment.Common) {
				c.AllocationPolicy = policy
				switch policy {
				case enrollment.AllocationStatic:
					c.IoTHubs = []string{rt.HubA}
				case enrollment.AllocationCustom:
					c.CustomAllocationDefinition = &enrollment.CustomAllocationDefinition{WebhookURL: a.srv.URL + "/ok", APIVersion: "2021-10-01"}
				}
			})
			f := rt.NewWith(b, rt.Options{Groups: []*enrollment.Group{g},
				Policies: map[string]allocation.Policy{
					enrollment.AllocationGeoLatency: allocation.Latency{RTTs: prober, Tolerance: 5 * time.Millisecond},
					enrollment.AllocationCustom:     wh},
				Hubs: func(f *rt.Fixture) []*hub.Linked {
					x, y := f.LocalHub("a", rt.HubA, 1), f.LocalHub("b", rt.HubB, 1)
					x.LatencyProbe, y.LatencyProbe = near.Addr(), near.Addr()
					hubs = []*hub.Linked{x, y}
					return hubs
				}})
			prober.ProbeOnce(ctx)
			var n atomic.Int64
			one := func() error {
				id := fmt.Sprintf("bench-%d", n.Add(1))
				tok := deviceToken(f, id)
				op, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: id, Authorization: tok})
				if err != nil {
					return err
				}
				st, err := f.Service.OperationStatus(ctx, registration.PollRequest{Scope: rt.Scope, RegistrationID: id, OperationID: op.OperationID, Authorization: tok})
				if err != nil || st.Status != dpsapi.StatusAssigned {
					return fmt.Errorf("%+v, %w", st, err)
				}
				return nil
			}
			if parallel {
				// Many devices at once, as in a factory: group commit
				// amortizes the disk, so what the policy costs shows.
				b.SetParallelism(32)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := one(); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "registrations/s")
				return
			}
			for b.Loop() {
				if err := one(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
