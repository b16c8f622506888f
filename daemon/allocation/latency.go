package allocation

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgeprov/edgeprov/daemon/hub"
)

// RTTs reports measured round-trip times. ok is false for a hub that does not
// answer its probe, or has not been measured yet.
type RTTs interface {
	RTT(ctx context.Context, h *hub.Linked) (rtt time.Duration, ok bool)
}

// Latency is DPS's "lowest latency" policy: the candidate with the smallest
// measured round-trip time wins. Candidates within Tolerance of the fastest
// tie, and the tie is broken like Hashed (by registration ID, honouring
// weights), so that equally near hubs share the devices. Hubs that do not
// answer their probe are skipped until they do again.
type Latency struct {
	RTTs      RTTs
	Tolerance time.Duration
}

// Allocate implements Policy.
func (l Latency) Allocate(ctx context.Context, req Request) (*hub.Linked, error) {
	best := time.Duration(math.MaxInt64)
	rtts := make([]time.Duration, len(req.Candidates))
	var down []string
	for i, h := range req.Candidates {
		rtt, ok := l.RTTs.RTT(ctx, h)
		if !ok || h.Weight <= 0 {
			rtts[i] = -1
			down = append(down, h.Name)
			continue
		}
		rtts[i] = rtt
		best = min(best, rtt)
	}
	var ties []*hub.Linked
	for i, h := range req.Candidates {
		if rtts[i] >= 0 && rtts[i] <= best+l.Tolerance {
			ties = append(ties, h)
		}
	}
	if len(ties) == 0 {
		return nil, fmt.Errorf("%w: no candidate hub answers its latency probe (%s)", ErrNoHub, strings.Join(down, ", "))
	}
	return Hashed{}.Allocate(ctx, Request{RegistrationID: req.RegistrationID, Candidates: ties})
}

// ProberConfig configures a Prober.
type ProberConfig struct {
	// Hubs returns the hubs to measure; it is asked again every round, so hubs
	// added or removed by a config reload are followed.
	Hubs func() []*hub.Linked
	// Interval between rounds (default 10s) and Timeout of one probe
	// (default 2s).
	Interval, Timeout time.Duration
	Logger            *slog.Logger
	// Dial opens the TCP connection (default: a net.Dialer).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Prober measures, in the background, the round-trip time to every linked
// hub's LatencyProbe address. It starts on first use, so a daemon whose
// enrollments never ask for lowest latency never probes.
//
// One probe opens a TCP connection and sends a TLS ClientHello; the RTT is the
// time from sending it to the server's first answer, whatever it is (a
// ServerHello, an alert, a non-TLS protocol's bytes, or closing the
// connection). Measuring an exchange rather than the TCP handshake alone keeps
// the number honest behind load balancers and proxies, which complete the
// handshake themselves. A server that accepts but stays silent until the
// timeout is up, with its connect time as RTT; one that cannot be connected to
// is down until a later probe connects.
type Prober struct {
	cfg      ProberConfig
	log      *slog.Logger
	start    sync.Once
	first    chan struct{} // closed after the first round
	stop     context.CancelFunc
	done     chan struct{}
	mu       sync.RWMutex
	measured map[string]*Measurement // by probe address
}

// Measurement is a probe address's latest state.
type Measurement struct {
	Addr string
	// RTT is smoothed over the probes since the address last came up.
	RTT time.Duration
	Up  bool
	// Err is why the last probe failed (when !Up).
	Err string
	At  time.Time
}

var _ RTTs = (*Prober)(nil)

// NewProber returns a Prober; it does nothing until first used or Run.
func NewProber(cfg ProberConfig) *Prober {
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	p := &Prober{cfg: cfg, log: cfg.Logger, first: make(chan struct{}), done: make(chan struct{}), measured: map[string]*Measurement{}}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	return p
}

// Start launches the background rounds (once); the first runs at once.
func (p *Prober) Start() {
	p.start.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		p.stop = cancel
		go p.loop(ctx)
	})
}

func (p *Prober) loop(ctx context.Context) {
	defer close(p.done)
	p.ProbeOnce(ctx)
	close(p.first)
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.ProbeOnce(ctx)
		}
	}
}

