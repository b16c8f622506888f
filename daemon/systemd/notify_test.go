package systemd

import (
	"net"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

var testTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func listenNotify(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return c
}

func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestNotifier(t *testing.T) {
	c := listenNotify(t)
	n := NotifierFromEnv()
	if !n.Enabled() {
		t.Fatal("NOTIFY_SOCKET is set but the notifier is disabled")
	}
	tests := []struct {
		name string
		send func() error
		want string
	}{
		{"ok/ready", func() error { return n.Ready("serving 3\nenrollments") }, `^READY=1\nSTATUS=serving 3 enrollments$`},
		{"ok/reloading", n.Reloading, `^RELOADING=1\nMONOTONIC_USEC=[0-9]+$`},
		{"ok/status", func() error { return n.Status("UNHEALTHY: store") }, `^STATUS=UNHEALTHY: store$`},
		{"ok/watchdog", n.Watchdog, `^WATCHDOG=1$`},
		{"ok/stopping", func() error { return n.Stopping("draining") }, `^STOPPING=1\nSTATUS=draining$`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.send(); err != nil {
				t.Fatal(err)
			}
			if got := recv(t, c); !regexp.MustCompile(tt.want).MatchString(got) {
				t.Fatalf("got %q, want %s", got, tt.want)
			}
		})
	}
}

func TestNotifierWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := NotifierFromEnv()
	if n.Enabled() || n.Ready("x") != nil || n.Watchdog() != nil {
		t.Fatal("a notifier without NOTIFY_SOCKET must do nothing and not fail")
	}
	var nilN *Notifier
	if nilN.Enabled() || nilN.Stopping("x") != nil {
		t.Fatal("a nil notifier must do nothing")
	}
}

func TestNotifierSocketGone(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
	if err := NotifierFromEnv().Ready("x"); err == nil {
		t.Fatal("a missing notify socket must be reported")
	}
}

func TestWatchdogInterval(t *testing.T) {
	tests := []struct {
		name, usec, pid string
		want            time.Duration
		fail            bool
	}{
		{"ok/unset", "", "", 0, false},
		{"ok/set", "30000000", "", 30 * time.Second, false},
		{"ok/another-pid", "30000000", "1", 0, false},
		{"fail/garbage", "soon", "", 0, true},
		{"fail/negative", "-5", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tt.usec)
			t.Setenv("WATCHDOG_PID", tt.pid)
			got, err := WatchdogInterval()
			if (err != nil) != tt.fail || got != tt.want {
				t.Fatalf("got %v, %v; want %v, fail=%v", got, err, tt.want, tt.fail)
			}
		})
	}
}
