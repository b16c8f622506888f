package ctl

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeprov/edgeprov/daemon/catalog"
	"github.com/edgeprov/edgeprov/daemon/config"
)

// daemonStatus is what GET /edgeprov/status answers (the fields check reads).
type daemonStatus struct {
	Version      string            `json:"version"`
	IDScope      string            `json:"idScope"`
	Now          time.Time         `json:"now"`
	ConfigFile   string            `json:"configFile"`
	Listeners    map[string]string `json:"listeners"`
	Certificates []struct {
		Name     string    `json:"name"`
		Path     string    `json:"path"`
		NotAfter time.Time `json:"notAfter"`
		DaysLeft int       `json:"daysLeft"`
		Error    string    `json:"error"`
	} `json:"certificates"`
	Store struct {
		Path      string `json:"path"`
		SizeBytes int64  `json:"sizeBytes"`
		OK        bool   `json:"ok"`
		Error     string `json:"error"`
	} `json:"store"`
	Catalog struct {
		File        string `json:"file"`
		Individuals int    `json:"individuals"`
		Groups      int    `json:"enrollmentGroups"`
		LastReload  *struct {
			Time     time.Time `json:"time"`
			Trigger  string    `json:"trigger"`
			OK       bool      `json:"ok"`
			Error    string    `json:"error"`
			Shadowed []string  `json:"shadowed"`
		} `json:"lastReload"`
	} `json:"catalog"`
	LinkedHubs []struct {
		Name, HostName, Driver string
	} `json:"linkedHubs"`
}

// Check is one line of the doctor's report.
type Check struct {
	Name   string `json:"name"`
	Result string `json:"result"` // ok, warn, fail
	Detail string `json:"detail"`
}