// Close stops the background rounds.
func (p *Prober) Close() {
	p.start.Do(func() { close(p.done) }) // never started: nothing to stop
	if p.stop != nil {
		p.stop()
	}
	<-p.done
}

// RTT implements RTTs. The first call starts the prober and waits for its
// first round (bounded by the probe timeout and ctx).
func (p *Prober) RTT(ctx context.Context, h *hub.Linked) (time.Duration, bool) {
	p.Start()
	select {
	case <-p.first:
	case <-ctx.Done():
		return 0, false
	case <-p.done:
		return 0, false
	}
	p.mu.RLock()
	m := p.measured[h.LatencyProbe]
	p.mu.RUnlock()
	if m == nil || !m.Up {
		return 0, false
	}
	return m.RTT, true
}

// Measurements returns the current state of every probed address, sorted.
func (p *Prober) Measurements() []Measurement {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]Measurement, 0, len(p.measured))
	for _, m := range p.measured {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Measurement) int { return strings.Compare(a.Addr, b.Addr) })
	return out
}

// ProbeOnce probes every hub's address now, concurrently, and returns when
// all have answered or timed out.
func (p *Prober) ProbeOnce(ctx context.Context) {
	addrs := map[string]bool{}
	for _, h := range p.cfg.Hubs() {
		if h.LatencyProbe != "" {
			addrs[h.LatencyProbe] = true
		}
	}
	type result struct {
		addr string
		rtt  time.Duration
		err  error
	}
	results := make(chan result, len(addrs))
	for a := range addrs {
		go func() {
			rtt, err := probe(ctx, p.cfg.Dial, a, p.cfg.Timeout)
			results <- result{a, rtt, err}
		}()
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for range addrs {
		r := <-results
		m := p.measured[r.addr]
		isNew := m == nil
		if isNew {
			m = &Measurement{Addr: r.addr}
			p.measured[r.addr] = m
		}
		wasUp := m.Up
		m.At = now
		if r.err != nil {
			m.Up, m.Err, m.RTT = false, r.err.Error(), 0
			if wasUp || isNew {
				p.log.LogAttrs(ctx, slog.LevelWarn, "hub latency probe failed: skipped by lowest-latency allocation until it answers",
					slog.String("probe", r.addr), slog.String("error", m.Err))
			}
			continue
		}
		if !wasUp {
			m.RTT = r.rtt
			p.log.LogAttrs(ctx, slog.LevelInfo, "hub answers its latency probe", slog.String("probe", r.addr), slog.Duration("rtt", r.rtt))
		} else {
			// Smooth out one-off spikes; a hub that really got slower wins
			// its new place within a few rounds.
			m.RTT = (m.RTT + r.rtt) / 2
		}
		m.Up, m.Err = true, ""
	}
	for a := range p.measured {
		if !addrs[a] {
			delete(p.measured, a)
		}
	}
}

// probe measures one round trip to addr (see Prober).
func probe(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), addr string, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	connected := time.Since(start)
	c := &firstAnswer{Conn: raw}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	host, _, _ := net.SplitHostPort(addr)
	// Only the timing of the server's answer is used; nothing is sent after
	// the handshake, so the certificate is not verified.
	tc := tls.Client(c, &tls.Config{ServerName: host, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	// Bounded by the connection's deadline, not ctx: a handshake cancelled
	// through ctx closes the connection, and that error would pass for an
	// answer.
	_ = tc.Handshake()
	if rtt, ok := c.rtt(); ok {
		return rtt, nil
	}
	// Silent until the deadline: reachable, so the connect time stands in.
	return connected, nil
}

// firstAnswer is a net.Conn that notes when the first write went out and when
// the peer first answered (bytes, EOF or reset; not our own deadline).
type firstAnswer struct {
	net.Conn
	mu            sync.Mutex
	wrote, answer time.Time
}

func (c *firstAnswer) Write(b []byte) (int, error) {
	c.mu.Lock()
	if c.wrote.IsZero() {
		c.wrote = time.Now()
	}
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *firstAnswer) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	var ne net.Error
	if n > 0 || err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
		c.mu.Lock()
		if c.answer.IsZero() {
			c.answer = time.Now()
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *firstAnswer) rtt() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wrote.IsZero() || c.answer.IsZero() {
		return 0, false
	}
	return c.answer.Sub(c.wrote), true
}
