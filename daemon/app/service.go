package app

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edgeprov/edgeprov/daemon/catalog"
	"github.com/edgeprov/edgeprov/daemon/config"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/serviceapi"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/hsm/keyfile"
)

// loadPolicies reads the owner policy made by init and the configured ones.
// Keys stay in memory only; they are never logged.
func loadPolicies(cfg *config.Config) ([]*serviceapi.Policy, error) {
	owner, err := readPolicyKeys(filepath.Join(cfg.PolicyDir(), config.OwnerPolicy+".key"))
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", config.OwnerPolicy, err)
	}
	out := []*serviceapi.Policy{{Name: config.OwnerPolicy, Keys: owner, Rights: serviceapi.AllRights}}
	for i, p := range cfg.Service.Policies {
		keys, err := readPolicyKeys(cfg.Path(p.KeyFile))
		if err != nil {
			return nil, &ExitError{ExitConfig, fmt.Errorf("%s: service.policies[%d] (%s): %w", cfg.File(), i, p.Name, err)}
		}
		pol := &serviceapi.Policy{Name: p.Name, Keys: keys}
		for _, r := range p.Rights {
			right, _ := serviceapi.ParseRight(r) // config.Validate checked the names
			pol.Rights = append(pol.Rights, right)
		}
		out = append(out, pol)
	}
	return out, nil
}

// readPolicyKeys reads one or two base64 keys, one per line.
func readPolicyKeys(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, err := sas.DecodeKey(l)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 || len(keys) > 2 {
		return nil, fmt.Errorf("%s must hold one or two base64 keys, one per line", path)
	}
	return keys, nil
}

// continuationKey derives the MAC key of continuation tokens from the server
// key, so that tokens survive a restart and are shared by replicas that share
// the instance's TLS material, without another secret to manage.
func continuationKey(cfg *config.Config) ([]byte, error) {
	data, err := os.ReadFile(cfg.ServerKeyPath())
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, data)
	m.Write([]byte("edgeprov service API continuation tokens"))
	return m.Sum(nil), nil
}

// ReloadResult is the outcome of the last catalog (re)load.
type ReloadResult struct {
	Time        time.Time `json:"time"`
	Trigger     string    `json:"trigger"` // startup, sighup, file-change
	OK          bool      `json:"ok"`
	Error       string    `json:"error,omitempty"`
	Individuals int       `json:"individuals"`
	Groups      int       `json:"enrollmentGroups"`
	// Shadowed are API-made entries the catalog hides (the catalog wins).
	Shadowed []string `json:"shadowed,omitempty"`
}

// reloader serialises catalog reloads (SIGHUP and the file watcher) and keeps
// their last result and counts.
type reloader struct {
	mu        sync.Mutex
	last      *ReloadResult
	ok, fails int
}

// ReloadCatalog reloads the catalog on an operator's request (SIGHUP).
func (d *Daemon) ReloadCatalog() error { return d.reloadCatalog("sighup") }

// reloadCatalog parses and validates the whole catalog file and swaps it in
// atomically; on any error the current catalog keeps serving and the error
// (file:line: field: message) is logged and kept for the status endpoint.
// In-flight registrations keep the snapshot they started with.
func (d *Daemon) reloadCatalog(trigger string) error {
	if d.cfg.Catalog == "" {
		return nil
	}
	d.reload.mu.Lock()
	defer d.reload.mu.Unlock()
	res := &ReloadResult{Time: time.Now().UTC(), Trigger: trigger}
	refuse := func(err error) error {
		res.Error = err.Error()
		d.reload.last, d.reload.fails = res, d.reload.fails+1
		d.metrics.Reloaded(false)
		d.log.Error("catalog reload refused; the previous catalog keeps serving", "trigger", trigger, "error", err)
		return err
	}
	f, err := catalog.Load(d.cfg.Path(d.cfg.Catalog))
	if err != nil {
		return refuse(err)
	}
	pool, err := d.loadCAs(context.Background(), f)
	if err != nil {
		return refuse(err)
	}
	d.metrics.Reloaded(true)
	d.cas.Swap(pool)
	d.catalog.Swap(f)
	res.OK, res.Individuals, res.Groups = true, len(f.Individuals), len(f.Groups)
	if sh, err := d.dir.Shadowed(context.Background(), f); err == nil && len(sh) > 0 {
		res.Shadowed = sh
		d.log.Warn("catalog entries hide entries made through the service API; delete one of each pair", "count", len(sh), "first", sh[0])
	}
	d.reload.last, d.reload.ok = res, d.reload.ok+1
	d.log.Info("catalog reloaded", "trigger", trigger, "file", f.Path, "enrollments", len(f.Individuals), "enrollmentGroups", len(f.Groups),
		"caCertificates", pool.Len())
	return nil
}

// fingerprint identifies the catalog file's and its key files' content.
type fingerprint struct {
	stat string
	sum  [32]byte
}

func (d *Daemon) statCatalog() string {
	files := []string{d.cfg.Path(d.cfg.Catalog)}
	if f := d.catalog.Current(); f != nil {
		files = append(files, f.KeyFiles...)
	}
	var b strings.Builder
	for _, name := range files {
		if fi, err := os.Stat(name); err == nil {
			fmt.Fprintf(&b, "%s %d %d %v\n", name, fi.Size(), fi.ModTime().UnixNano(), fi.Mode())
		} else {
			fmt.Fprintf(&b, "%s missing\n", name)
		}
	}
	return b.String()
}

