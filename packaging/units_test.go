package packaging

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	agentconfig "github.com/edgeprov/edgeprov/agent/config"
	"github.com/edgeprov/edgeprov/daemon/app"
	"github.com/edgeprov/edgeprov/daemon/catalog"
	"github.com/edgeprov/edgeprov/daemon/config"
	"github.com/edgeprov/edgeprov/testenv/e2e"
)

var units = []string{"edgeprovd.service", "edgeprovd.socket", "edgeprovd-mqtt.socket", "edgeprovd-service.socket", "edgeprov-agent.service"}

func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze not found: install systemd (Debian: apt-get install systemd; PID 1 need not be systemd): %v", err)
	}
	return p
}

// unitRoot lays out a root directory as the packages install it: the host's
// system units (the targets ours name), ours, and the binaries they run.
func unitRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	sys := filepath.Join(root, "usr/lib/systemd/system")
	if err := os.MkdirAll(sys, 0o755); err != nil {
		t.Fatal(err)
	}
	host := "/usr/lib/systemd/system"
	if _, err := os.Stat(filepath.Join(host, "sysinit.target")); err != nil {
		host = "/lib/systemd/system"
	}
	if out, err := exec.Command("cp", "-a", host+"/.", sys).CombinedOutput(); err != nil {
		t.Fatalf("copy the host's units: %v\n%s", err, out)
	}
	for _, u := range units {
		copyFile(t, filepath.Join("systemd", u), filepath.Join(sys, u), 0o644)
	}
	for _, b := range []string{"edgeprovd", "edgeprov-agent"} {
		copyFile(t, e2e.Bin(t, b), filepath.Join(root, "usr/bin", b), 0o755)
	}
	kill, err := exec.LookPath("kill")
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, kill, filepath.Join(root, "bin/kill"), 0o755)
	return root
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, mode); err != nil {
		t.Fatal(err)
	}
}

// TestUnitsVerify: systemd-analyze verify finds nothing to say about any unit
// (a warning such as an unknown directive fails the test too).
func TestUnitsVerify(t *testing.T) {
	sa := systemdAnalyze(t)
	root := unitRoot(t)
	for _, u := range units {
		t.Run(u, func(t *testing.T) {
			out, err := exec.Command(sa, "verify", "--root="+root, u).CombinedOutput()
			if err != nil || len(out) > 0 {
				t.Fatalf("systemd-analyze verify %s: %v\n%s", u, err, out)
			}
		})
	}
	// The check can fail: a unit with a misspelt directive is reported.
	bad := filepath.Join(root, "usr/lib/systemd/system/bad.service")
	copyFile(t, filepath.Join("systemd", "edgeprovd.service"), bad, 0o644)
	data, _ := os.ReadFile(bad)
	os.WriteFile(bad, []byte(strings.Replace(string(data), "ProtectHome=yes", "ProtectHomes=yes", 1)), 0o644)
	if out, _ := exec.Command(sa, "verify", "--root="+root, "bad.service").CombinedOutput(); !strings.Contains(string(out), "ProtectHomes") {
		t.Fatalf("a misspelt directive passed verification: %s", out)
	}
}

// TestSecurityExposure asserts systemd-analyze security's exposure score: at
// most 2.0 for edgeprovd.service (the bar) and for the agent.
func TestSecurityExposure(t *testing.T) {
	sa := systemdAnalyze(t)
	root := unitRoot(t)
	re := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	for _, u := range []string{"edgeprovd.service", "edgeprov-agent.service"} {
		out, err := exec.Command(sa, "security", "--offline=yes", "--root="+root, "--no-pager", u).CombinedOutput()
		m := re.FindSubmatch(out)
		if err != nil || m == nil {
			t.Fatalf("systemd-analyze security %s: %v\n%s", u, err, out)
		}
		score, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s: exposure %.1f", u, score)
		if score > 2.0 {
			t.Errorf("%s: exposure %.1f, want at most 2.0\n%s", u, score, out)
		}
	}
}

// directives returns a unit file's values of key.
func directives(t *testing.T, unit, key string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("systemd", unit))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.TrimSpace(k) == key {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

// TestSocketNamesAreServed: each socket unit's FileDescriptorName is a name
// edgeprovd serves (an unknown name makes it refuse to start).
func TestSocketNamesAreServed(t *testing.T) {
	socks, _ := filepath.Glob("systemd/*.socket")
	if len(socks) == 0 {
		t.Fatal("no socket units")
	}
	for _, s := range socks {
		names := directives(t, filepath.Base(s), "FileDescriptorName")
		if len(names) != 1 || !slices.Contains(app.ListenerNames(), names[0]) {
			t.Errorf("%s: FileDescriptorName=%v, want one of %v", s, names, app.ListenerNames())
		}
	}
}

// TestPackagedFilesAgree: the packaged config loads, names the state
// directory the unit and tmpfiles.d manage, and its catalog loads; the agent
// unit's condition is the example agent config's state file.
func TestPackagedFilesAgree(t *testing.T) {
	cfg, err := config.Load("etc/edgeprov/edgeprovd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir != "/var/lib/edgeprov" || directives(t, "edgeprovd.service", "StateDirectory")[0] != "edgeprov" {
		t.Errorf("state directory: config %s, unit %v", cfg.StateDir, directives(t, "edgeprovd.service", "StateDirectory"))
	}
	if _, err := catalog.Load(cfg.Path(cfg.Catalog)); err != nil {
		t.Fatal(err)
	}
	tmp, _ := os.ReadFile("tmpfiles.d/edgeprovd.conf")
	if !strings.Contains(string(tmp), "d /var/lib/edgeprov 0700 edgeprov edgeprov") {
		t.Errorf("tmpfiles.d does not create the state directory for user edgeprov:\n%s", tmp)
	}
	users, _ := os.ReadFile("sysusers.d/edgeprovd.conf")
	if u := directives(t, "edgeprovd.service", "User"); len(u) != 1 || !strings.Contains(string(users), "u "+u[0]+" ") {
		t.Errorf("the service's User=%v is not created by sysusers.d:\n%s", u, users)
	}
	ac, err := agentconfig.Load("../configs/agent.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if want := "!" + ac.StateFile; !slices.Contains(directives(t, "edgeprov-agent.service", "ConditionPathExists"), want) {
		t.Errorf("edgeprov-agent.service lacks ConditionPathExists=%s", want)
	}
}
