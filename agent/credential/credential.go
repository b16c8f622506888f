// Package credential holds the device's proof of identity: it signs SAS tokens
// (symmetric key) without handing the key to its callers.
package credential

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
)

// SASSigner makes device SAS tokens.
type SASSigner interface {
	// Token returns "SharedAccessSignature sr=...&sig=...&se=...&skn=registration".
	Token(resource string, expiry time.Time) (string, error)
}

// SymmetricKey signs with a key held in memory.
type SymmetricKey struct{ key []byte }

var _ SASSigner = (*SymmetricKey)(nil)

// Token implements SASSigner.
func (s *SymmetricKey) Token(resource string, expiry time.Time) (string, error) {
	return sas.Build(s.key, resource, expiry, sas.DeviceKeyName), nil
}

// LogValue keeps the key out of logs.
func (s *SymmetricKey) LogValue() slog.Value { return slog.StringValue("[symmetric key]") }

// FromKeyFile reads a base64 device key (first non-comment line).
func FromKeyFile(path string) (*SymmetricKey, error) {
	k, err := readKey(path)
	if err != nil {
		return nil, err
	}
	return &SymmetricKey{key: k}, nil
}

// FromGroupKeyFile reads a group key and derives the device's key from it, as a
// factory station does for each device it provisions.
func FromGroupKeyFile(path, registrationID string) (*SymmetricKey, error) {
	k, err := readKey(path)
	if err != nil {
		return nil, err
	}
	return &SymmetricKey{key: sas.DeriveDeviceKey(k, registrationID)}, nil
}

func readKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			k, err := sas.DecodeKey(l)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return k, nil
		}
	}
	return nil, fmt.Errorf("%s: no key", path)
}