func (d *Daemon) hashCatalog() [32]byte {
	h := sha256.New()
	files := []string{d.cfg.Path(d.cfg.Catalog)}
	if f := d.catalog.Current(); f != nil {
		files = append(files, f.KeyFiles...)
	}
	for _, name := range files {
		data, _ := os.ReadFile(name)
		fmt.Fprintf(h, "%s %d\n", name, len(data))
		h.Write(data)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// watchCatalog polls the catalog file (and the key files it references) and
// reloads when their content changed and then held still for a moment, so an
// editor's partial write is not taken for the new catalog. Polling works with
// every editor and with files swapped by rename or symlink (e.g. mounted
// config maps), where inotify watches go stale.
func (d *Daemon) watchCatalog(ctx context.Context) {
	every := d.cfg.CatalogReload.PollInterval.Duration
	if d.cfg.Catalog == "" || every <= 0 {
		return
	}
	last := fingerprint{d.statCatalog(), d.hashCatalog()}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := d.statCatalog()
		if st == last.stat {
			continue
		}
		sum := d.hashCatalog()
		settle := min(every/2, 200*time.Millisecond)
		select {
		case <-ctx.Done():
			return
		case <-time.After(settle):
		}
		if st2 := d.statCatalog(); st2 != st {
			continue // still being written; look again on the next tick
		}
		if sum == last.sum {
			last.stat = st // touched, not changed
			continue
		}
		last = fingerprint{st, sum}
		d.reloadCatalog("file-change")
		// A reload may have changed the key files to follow.
		last.stat = d.statCatalog()
	}
}

// CertStatus is a certificate's validity, for `edgeprovctl check`.
type CertStatus struct {
	Name     string    `json:"name"`
	Path     string    `json:"path"`
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"notAfter"`
	DaysLeft int       `json:"daysLeft"`
	Error    string    `json:"error,omitempty"`
}

// Status is what GET /edgeprov/status answers.
type Status struct {
	Version      string            `json:"version"`
	IDScope      string            `json:"idScope"`
	StartedAt    time.Time         `json:"startedAt"`
	Now          time.Time         `json:"now"`
	ConfigFile   string            `json:"configFile"`
	Listeners    map[string]string `json:"listeners"`
	Certificates []CertStatus      `json:"certificates"`
	Store        StoreStatus       `json:"store"`
	Catalog      CatalogStatus     `json:"catalog"`
	LinkedHubs   []HubStatus       `json:"linkedHubs"`
}

// StoreStatus says whether the store answers.
type StoreStatus struct {
	Path      string `json:"path"`
	SizeBytes int64  `json:"sizeBytes"`
	OK        bool   `json:"ok"`
	Error     string `json:"error,omitempty"`
}

// CatalogStatus is the catalog being served and the last reload.
type CatalogStatus struct {
	File         string        `json:"file,omitempty"`
	Individuals  int           `json:"individuals"`
	Groups       int           `json:"enrollmentGroups"`
	PollInterval string        `json:"pollInterval"`
	LastReload   *ReloadResult `json:"lastReload,omitempty"`
	// ReloadsOK and ReloadsFailed count reloads since start (metrics).
	ReloadsOK     int `json:"reloadsOk"`
	ReloadsFailed int `json:"reloadsFailed"`
}

// HubStatus is a linked hub.
type HubStatus struct {
	Name     string `json:"name"`
	HostName string `json:"hostName"`
	Driver   string `json:"driver"`
}

func (d *Daemon) status(ctx context.Context) any {
	s := &Status{Version: Version, IDScope: d.scope, StartedAt: d.started, Now: time.Now().UTC(), ConfigFile: d.cfg.File(),
		Listeners: map[string]string{"device": d.device.Addr().String()}}
	if d.service != nil {
		s.Listeners["service"] = d.serviceLn.Addr().String()
	}
	for _, c := range []struct{ name, path string }{{"device endpoint CA", d.cfg.CACertPath()}, {"server certificate", d.cfg.ServerCertPath()}} {
		cs := CertStatus{Name: c.name, Path: c.path}
		if certs, err := keyfile.LoadCerts(c.path); err != nil {
			cs.Error = err.Error()
		} else {
			cs.Subject, cs.NotAfter = certs[0].Subject.String(), certs[0].NotAfter.UTC()
			cs.DaysLeft = int(time.Until(certs[0].NotAfter).Hours() / 24)
		}
		s.Certificates = append(s.Certificates, cs)
	}
	s.Store.Path = d.cfg.StorePath()
	if fi, err := os.Stat(s.Store.Path); err == nil {
		s.Store.SizeBytes = fi.Size()
	}
	err := d.store.View(ctx, func(tx store.Tx) error { _, err := tx.Records(d.scope, "", 1); return err })
	s.Store.OK = err == nil
	if err != nil {
		s.Store.Error = err.Error()
	}
	s.Catalog.PollInterval = d.cfg.CatalogReload.PollInterval.String()
	if f := d.catalog.Current(); f != nil {
		s.Catalog.File, s.Catalog.Individuals, s.Catalog.Groups = f.Path, len(f.Individuals), len(f.Groups)
	}
	d.reload.mu.Lock()
	s.Catalog.LastReload, s.Catalog.ReloadsOK, s.Catalog.ReloadsFailed = d.reload.last, d.reload.ok, d.reload.fails
	d.reload.mu.Unlock()
	for _, h := range d.cfg.LinkedHubs {
		s.LinkedHubs = append(s.LinkedHubs, HubStatus{Name: h.Name, HostName: h.HostName, Driver: h.Driver})
	}
	return s
}
