package mqtt

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// The broker's warnings reach the daemon's log without the packets attached
// to them (a CONNECT carries the SAS token); its chatter does not.
func TestBrokerLogHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(&brokerLogHandler{inner: slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})})
	log.Info("attached listener", "id", "mqtts")
	log.Debug("client disconnected", "client", "dev")
	log.With("pk", "SharedAccessSignature sig=secret1").Warn("error processing packet", "client", "dev-1", "pk", "SharedAccessSignature sig=secret2", "packet", "secret3")
	out := buf.String()
	if strings.Contains(out, "secret") || strings.Contains(out, "attached listener") || strings.Contains(out, "client disconnected") {
		t.Fatalf("log: %s", out)
	}
	if !strings.Contains(out, "error processing packet") || !strings.Contains(out, "client=dev-1") {
		t.Fatalf("warning lost: %s", out)
	}
}
