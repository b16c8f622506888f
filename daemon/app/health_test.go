package app

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/config"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/daemon/systemd"
)

// notifications collects what the daemon sends to its NOTIFY_SOCKET.
type notifications struct {
	mu  sync.Mutex
	got []timed
}

type timed struct {
	at  time.Time
	msg string
}

func listenNotify(t *testing.T) *notifications {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	n := &notifications{}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.got = append(n.got, timed{time.Now(), string(buf[:k])})
			n.mu.Unlock()
		}
	}()
	return n
}

// since returns the messages received after t0.
func (n *notifications) since(t0 time.Time) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, m := range n.got {
		if m.at.After(t0) {
			out = append(out, m.msg)
		}
	}
	return out
}

func count(msgs []string, s string) int {
	n := 0
	for _, m := range msgs {
		if strings.Contains(m, s) {
			n++
		}
	}
	return n
}

// newTestDaemon initialises an instance in a temp dir and builds its daemon.
func newTestDaemon(t *testing.T, opts Options) *Daemon {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "edgeprovd.yaml")
	data := []byte("version: 1\nstateDir: state\ndevice: {listen: 127.0.0.1:0}\nlinkedHubs:\n  - {name: h, hostName: h.test}\n")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(path, data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(context.Background(), cfg, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	d, err := BuildWith(context.Background(), cfg, slog.New(slog.DiscardHandler), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestWatchdogStopsWhileStoreIsWedged holds the store's writer lock with a
// transaction that does not end, as a stuck disk or a deadlocked writer would:
// the health check's commit cannot finish, so the watchdog pings stop, and
// they resume when the writer lets go.
func TestWatchdogStopsWhileStoreIsWedged(t *testing.T) {
	n := listenNotify(t)
	const interval = 400 * time.Millisecond // pings every 200 ms
	d := newTestDaemon(t, Options{Notifier: systemd.NotifierFromEnv(), WatchdogInterval: interval})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx, "") }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	t0 := time.Now()
	waitFor(t, func() bool { return count(n.since(t0), "WATCHDOG=1") >= 3 }, "watchdog pings while healthy")
	if msgs := n.since(t0); count(msgs, "READY=1") != 1 {
		t.Fatalf("want one READY=1, got %q", msgs)
	}

	release := make(chan struct{})
	wedged := make(chan error, 1)
	go func() {
		wedged <- d.store.Update(context.Background(), func(store.Tx) error { <-release; return nil })
	}()
	waitFor(t, func() bool { return strings.Contains(d.Status(), "UNHEALTHY: store: store write did not finish") }, "the status to say the store is wedged")
	t1 := time.Now()
	time.Sleep(5 * interval / 2)
	if msgs := n.since(t1); count(msgs, "WATCHDOG=1") != 0 {
		t.Fatalf("watchdog pinged while the store was wedged: %q", msgs)
	}
	if msgs := n.since(t0); count(msgs, "STATUS=UNHEALTHY: store") == 0 {
		t.Fatalf("systemd was not told the status: %q", msgs)
	}

	close(release)
	if err := <-wedged; err != nil {
		t.Fatal(err)
	}
	t2 := time.Now()
	waitFor(t, func() bool { return count(n.since(t2), "WATCHDOG=1") >= 2 }, "pings again once the store is free")
	if s := d.Status(); strings.Contains(s, "UNHEALTHY") {
		t.Fatalf("status after recovery: %s", s)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMergedListeners(t *testing.T) {
	var ls []net.Listener
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	m := merge(ls)
	if got := addrs(m); len(got) != 2 || got[1].String() != ls[1].Addr().String() {
		t.Fatalf("addrs: %v", got)
	}
	for _, l := range ls {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		a, err := m.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if a.LocalAddr().String() != l.Addr().String() {
			t.Fatalf("accepted on %s, dialled %s", a.LocalAddr(), l.Addr())
		}
		a.Close()
	}
	m.Close()
	if _, err := m.Accept(); err == nil {
		t.Fatal("Accept after Close succeeded")
	}
	if _, err := net.Dial("tcp", ls[0].Addr().String()); err == nil {
		t.Fatal("a merged socket still accepts after Close")
	}
}
