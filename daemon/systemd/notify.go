// Package systemd is edgeprovd's side of the systemd service protocol: sd_notify
// (readiness, reload, stop, status lines, watchdog pings), sockets passed by
// socket activation found by their FileDescriptorName=, and a log/slog handler
// that writes the journal's native protocol. Outside systemd every part is inert,
// so the daemon runs the same way by hand, in tests and under a service manager.
package systemd

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends sd_notify messages to NOTIFY_SOCKET. The zero value and a
// Notifier made without NOTIFY_SOCKET send nothing.
type Notifier struct{ enabled bool }

// NotifierFromEnv returns the Notifier for this process.
func NotifierFromEnv() *Notifier { return &Notifier{enabled: os.Getenv("NOTIFY_SOCKET") != ""} }

// Enabled says whether a service manager listens.
func (n *Notifier) Enabled() bool { return n != nil && n.enabled }

func (n *Notifier) send(lines ...string) error {
	if !n.Enabled() {
		return nil
	}
	if _, err := daemon.SdNotify(false, strings.Join(lines, "\n")); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Ready says start-up (or a reload) is finished, with a status line.
func (n *Notifier) Ready(status string) error {
	return n.send(daemon.SdNotifyReady, "STATUS="+oneLine(status))
}

// Reloading says a reload has begun. MONOTONIC_USEC lets systemd (253+,
// Type=notify-reload) match the READY=1 that ends it to this reload.
func (n *Notifier) Reloading() error {
	return n.send(daemon.SdNotifyReloading, strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"))
}

// Stopping says shutdown has begun.
func (n *Notifier) Stopping(status string) error {
	return n.send(daemon.SdNotifyStopping, "STATUS="+oneLine(status))
}

// Status replaces the status line `systemctl status` shows.
func (n *Notifier) Status(status string) error { return n.send("STATUS=" + oneLine(status)) }

// Watchdog pings the service manager's watchdog.
func (n *Notifier) Watchdog() error { return n.send(daemon.SdNotifyWatchdog) }

// oneLine keeps a status to one line: a newline would start a new assignment.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// WatchdogInterval is WatchdogSec= of this service (WATCHDOG_USEC, when
// WATCHDOG_PID is unset or this process), or 0 without a watchdog.
func WatchdogInterval() (time.Duration, error) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0, fmt.Errorf("watchdog: %w", err)
	}
	return d, nil
}
