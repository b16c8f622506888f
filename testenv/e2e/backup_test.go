package e2e_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/testenv/e2e"
)

// registrationRecord asks a daemon for a device's registration record over
// the device API (POST /{scope}/registrations/{id}), trusting only caCert.
func registrationRecord(t *testing.T, addr, caCert, scope, regID string) (int, map[string]any) {
	t.Helper()
	pem, err := os.ReadFile(caCert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}}
	tok := sas.Build(sas.DeriveDeviceKey(groupKey, regID), sas.DeviceResource(scope, regID), time.Now().Add(time.Hour), sas.DeviceKeyName)
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("https://%s/%s/registrations/%s?api-version=2021-06-01", addr, scope, regID),
		strings.NewReader(`{"registrationId":"`+regID+`"}`))
	req.Header.Set("Authorization", tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// TestBackupUnderLoadRestores takes online backups while agents register,
// restores the last one into a new state directory, and serves it: every
// device registered before the backup began has its record there, answered
// over TLS with the restored CA.
func TestBackupUnderLoadRestores(t *testing.T) {
	t.Parallel()
	d := newDaemon(t)
	d.Start(t)

	var (
		mu   sync.Mutex
		done []string // registration IDs provisioned, in order
		stop atomic.Bool
		wg   sync.WaitGroup
		next atomic.Int64
	)
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				id := fmt.Sprintf("line-%d%04d", w, next.Add(1))
				cfg, _ := agentConfig(t, d, id, "group")
				if r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg); r.Code != 0 {
					t.Errorf("agent %s: exit %d %s", id, r.Code, r.Stderr)
					return
				}
				mu.Lock()
				done = append(done, id)
				mu.Unlock()
			}
		}()
	}
	provisioned := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), done...)
	}
	for len(provisioned()) < 5 {
		time.Sleep(20 * time.Millisecond)
	}

	dir := t.TempDir()
	var before []string
	var out string
	for i := range 3 {
		before = provisioned()
		out = filepath.Join(dir, fmt.Sprintf("backup-%d.tar", i))
		r := e2e.Run(t, nil, "edgeprovd", "backup", "--config", d.Config, "--out", out)
		if r.Code != 0 || !strings.Contains(r.Stdout, "(online, from the running edgeprovd)") || !strings.Contains(r.Stdout, "consistency check passed") {
			t.Fatalf("backup %d: exit %d\n%s%s", i, r.Code, r.Stdout, r.Stderr)
		}
		if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("backup %d: %v, mode %v; it holds private keys and must be 0600", i, err, st.Mode())
		}
	}
	stop.Store(true)
	wg.Wait()
	after := provisioned()
	if len(after) <= len(before) {
		t.Logf("no registration finished during the last backup (%d before, %d after)", len(before), len(after))
	}

	// Restore into a new state directory, with the daemon still serving the old one.
	restoredState := filepath.Join(dir, "restored-state")
	r := e2e.Run(t, nil, "edgeprovd", "restore", "--config", d.Config, "--state-dir", restoredState, "--from", out)
	m := regexp.MustCompile(`consistency check passed, (\d+) registration records`).FindStringSubmatch(r.Stdout)
	if r.Code != 0 || m == nil || !strings.Contains(r.Stdout, "restored ID scope "+d.IDScope) {
		t.Fatalf("restore: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if n, _ := strconv.Atoi(m[1]); n < len(before) {
		t.Fatalf("restored %d registration records, but %d devices were registered before the backup began", n, len(before))
	}

	// Everything init made comes back, byte for byte: TLS material, policy
	// key, the data key sealing the store's secrets.
	for _, f := range []string{"tls/ca.key", "tls/server.pem", "policies/provisioningserviceowner.key", "secrets.key"} {
		want, err := os.ReadFile(filepath.Join(d.StateDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(filepath.Join(restoredState, f)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s not restored as it was: %v", f, err)
		}
	}

	cfg, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	restored := &e2e.Daemon{Dir: t.TempDir(), StateDir: restoredState, CACert: filepath.Join(restoredState, "tls", "ca.pem")}
	restored.Config = filepath.Join(d.Dir, "edgeprovd-restored.yaml") // beside the catalog it names
	e2e.Write(t, restored.Config, strings.Replace(string(cfg), "stateDir: state", "stateDir: "+restoredState, 1))
	restored.Start(t)
	if restored.IDScope != d.IDScope {
		t.Fatalf("restored daemon serves ID scope %s, want %s", restored.IDScope, d.IDScope)
	}
	for _, id := range before {
		code, body := registrationRecord(t, restored.DeviceAddr, restored.CACert, restored.IDScope, id)
		if code != http.StatusOK || body["status"] != "assigned" || body["registrationId"] != id {
			t.Fatalf("%s after restore: %d %v\n%s", id, code, body, restored.Log())
		}
	}
	// A device never registered has no record: the check above can fail.
	if code, _ := registrationRecord(t, restored.DeviceAddr, restored.CACert, restored.IDScope, "line-never"); code != http.StatusNotFound {
		t.Fatalf("a never-registered device: %d, want 404", code)
	}
}

func TestRestoreRefusals(t *testing.T) {
	t.Parallel()
	d := newDaemon(t)
	d.Start(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.tar")
	if r := e2e.Run(t, nil, "edgeprovd", "backup", "--config", d.Config, "--out", good); r.Code != 0 {
		t.Fatalf("backup: %s%s", r.Stdout, r.Stderr)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.tar")
	e2e.Write(t, truncated, string(data[:len(data)/2]))
	// A store whose two meta pages are garbage, inside a well-formed archive:
	// the store file follows the manifest's header and body, 512-byte blocks.
	corrupt := filepath.Join(dir, "corrupt.tar")
	bad := bytes.Clone(data)
	db := bytes.Index(data, []byte{0xed, 0xda, 0x0c, 0xed}) - 16 // bbolt's magic in the first meta page
	if db < 0 {
		t.Fatal("no bbolt meta page in the backup")
	}
	for _, page := range []int{0, 1} {
		for j := db + page*4096 + 16; j < db+page*4096+64; j++ {
			bad[j] ^= 0xff
		}
	}
	e2e.Write(t, corrupt, string(bad))

	tests := []struct {
		name, state, from string
		force, running    bool
		want              string
	}{
		{"fail/daemon-running", d.StateDir, good, true, true, "is locked: stop edgeprovd before restoring"},
		{"fail/existing-state", d.StateDir, good, false, false, "already holds a store; restore --force"},
		{"fail/truncated", filepath.Join(dir, "t"), truncated, false, false, "read backup: unexpected EOF"},
		{"fail/corrupt-store", filepath.Join(dir, "c"), corrupt, false, false, "edgeprov.db: invalid database"},
		{"fail/not-a-backup", filepath.Join(dir, "n"), d.Config, false, false, "not an edgeprov backup"},
		{"ok/force-moves-aside", d.StateDir, good, true, false, "restored ID scope " + d.IDScope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.running {
				d.Stop(t)
			}
			args := []string{"restore", "--config", d.Config, "--state-dir", tt.state, "--from", tt.from}
			if tt.force {
				args = append(args, "--force")
			}
			r := e2e.Run(t, nil, "edgeprovd", args...)
			ok := strings.HasPrefix(tt.name, "ok/")
			if (r.Code == 0) != ok || !strings.Contains(r.Stdout+r.Stderr, tt.want) {
				t.Fatalf("exit %d, want %q\n%s%s", r.Code, tt.want, r.Stdout, r.Stderr)
			}
			if !ok && tt.state != d.StateDir {
				// Nothing written: no store appears.
				if _, err := os.Stat(filepath.Join(tt.state, "edgeprov.db")); err == nil {
					t.Fatalf("a refused restore left a store in %s", tt.state)
				}
			}
		})
	}
	aside, _ := filepath.Glob(filepath.Join(d.StateDir, "pre-restore-*", "edgeprov.db"))
	if len(aside) != 1 {
		t.Fatalf("--force did not keep the replaced store aside: %v", aside)
	}
	// And the stopped daemon's state can be backed up offline.
	r := e2e.Run(t, nil, "edgeprovd", "backup", "--config", d.Config, "--out", filepath.Join(dir, "offline.tar"))
	if r.Code != 0 || !strings.Contains(r.Stdout, "(offline, from the store file)") {
		t.Fatalf("offline backup: exit %d %s%s", r.Code, r.Stdout, r.Stderr)
	}
	d.Start(t)
}

// TestStoreSchemaNewerRefused: a store written by a newer edgeprovd (the
// downgrade case of an upgrade) is refused at start with what to do.
func TestStoreSchemaNewerRefused(t *testing.T) {
	t.Parallel()
	d := newDaemon(t)
	db, err := bbolt.Open(filepath.Join(d.StateDir, "edgeprov.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	newer := strconv.Itoa(store.SchemaVersion + 1)
	err = db.Update(func(tx *bbolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("schemaVersion"), []byte(newer)) })
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"run", "--config", d.Config}, {"backup", "--config", d.Config, "--out", filepath.Join(t.TempDir(), "b.tar")}} {
		r := e2e.Run(t, nil, "edgeprovd", args...)
		want := fmt.Sprintf("store schema version %s is newer than this edgeprovd supports (%d): install an edgeprovd at least as new", newer, store.SchemaVersion)
		if r.Code != 1 || !strings.Contains(r.Stderr, want) || !strings.Contains(r.Stderr, "edgeprovd restore") {
			t.Fatalf("%s: exit %d, want 1 with %q\n%s", args[0], r.Code, want, r.Stderr)
		}
	}
}
