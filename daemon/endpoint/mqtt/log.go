package mqtt

import (
	"context"
	"log/slog"
)

// brokerLogHandler passes the embedded broker's warnings and errors to the
// daemon's log, without the packets it attaches (they may carry payloads):
// its info and debug lines describe its own plumbing, not the devices.
type brokerLogHandler struct {
	inner slog.Handler
}

func (h *brokerLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && h.inner.Enabled(ctx, l)
}

func (h *brokerLogHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if !dropped(a.Key) {
			out.AddAttrs(a)
		}
		return true
	})
	return h.inner.Handle(ctx, out)
}

func (h *brokerLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	kept := make([]slog.Attr, 0, len(as))
	for _, a := range as {
		if !dropped(a.Key) {
			kept = append(kept, a)
		}
	}
	return &brokerLogHandler{inner: h.inner.WithAttrs(kept)}
}

func (h *brokerLogHandler) WithGroup(name string) slog.Handler {
	return &brokerLogHandler{inner: h.inner.WithGroup(name)}
}

func dropped(key string) bool {
	switch key {
	case "pk", "packet", "will", "pkx":
		return true
	}
	return false
}
