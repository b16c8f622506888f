package allocation_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/allocation"
	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/testenv/tcpdelay"
)

// rtts is a fixed table of measurements by hub name; absent means down.
type rtts map[string]time.Duration

func (r rtts) RTT(_ context.Context, h *hub.Linked) (time.Duration, bool) {
	d, ok := r[h.Name]
	return d, ok
}

func TestLatencyPolicy(t *testing.T) {
	near, far, other := linked("near", 1), linked("far", 1), linked("other", 1)
	heavy := linked("heavy", 1000)
	tests := []struct {
		name  string
		hubs  []*hub.Linked
		rtts  rtts
		tol   time.Duration
		want  []string // hubs that may receive devices; nil: ErrNoHub
		share bool     // the wanted hubs must all receive some devices
	}{
		{"ok/fastest-wins", []*hub.Linked{near, far}, rtts{"near": 2 * time.Millisecond, "far": 40 * time.Millisecond}, 5 * time.Millisecond, []string{"near"}, false},
		{"ok/down-hub-skipped", []*hub.Linked{near, far}, rtts{"far": 40 * time.Millisecond}, 5 * time.Millisecond, []string{"far"}, false},
		{"ok/ties-within-tolerance-share", []*hub.Linked{near, far, other}, rtts{"near": 2 * time.Millisecond, "other": 6 * time.Millisecond, "far": 40 * time.Millisecond}, 5 * time.Millisecond, []string{"near", "other"}, true},
		{"ok/zero-tolerance-no-tie", []*hub.Linked{near, other}, rtts{"near": 2 * time.Millisecond, "other": 3 * time.Millisecond}, 0, []string{"near"}, false},
		{"ok/exact-tie-shares-even-without-tolerance", []*hub.Linked{near, other}, rtts{"near": 2 * time.Millisecond, "other": 2 * time.Millisecond}, 0, []string{"near", "other"}, true},
		{"ok/weights-apply-within-a-tie", []*hub.Linked{near, heavy}, rtts{"near": 2 * time.Millisecond, "heavy": 3 * time.Millisecond}, 5 * time.Millisecond, []string{"near", "heavy"}, true},
		{"fail/all-down", []*hub.Linked{near, far}, rtts{}, 5 * time.Millisecond, nil, false},
		{"fail/no-candidates", nil, rtts{}, 5 * time.Millisecond, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := allocation.Latency{RTTs: tt.rtts, Tolerance: tt.tol}
			counts := map[string]int{}
			for _, id := range regIDs()[:2000] {
				h, err := p.Allocate(context.Background(), allocation.Request{RegistrationID: id, Candidates: tt.hubs})
				if tt.want == nil {
					if !errors.Is(err, allocation.ErrNoHub) {
						t.Fatalf("Allocate = %v, %v; want ErrNoHub", h, err)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				counts[h.Name]++
			}
			for name := range counts {
				if !contains(tt.want, name) {
					t.Fatalf("devices went to %s; want only %v (%v)", name, tt.want, counts)
				}
			}
			if tt.share {
				for _, w := range tt.want {
					if counts[w] == 0 {
						t.Fatalf("%s received no device in a tie: %v", w, counts)
					}
				}
			}
			if tt.name == "ok/weights-apply-within-a-tie" && counts["heavy"] < 1900 {
				t.Fatalf("weight 1000 against 1 got only %d of 2000", counts["heavy"])
			}
		})
	}
}

func contains(l []string, s string) bool {
	for _, v := range l {
		if v == s {
			return true
		}
	}
	return false
}

func newProber(hubs []*hub.Linked) *allocation.Prober {
	return allocation.NewProber(allocation.ProberConfig{Hubs: func() []*hub.Linked { return hubs },
		Interval: time.Hour, Timeout: time.Second})
}

func measurement(t *testing.T, p *allocation.Prober, addr string) allocation.Measurement {
	t.Helper()
	for _, m := range p.Measurements() {
		if m.Addr == addr {
			return m
		}
	}
	t.Fatalf("no measurement of %s", addr)
	return allocation.Measurement{}
}

func TestProber(t *testing.T) {
	fast := tcpdelay.StartServer(t)
	slowUpstream := tcpdelay.StartServer(t)
	const delay = 100 * time.Millisecond
	proxy := tcpdelay.StartProxy(t, slowUpstream.Addr(), delay)

	// A server that accepts and never says anything.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	// A port nobody listens on.
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()

	hubs := []*hub.Linked{
		{Name: "fast", LatencyProbe: fast.Addr(), Weight: 1},
		{Name: "slow", LatencyProbe: proxy.Addr(), Weight: 1},
		{Name: "silent", LatencyProbe: silent.Addr().String(), Weight: 1},
		{Name: "closed", LatencyProbe: closedAddr, Weight: 1},
	}
	const timeout = time.Second
	p := allocation.NewProber(allocation.ProberConfig{Hubs: func() []*hub.Linked { return hubs }, Interval: time.Hour, Timeout: timeout})
	defer p.Close()
	p.ProbeOnce(context.Background())

	f, s := measurement(t, p, hubs[0].LatencyProbe), measurement(t, p, hubs[1].LatencyProbe)
	// The proxy holds the ClientHello and the answer for delay each: the
	// slow hub's RTT is at least 2×delay; the fast one is far below.
	if !f.Up || !s.Up || s.RTT < 2*delay || f.RTT > s.RTT-delay {
		t.Fatalf("fast %+v, slow (behind a 2×%v proxy) %+v", f, delay, s)
	}
	t.Logf("fast %v, slow %v", f.RTT, s.RTT)
	if m := measurement(t, p, hubs[2].LatencyProbe); !m.Up || m.RTT > timeout/2 {
		t.Errorf("silent server: %+v, want up with its connect time", m)
	}
	if m := measurement(t, p, closedAddr); m.Up || m.Err == "" {
		t.Errorf("closed port: %+v, want down with a reason", m)
	}

	// The policy over the prober: devices go to the fast hub.
	pol := allocation.Latency{RTTs: p, Tolerance: 5 * time.Millisecond}
	pick := func() string {
		h, err := pol.Allocate(context.Background(), allocation.Request{RegistrationID: "dev-1", Candidates: hubs[:2]})
		if err != nil {
			t.Fatal(err)
		}
		return h.Name
	}
	if got := pick(); got != "fast" {
		t.Fatalf("picked %s, want fast", got)
	}
	// The fast hub stops answering: it is skipped.
	fast.Close()
	p.ProbeOnce(context.Background())
	if got := pick(); got != "slow" {
		t.Fatalf("with fast down picked %s, want slow", got)
	}
	// It recovers on the same address: it is used again.
	fast.Restart(t)
	p.ProbeOnce(context.Background())
	if got := pick(); got != "fast" {
		t.Fatalf("after recovery picked %s, want fast", got)
	}
}

func TestProberLifecycle(t *testing.T) {
	srv := tcpdelay.StartServer(t)
	hubs := []*hub.Linked{{Name: "a", LatencyProbe: srv.Addr(), Weight: 1}}

	t.Run("ok/first-use-starts-and-waits-for-a-round", func(t *testing.T) {
		p := newProber(hubs)
		defer p.Close()
		if len(p.Measurements()) != 0 {
			t.Fatal("probed before first use")
		}
		if _, ok := p.RTT(context.Background(), hubs[0]); !ok {
			t.Fatalf("first RTT: not measured: %+v", p.Measurements())
		}
	})
	t.Run("ok/removed-hubs-are-forgotten", func(t *testing.T) {
		current := hubs
		p := allocation.NewProber(allocation.ProberConfig{Hubs: func() []*hub.Linked { return current }, Interval: time.Hour, Timeout: time.Second})
		defer p.Close()
		p.ProbeOnce(context.Background())
		current = nil
		p.ProbeOnce(context.Background())
		if len(p.Measurements()) != 0 {
			t.Fatalf("measurements of unlinked hubs kept: %+v", p.Measurements())
		}
	})
	t.Run("ok/close-without-start", func(t *testing.T) {
		p := newProber(hubs)
		p.Close()
		if _, ok := p.RTT(context.Background(), hubs[0]); ok {
			t.Fatal("a closed prober measured")
		}
	})
	t.Run("ok/background-rounds", func(t *testing.T) {
		p := allocation.NewProber(allocation.ProberConfig{Hubs: func() []*hub.Linked { return hubs }, Interval: 20 * time.Millisecond, Timeout: time.Second})
		defer p.Close()
		p.Start()
		first := time.Time{}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if ms := p.Measurements(); len(ms) == 1 {
				if first.IsZero() {
					first = ms[0].At
				} else if ms[0].At.After(first) {
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatal("no second round within 10 s")
	})
}