func checkCmd(g *globals) *cobra.Command {
	var cfgFile string
	var warnDays int
	var maxSkew time.Duration
	c := &cobra.Command{
		Use:   "check",
		Short: "A doctor: config, certificates and their expiry, store, catalog, listeners, clock",
		Long: `check asks the daemon for its status through the service API and checks what
an operator would: the local config and catalog (with --config), the TLS
certificates the daemon serves and has on disk (expiry), that the store answers,
the last catalog reload, that both listeners accept TLS connections, and that
the two clocks agree (SAS tokens depend on it). It exits 1 if anything fails.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			checks := runChecks(cmd.Context(), g, cfgFile, warnDays, maxSkew)
			failed := 0
			for _, c := range checks {
				if c.Result == "fail" {
					failed++
				}
			}
			if g.output == "json" {
				printJSON(g.stdout, checks)
			} else {
				t := newTable(g.stdout, "RESULT", "CHECK", "DETAIL")
				for _, c := range checks {
					t.row(c.Result, c.Name, c.Detail)
				}
				t.flush()
			}
			if failed > 0 {
				return &ExitError{ExitFail, fmt.Errorf("%d checks failed", failed)}
			}
			return nil
		},
	}
	c.Flags().StringVar(&cfgFile, "config", "", "also validate this edgeprovd config (and its catalog) locally")
	c.Flags().IntVar(&warnDays, "warn-days", 30, "warn when a certificate expires within this many days")
	c.Flags().DurationVar(&maxSkew, "max-clock-skew", 30*time.Second, "warn when the clocks differ by more than this (fail at 5m)")
	return c
}

func runChecks(ctx context.Context, g *globals, cfgFile string, warnDays int, maxSkew time.Duration) []Check {
	var out []Check
	add := func(name, result, format string, args ...any) {
		out = append(out, Check{name, result, fmt.Sprintf(format, args...)})
	}
	if cfgFile != "" {
		if cfg, err := config.Load(cfgFile); err != nil {
			add("config", "fail", "%v", err)
		} else {
			add("config", "ok", "%s (%d linked hubs, service endpoint %v)", cfgFile, len(cfg.LinkedHubs), cfg.Service != nil)
			if cfg.Catalog != "" {
				if f, err := catalog.Load(cfg.Path(cfg.Catalog)); err != nil {
					add("catalog file", "fail", "%v", err)
				} else {
					add("catalog file", "ok", "%s: %d enrollments, %d groups", f.Path, len(f.Individuals), len(f.Groups))
				}
			}
		}
	}
	cl, err := g.client()
	if err != nil {
		add("connection", "fail", "%v", err)
		return out
	}
	var st daemonStatus
	before := time.Now()
	date, err := cl.Status(ctx, &st)
	after := time.Now()
	if err != nil {
		add("service endpoint", "fail", "%s: %v", cl.HostName(), err)
		return out
	}
	add("service endpoint", "ok", "%s answers (edgeprovd %s, ID scope %s, round trip %s)", cl.HostName(), st.Version, st.IDScope, after.Sub(before).Round(time.Millisecond))

	// Clock: the daemon's "now" against ours, halfway through the call.
	skew := st.Now.Sub(before.Add(after.Sub(before) / 2))
	if st.Now.IsZero() {
		skew = date.Sub(before)
	}
	switch abs := max(skew, -skew); {
	case abs > 5*time.Minute:
		add("clock", "fail", "the daemon's clock is %s off ours: SAS tokens will be refused", skew.Round(time.Second))
	case abs > maxSkew:
		add("clock", "warn", "the daemon's clock is %s off ours", skew.Round(time.Second))
	default:
		add("clock", "ok", "within %s of ours", abs.Round(time.Millisecond))
	}

	if chain, err := cl.PeerCertificates(ctx); err != nil {
		add("served certificate", "fail", "%v", err)
	} else {
		leaf := chain[0]
		out = append(out, certCheck("served certificate", leaf.Subject.CommonName, leaf.NotAfter, warnDays))
	}
	for _, c := range st.Certificates {
		if c.Error != "" {
			add("certificate "+c.Name, "fail", "%s: %s", c.Path, c.Error)
			continue
		}
		out = append(out, certCheck("certificate "+c.Name, c.Path, c.NotAfter, warnDays))
	}
	if st.Store.OK {
		add("store", "ok", "%s (%.1f MB)", st.Store.Path, float64(st.Store.SizeBytes)/1e6)
	} else {
		add("store", "fail", "%s: %s", st.Store.Path, st.Store.Error)
	}
	switch lr := st.Catalog.LastReload; {
	case st.Catalog.File == "":
		add("catalog", "ok", "no catalog configured (API-made enrollments only)")
	case lr != nil && !lr.OK:
		add("catalog", "fail", "the last reload (%s, %s) was refused, the previous catalog keeps serving: %s", lr.Trigger, lr.Time.Format(time.RFC3339), lr.Error)
	case lr != nil && len(lr.Shadowed) > 0:
		add("catalog", "warn", "%s hides %d API-made entries (e.g. %s)", st.Catalog.File, len(lr.Shadowed), lr.Shadowed[0])
	default:
		add("catalog", "ok", "%s: %d enrollments, %d groups", st.Catalog.File, st.Catalog.Individuals, st.Catalog.Groups)
	}
	host, _, err := net.SplitHostPort(cl.HostName())
	if err != nil {
		host = cl.HostName()
	}
	for _, name := range []string{"device", "service"} {
		addr, ok := st.Listeners[name]
		if !ok {
			continue
		}
		_, port, _ := net.SplitHostPort(addr)
		target := net.JoinHostPort(host, port)
		if name == "service" && g.address != "" {
			target = g.address
		}
		d := &tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}} // reachability only; trust is checked above
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := d.DialContext(dctx, "tcp", target)
		cancel()
		if err != nil {
			add(name+" listener", "fail", "%s (bound to %s): %v", target, addr, err)
			continue
		}
		conn.Close()
		add(name+" listener", "ok", "%s accepts TLS (bound to %s)", target, addr)
	}
	if len(st.LinkedHubs) == 0 {
		add("linked hubs", "fail", "none")
	} else {
		add("linked hubs", "ok", "%d", len(st.LinkedHubs))
	}
	return out
}

func certCheck(name, what string, notAfter time.Time, warnDays int) Check {
	left := time.Until(notAfter)
	days := int(left.Hours() / 24)
	switch {
	case left <= 0:
		return Check{name, "fail", fmt.Sprintf("%s expired on %s", what, notAfter.Format("2006-01-02"))}
	case days < warnDays:
		return Check{name, "warn", fmt.Sprintf("%s expires in %d days (%s)", what, days, notAfter.Format("2006-01-02"))}
	}
	return Check{name, "ok", fmt.Sprintf("%s valid until %s (%d days)", what, notAfter.Format("2006-01-02"), days)}
}
