package systemd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/coreos/go-systemd/v22/journal"
)

// StderrIsJournal says whether stderr is connected to journald (JOURNAL_STREAM
// names its device and inode), so that logs may upgrade to the native protocol.
func StderrIsJournal() bool {
	ok, err := journal.StderrIsJournalStream()
	return err == nil && ok
}

// SendFunc delivers one journal entry; journal.Send is the real one.
type SendFunc func(message string, priority journal.Priority, fields map[string]string) error

// JournalHandler is a slog.Handler that writes entries in the journal's native
// protocol: PRIORITY from the level, every attribute as its own field
// (registrationId becomes REGISTRATION_ID, a group g prefixes G_), CODE_FILE,
// CODE_LINE and CODE_FUNC, and SYSLOG_IDENTIFIER. MESSAGE carries the message
// followed by the attributes as key=value, because `journalctl -u` shows only
// MESSAGE and an operator reading it should not need -o verbose.
type JournalHandler struct {
	level    slog.Leveler
	ident    string
	send     SendFunc
	fallback io.Writer
	mu       *sync.Mutex // guards fallback

	prefix string // field name prefix of the open groups, e.g. "HTTP_"
	dotted string // text key prefix of the open groups, e.g. "http."
	fields []kv   // from WithAttrs
	text   string // from WithAttrs, " k=v k=v"
}

type kv struct{ k, v string }

// JournalOptions tune a JournalHandler.
type JournalOptions struct {
	Level slog.Leveler
	// Identifier is SYSLOG_IDENTIFIER (journalctl -t).
	Identifier string
	// Send delivers entries; nil means journal.Send (the socket journald listens on).
	Send SendFunc
	// Fallback receives an entry as a text line when Send fails (journald
	// restarting), so that no entry is lost silently. Nil drops it.
	Fallback io.Writer
}

// NewJournalHandler returns a handler writing to the journal.
func NewJournalHandler(opts JournalOptions) *JournalHandler {
	h := &JournalHandler{level: opts.Level, ident: opts.Identifier, send: opts.Send, fallback: opts.Fallback, mu: &sync.Mutex{}}
	if h.level == nil {
		h.level = slog.LevelInfo
	}
	if h.send == nil {
		h.send = journal.Send
	}
	return h
}

// Enabled implements slog.Handler.
func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

// Priority maps a slog level to a syslog priority.
func Priority(l slog.Level) journal.Priority {
	switch {
	case l < slog.LevelInfo:
		return journal.PriDebug
	case l < slog.LevelWarn:
		return journal.PriInfo
	case l < slog.LevelError:
		return journal.PriWarning
	default:
		return journal.PriErr
	}
}

// Handle implements slog.Handler.
func (h *JournalHandler) Handle(_ context.Context, r slog.Record) error {
	fields := make(map[string]string, len(h.fields)+r.NumAttrs()+4)
	for _, f := range h.fields {
		fields[f.k] = f.v
	}
	var text strings.Builder
	text.WriteString(r.Message)
	text.WriteString(h.text)
	r.Attrs(func(a slog.Attr) bool {
		for _, f := range flatten(h.prefix, h.dotted, a, &text) {
			fields[f.k] = f.v
		}
		return true
	})
	if h.ident != "" {
		fields["SYSLOG_IDENTIFIER"] = h.ident
	}
	if r.PC != 0 {
		fr, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		fields["CODE_FILE"], fields["CODE_LINE"], fields["CODE_FUNC"] = fr.File, strconv.Itoa(fr.Line), fr.Function
	}
	msg := text.String()
	err := h.send(msg, Priority(r.Level), fields)
	if err != nil && h.fallback != nil {
		h.mu.Lock()
		defer h.mu.Unlock()
		fmt.Fprintf(h.fallback, "%s %s %s (journal: %v)\n", r.Time.Format(time.RFC3339), r.Level, msg, err)
	}
	return err
}

// WithAttrs implements slog.Handler.
func (h *JournalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.fields = append([]kv(nil), h.fields...)
	var text strings.Builder
	text.WriteString(h.text)
	for _, a := range as {
		c.fields = append(c.fields, flatten(h.prefix, h.dotted, a, &text)...)
	}
	c.text = text.String()
	return &c
}

// WithGroup implements slog.Handler.
func (h *JournalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.prefix += FieldName(name) + "_"
	c.dotted += name + "."
	return &c
}

// flatten renders a as journal fields and appends " key=value" to text.
func flatten(prefix, dotted string, a slog.Attr, text *strings.Builder) []kv {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return nil
	}
	if a.Value.Kind() == slog.KindGroup {
		if a.Key != "" {
			prefix += FieldName(a.Key) + "_"
			dotted += a.Key + "."
		}
		var out []kv
		for _, g := range a.Value.Group() {
			out = append(out, flatten(prefix, dotted, g, text)...)
		}
		return out
	}
	if a.Key == "" {
		return nil
	}
	v := value(a.Value)
	text.WriteByte(' ')
	text.WriteString(dotted + a.Key)
	text.WriteByte('=')
	text.WriteString(quote(v))
	name := prefix + FieldName(a.Key)
	if reserved[name] {
		name = "EDGEPROV_" + name
	}
	return []kv{{name, v}}
}

func value(v slog.Value) string {
	switch v.Kind() {
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	case slog.KindDuration:
		return v.Duration().String()
	}
	return v.String()
}

func quote(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r == ' ' || r == '"' || r == '=' || !unicode.IsPrint(r) }) {
		return strconv.Quote(s)
	}
	return s
}

// reserved are the fields this handler or journald sets; an attribute of the
// same name is prefixed so it cannot forge them.
var reserved = map[string]bool{
	"MESSAGE": true, "MESSAGE_ID": true, "PRIORITY": true, "CODE_FILE": true, "CODE_LINE": true, "CODE_FUNC": true,
	"SYSLOG_IDENTIFIER": true, "SYSLOG_FACILITY": true, "SYSLOG_PID": true, "SYSLOG_TIMESTAMP": true, "SYSLOG_RAW": true,
	"ERRNO": true, "INVOCATION_ID": true, "USER_INVOCATION_ID": true, "UNIT": true, "USER_UNIT": true,
	"DOCUMENTATION": true, "TID": true,
}

// FieldName turns an attribute key into a journal field name: camelCase words
// split by underscores, upper case, anything but A-Z, 0-9 and _ replaced, no
// leading underscore or digit, at most 64 bytes.
func FieldName(key string) string {
	var b strings.Builder
	rs := []rune(key)
	for i, r := range rs {
		switch {
		case r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
		case r >= 'A' && r <= 'Z':
			// A new word: after a lower-case letter or digit, or the last
			// capital of an acronym before a lower-case letter (HTTPServer).
			if i > 0 && (isLowerOrDigit(rs[i-1]) || (isUpper(rs[i-1]) && i+1 < len(rs) && rs[i+1] >= 'a' && rs[i+1] <= 'z')) {
				b.WriteByte('_')
			}
			b.WriteRune(r)
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), "_")
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		s = "F_" + s
	}
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

func isLowerOrDigit(r rune) bool { return (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') }
func isUpper(r rune) bool        { return r >= 'A' && r <= 'Z' }
