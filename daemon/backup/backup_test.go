package backup

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var layout = Layout{Store: "edgeprov.db", Dirs: []string{"tls", "policies"}}

type entry struct{ name, body string }

func archive(t *testing.T, m *Manifest, entries ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if m != nil {
		mj, _ := json.Marshal(m)
		entries = append([]entry{{ManifestName, string(mj)}}, entries...)
	}
	for _, e := range entries {
		tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o600, Size: int64(len(e.body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return b.Bytes()
}

// verifyScope stands in for the store check: the test's "store" is its scope.
func verifyScope(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if string(b) == "garbage" {
		return "", errors.New("invalid database")
	}
	return string(b), nil
}

func TestExtract(t *testing.T) {
	files := []string{"edgeprov.db", "tls/ca.pem"}
	m := func(scope string, files ...string) *Manifest {
		return &Manifest{Format: FormatVersion, IDScope: scope, Files: files}
	}
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"ok/complete", archive(t, m("0neA", files...), entry{"edgeprov.db", "0neA"}, entry{"tls/ca.pem", "pem"}), ""},
		{"fail/no-manifest", archive(t, nil, entry{"edgeprov.db", "0neA"}), "not an edgeprov backup"},
		{"fail/newer-format", archive(t, &Manifest{Format: FormatVersion + 1, Files: files}), "backup format 2 is not supported"},
		{"fail/manifest-escapes", archive(t, m("0neA", "edgeprov.db", "tls/../../etc/passwd")), `lists "tls/../../etc/passwd", which is not part of a state directory`},
		{"fail/manifest-absolute", archive(t, m("0neA", "edgeprov.db", "/etc/passwd")), "not part of a state directory"},
		{"fail/no-store", archive(t, m("0neA", "tls/ca.pem")), "lists no store"},
		{"fail/unlisted-entry", archive(t, m("0neA", "edgeprov.db"), entry{"edgeprov.db", "0neA"}, entry{"tls/extra.key", "k"}), `holds "tls/extra.key", which its manifest does not list`},
		{"fail/truncated", archive(t, m("0neA", files...), entry{"edgeprov.db", "0neA"}), "backup is truncated: tls/ca.pem missing"},
		{"fail/bad-store", archive(t, m("0neA", files...), entry{"edgeprov.db", "garbage"}, entry{"tls/ca.pem", "pem"}), "invalid database"},
		{"fail/scope-mismatch", archive(t, m("0neA", files...), entry{"edgeprov.db", "0neB"}, entry{"tls/ca.pem", "pem"}), "manifest says ID scope 0neA but its store holds 0neB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "x")
			got, err := Extract(bytes.NewReader(tt.data), dir, layout, verifyScope)
			if tt.want == "" {
				if err != nil || got.IDScope != "0neA" {
					t.Fatalf("%v %+v", err, got)
				}
				if b, _ := os.ReadFile(filepath.Join(dir, "tls", "ca.pem")); string(b) != "pem" {
					t.Fatalf("tls/ca.pem: %q", b)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
			if _, serr := os.Stat(dir); serr == nil {
				t.Fatalf("a refused archive left %s", dir)
			}
		})
	}
}

type fakeSnap struct{ data string }

func (f fakeSnap) Snapshot(fn func(int64, io.WriterTo) error) error {
	return fn(int64(len(f.data)), strings.NewReader(f.data))
}

// TestWriteThenRestore: Write's archive restores, an existing state is moved
// aside only with Force, and the store's lock stops a restore.
func TestWriteThenRestore(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "tls"), 0o700)
	os.MkdirAll(filepath.Join(src, "policies"), 0o700)
	os.WriteFile(filepath.Join(src, "tls", "ca.pem"), []byte("pem"), 0o600)
	os.WriteFile(filepath.Join(src, "policies", "owner.key"), []byte("key"), 0o600)
	os.WriteFile(filepath.Join(src, "admin.sock.not-backed-up"), []byte("x"), 0o600)
	var b bytes.Buffer
	l := layout
	l.StateDir = src
	if err := Write(&b, l, fakeSnap{"0neA"}, Manifest{IDScope: "0neA", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}

	dst := Layout{StateDir: filepath.Join(t.TempDir(), "state"), Store: l.Store, Dirs: l.Dirs}
	if _, err := Restore(bytes.NewReader(b.Bytes()), dst, verifyScope, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"edgeprov.db": "0neA", "tls/ca.pem": "pem", "policies/owner.key": "key"} {
		if got, _ := os.ReadFile(filepath.Join(dst.StateDir, name)); string(got) != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dst.StateDir, "admin.sock.not-backed-up")); err == nil {
		t.Error("a file outside the layout was restored")
	}

	if _, err := Restore(bytes.NewReader(b.Bytes()), dst, verifyScope, RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "restore --force") {
		t.Fatalf("second restore without --force: %v", err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if _, err := Restore(bytes.NewReader(b.Bytes()), dst, verifyScope, RestoreOptions{Force: true, Now: now}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dst.StateDir, "pre-restore-20260102T030405Z", "tls", "ca.pem")); string(got) != "pem" {
		t.Fatalf("--force did not keep the previous state aside: %q", got)
	}
}
