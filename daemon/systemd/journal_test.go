package systemd

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
)

func TestFieldName(t *testing.T) {
	tests := []struct{ name, key, want string }{
		{"ok/lower", "hub", "HUB"},
		{"ok/camel", "registrationId", "REGISTRATION_ID"},
		{"ok/acronym", "idScope", "ID_SCOPE"},
		{"ok/acronym-then-word", "HTTPServer", "HTTP_SERVER"},
		{"ok/digits", "tls13Enabled", "TLS13_ENABLED"},
		{"ok/dots-and-dashes", "x-ms.request-id", "X_MS_REQUEST_ID"},
		{"ok/leading-underscore", "_hidden", "HIDDEN"},
		{"ok/leading-digit", "2fa", "F_2FA"},
		{"ok/empty", "", "F_"},
		{"ok/too-long", strings.Repeat("a", 80), strings.Repeat("A", 64)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FieldName(tt.key); got != tt.want {
				t.Fatalf("FieldName(%q) = %q, want %q", tt.key, got, tt.want)
			}
		})
	}
}

type entry struct {
	msg    string
	prio   journal.Priority
	fields map[string]string
}

type secret string

func (secret) LogValue() slog.Value { return slog.StringValue("REDACTED") }

func capture(level slog.Level) (*slog.Logger, *[]entry) {
	var got []entry
	h := NewJournalHandler(JournalOptions{Level: level, Identifier: "edgeprovd", Send: func(m string, p journal.Priority, f map[string]string) error {
		got = append(got, entry{m, p, f})
		return nil
	}})
	return slog.New(h), &got
}

func TestJournalHandler(t *testing.T) {
	log, got := capture(slog.LevelDebug)
	log.Debug("d")
	log.Info("edgeprovd ready", "idScope", "0ne00000001", "device", "[::]:443")
	log.Warn("w")
	log.Error("catalog reload refused", "error", errors.New("bad.yaml:3: nope"))
	log.With("hub", "hub-a").WithGroup("req").Info("registration", "registrationId", "dev 1", slog.Group("tls", "version", "1.3"))
	log.Info("secrets", "key", secret("k3y"), "message", "forged", "priority", "0")

	if len(*got) != 6 {
		t.Fatalf("%d entries, want 6", len(*got))
	}
	wantPrio := []journal.Priority{journal.PriDebug, journal.PriInfo, journal.PriWarning, journal.PriErr, journal.PriInfo, journal.PriInfo}
	for i, e := range *got {
		if e.prio != wantPrio[i] {
			t.Errorf("entry %d (%s): priority %d, want %d", i, e.msg, e.prio, wantPrio[i])
		}
		if e.fields["SYSLOG_IDENTIFIER"] != "edgeprovd" || !strings.HasSuffix(e.fields["CODE_FILE"], "journal_test.go") || e.fields["CODE_LINE"] == "" ||
			!strings.HasSuffix(e.fields["CODE_FUNC"], "TestJournalHandler") {
			t.Errorf("entry %d: identifier/code fields %v", i, e.fields)
		}
	}
	ready := (*got)[1]
	if ready.msg != "edgeprovd ready idScope=0ne00000001 device=[::]:443" || ready.fields["ID_SCOPE"] != "0ne00000001" || ready.fields["DEVICE"] != "[::]:443" {
		t.Errorf("ready: %q %v", ready.msg, ready.fields)
	}
	if e := (*got)[3]; e.fields["ERROR"] != "bad.yaml:3: nope" || e.msg != `catalog reload refused error="bad.yaml:3: nope"` {
		t.Errorf("error: %q %v", e.msg, e.fields)
	}
	reg := (*got)[4]
	if reg.fields["HUB"] != "hub-a" || reg.fields["REQ_REGISTRATION_ID"] != "dev 1" || reg.fields["REQ_TLS_VERSION"] != "1.3" ||
		reg.msg != `registration hub=hub-a req.registrationId="dev 1" req.tls.version=1.3` {
		t.Errorf("groups: %q %v", reg.msg, reg.fields)
	}
	sec := (*got)[5]
	if sec.fields["KEY"] != "REDACTED" || strings.Contains(sec.msg, "k3y") {
		t.Errorf("a LogValuer was not resolved: %q %v", sec.msg, sec.fields)
	}
	if sec.fields["EDGEPROV_MESSAGE"] != "forged" || sec.fields["EDGEPROV_PRIORITY"] != "0" {
		t.Errorf("attributes named like journal fields must not replace them: %v", sec.fields)
	}
}

func TestJournalHandlerLevelAndFallback(t *testing.T) {
	log, got := capture(slog.LevelInfo)
	log.Debug("hidden")
	if len(*got) != 0 {
		t.Fatalf("a debug entry passed an info handler")
	}
	var fb strings.Builder
	h := NewJournalHandler(JournalOptions{Fallback: &fb, Send: func(string, journal.Priority, map[string]string) error {
		return errors.New("journald is restarting")
	}})
	if err := h.Handle(context.Background(), slog.NewRecord(testTime, slog.LevelWarn, "kept", 0)); err == nil {
		t.Fatal("Handle hid the send error")
	}
	if !strings.Contains(fb.String(), "WARN kept (journal: journald is restarting)") {
		t.Fatalf("fallback got %q", fb.String())
	}
}
