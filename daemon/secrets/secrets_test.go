package secrets_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/secrets"
)

func newBox(t *testing.T, b byte) *secrets.Box {
	t.Helper()
	box, err := secrets.New(bytes.Repeat([]byte{b}, secrets.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return box
}

func TestSealOpen(t *testing.T) {
	box, other := newBox(t, 1), newBox(t, 2)
	secret := []byte("device key: thirty-two bytes....")
	ctx := []byte("identity\x00hub-a\x00dev-1")
	sealed, err := box.Seal(secret, ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, secret) {
		t.Fatal("the sealed value contains the secret")
	}
	again, _ := box.Seal(secret, ctx)
	if bytes.Equal(again, sealed) {
		t.Fatal("sealing is deterministic (nonce reuse)")
	}
	got, err := box.Open(sealed, ctx)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	tests := []struct {
		name   string
		box    *secrets.Box
		sealed []byte
		ctx    []byte
		want   error
	}{
		{"fail/other-key", other, sealed, ctx, secrets.ErrWrongKey},
		{"fail/other-context", box, sealed, []byte("identity\x00hub-a\x00dev-2"), secrets.ErrCorrupt},
		{"fail/altered", box, flipped, ctx, secrets.ErrCorrupt},
		{"fail/truncated", box, sealed[:20], ctx, secrets.ErrCorrupt},
		{"fail/empty", box, nil, ctx, secrets.ErrCorrupt},
		{"fail/unknown-version", box, append([]byte{9}, sealed[1:]...), ctx, secrets.ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.box.Open(tt.sealed, tt.ctx); !errors.Is(err, tt.want) {
				t.Fatalf("Open = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := secrets.New(make([]byte, 16)); err == nil {
		t.Fatal("New accepted a 16-byte key")
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "secrets.key")
	if err := secrets.CreateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", fi.Mode(), err)
	}
	if err := secrets.CreateKeyFile(path); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second CreateKeyFile = %v, want ErrExist (never replace a data key)", err)
	}
	a, err := secrets.LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := secrets.LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := a.Seal([]byte("x"), nil)
	if got, err := b.Open(sealed, nil); err != nil || string(got) != "x" {
		t.Fatalf("a reloaded key does not open: %v", err)
	}

	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.LoadKeyFile(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("LoadKeyFile of a group-readable file = %v", err)
	}
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("c2hvcnQ=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.LoadKeyFile(bad); err == nil {
		t.Fatal("LoadKeyFile accepted a short key")
	}
	if _, err := secrets.LoadKeyFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadKeyFile of a missing file = %v", err)
	}
}
