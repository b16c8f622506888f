package packaging

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/testenv/e2e"
)

func TestMain(m *testing.M) {
	code := m.Run()
	e2e.Cleanup()
	os.Exit(code)
}

const debVersion = "0.0.1~test"

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// buildDebs runs make deb into a temporary directory.
func buildDebs(t *testing.T) (daemon, agent string) {
	t.Helper()
	for _, tool := range []string{"make", "dpkg-deb", "dpkg", "systemd-sysusers", "systemd-tmpfiles", "deb-systemd-helper"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (Debian packages make, dpkg, systemd, init-system-helpers): %v", tool, err)
		}
	}
	out := t.TempDir()
	cmd := exec.Command("make", "deb", "DEB_OUT="+out, "DEB_VERSION="+debVersion, "VERSION="+debVersion)
	cmd.Dir = e2e.RepoRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, b)
	}
	arch := strings.TrimSpace(run(t, nil, "go", "env", "GOARCH"))
	daemon = filepath.Join(out, fmt.Sprintf("edgeprovd_%s_%s.deb", debVersion, arch))
	agent = filepath.Join(out, fmt.Sprintf("edgeprov-agent_%s_%s.deb", debVersion, arch))
	return daemon, agent
}

// contents maps each path in a package to its mode string (dpkg-deb -c).
func contents(t *testing.T, deb string) map[string]string {
	t.Helper()
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(run(t, nil, "dpkg-deb", "-c", deb)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || strings.HasPrefix(f[0], "d") {
			continue
		}
		m[strings.TrimPrefix(f[len(f)-1], ".")] = f[0] + " " + f[1]
	}
	return m
}

func TestDebPackages(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("installing the packages into a scratch root needs root (the postinst sets file owners): run the tests as root, as make test does")
	}
	daemon, agent := buildDebs(t)

	t.Run("metadata", func(t *testing.T) {
		for deb, name := range map[string]string{daemon: "edgeprovd", agent: "edgeprov-agent"} {
			f := run(t, nil, "dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Depends")
			want := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: %s\nDepends: systemd (>= 247), init-system-helpers (>= 1.60), libc6 (>= 2.34)\n", name, debVersion, strings.TrimSpace(run(t, nil, "go", "env", "GOARCH")))
			if f != want {
				t.Errorf("%s control:\n%s\nwant:\n%s", name, f, want)
			}
		}
	})

	t.Run("contents", func(t *testing.T) {
		tests := []struct {
			deb  string
			want map[string]string
		}{
			{daemon, map[string]string{
				"/usr/bin/edgeprovd":                                         "-rwxr-xr-x root/root",
				"/usr/bin/edgeprovctl":                                       "-rwxr-xr-x root/root",
				"/usr/lib/systemd/system/edgeprovd.service":                  "-rw-r--r-- root/root",
				"/usr/lib/systemd/system/edgeprovd.socket":                   "-rw-r--r-- root/root",
				"/usr/lib/systemd/system/edgeprovd-mqtt.socket":              "-rw-r--r-- root/root",
				"/usr/lib/systemd/system/edgeprovd-service.socket":           "-rw-r--r-- root/root",
				"/usr/lib/sysusers.d/edgeprovd.conf":                         "-rw-r--r-- root/root",
				"/usr/lib/tmpfiles.d/edgeprovd.conf":                         "-rw-r--r-- root/root",
				"/etc/edgeprov/edgeprovd.yaml":                               "-rw-r----- root/root",
				"/etc/edgeprov/enrollments.yaml":                             "-rw-r----- root/root",
				"/usr/share/doc/edgeprovd/README.md":                         "-rw-r--r-- root/root",
				"/usr/share/doc/edgeprovd/examples/edgeprovd.example.yaml":   "-rw-r--r-- root/root",
				"/usr/share/doc/edgeprovd/examples/enrollments.example.yaml": "-rw-r--r-- root/root",
				"/usr/share/lintian/overrides/edgeprovd":                     "-rw-r--r-- root/root",
			}},
			{agent, map[string]string{
				"/usr/bin/edgeprov-agent":                           "-rwxr-xr-x root/root",
				"/usr/lib/systemd/system/edgeprov-agent.service":    "-rw-r--r-- root/root",
				"/usr/lib/tmpfiles.d/edgeprov-agent.conf":           "-rw-r--r-- root/root",
				"/usr/share/doc/edgeprov-agent/README.md":           "-rw-r--r-- root/root",
				"/usr/share/doc/edgeprov-agent/examples/agent.yaml": "-rw-r--r-- root/root",
			}},
		}
		for _, tt := range tests {
			got := contents(t, tt.deb)
			for p, mode := range tt.want {
				if got[p] != mode {
					t.Errorf("%s: %s is %q, want %q", filepath.Base(tt.deb), p, got[p], mode)
				}
			}
			for p := range got {
				if _, ok := tt.want[p]; !ok {
					t.Errorf("%s: unexpected file %s", filepath.Base(tt.deb), p)
				}
			}
		}
	})

	t.Run("control-files", func(t *testing.T) {
		for deb, want := range map[string][]string{daemon: {"postinst", "prerm", "postrm"}, agent: {"postinst", "postrm"}} {
			dir := t.TempDir()
			run(t, nil, "dpkg-deb", "-e", deb, dir)
			for _, s := range want {
				st, err := os.Stat(filepath.Join(dir, s))
				if err != nil || st.Mode().Perm() != 0o755 {
					t.Fatalf("%s: %s missing or not executable: %v", filepath.Base(deb), s, err)
				}
				run(t, nil, "sh", "-n", filepath.Join(dir, s))
			}
			conf, _ := os.ReadFile(filepath.Join(dir, "conffiles"))
			wantConf := ""
			if deb == daemon {
				wantConf = "/etc/edgeprov/edgeprovd.yaml\n/etc/edgeprov/enrollments.yaml\n"
			}
			if string(conf) != wantConf {
				t.Errorf("%s conffiles: %q, want %q", filepath.Base(deb), conf, wantConf)
			}
		}
	})

	t.Run("install-in-scratch-root", func(t *testing.T) { installInScratchRoot(t, daemon, agent) })
}

// installInScratchRoot installs both packages with dpkg --root and the
// maintainer scripts run outside a chroot with DPKG_ROOT set, as image
// builders do, then upgrades, removes and purges them.
func installInScratchRoot(t *testing.T, daemon, agent string) {
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		os.WriteFile(filepath.Join(root, f), nil, 0o644)
	}
	os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("edgebox-7\n"), 0o644)
	dpkg := func(args ...string) string {
		t.Helper()
		// Dependencies (systemd itself) are the host's here, not the root's.
		return run(t, nil, "dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--force-depends", "--log=/dev/null"}, args...)...)
	}
	at := func(p string) string { return filepath.Join(root, p) }

	out := dpkg("-i", daemon, agent)
	m := regexp.MustCompile(`edgeprovd: instance created in /var/lib/edgeprov, ID scope (0ne[0-9A-F]{8})`).FindStringSubmatch(out)
	if m == nil || strings.Contains(out, "SharedAccessKey") {
		t.Fatalf("install output (must name the scope, never the policy key):\n%s", out)
	}
	scope := m[1]

	// The user, owning the state that init made; the config readable by its group.
	passwd, _ := os.ReadFile(at("etc/passwd"))
	pw := regexp.MustCompile(`(?m)^edgeprov:x:(\d+):(\d+):[^:]*:/var/lib/edgeprov:/usr/sbin/nologin$`).FindStringSubmatch(string(passwd))
	if pw == nil {
		t.Fatalf("no edgeprov user in the root's /etc/passwd:\n%s", passwd)
	}
	owner := func(p string) string {
		st, err := os.Stat(at(p))
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s %d %d", st.Mode().Perm(), st.Sys().(*syscall.Stat_t).Uid, st.Sys().(*syscall.Stat_t).Gid)
	}
	ids := pw[1] + " " + pw[2]
	for p, want := range map[string]string{
		"var/lib/edgeprov":             "-rwx------ " + ids,
		"var/lib/edgeprov/edgeprov.db": "-rw------- " + ids,
		"var/lib/edgeprov/tls/ca.key":  "-rw------- " + ids,
		"var/lib/edgeprov/policies/provisioningserviceowner.connection-string": "-rw------- " + ids,
		"etc/edgeprov":                "-rwxr-x--- 0 " + pw[2],
		"etc/edgeprov/edgeprovd.yaml": "-rw-r----- 0 " + pw[2],
		"var/lib/edgeprov-agent":      "-rwx------ 0 0",
	} {
		if got := owner(p); got != want {
			t.Errorf("%s: %s, want %s", p, got, want)
		}
	}
	// The server certificate names the root's host.
	cert := run(t, nil, "openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", at("var/lib/edgeprov/tls/server.pem"))
	if !strings.Contains(cert, "DNS:edgebox-7") {
		t.Errorf("server certificate SANs lack the host name:\n%s", cert)
	}
	// Enabled, as dh_installsystemd would, though no systemd runs here.
	for _, l := range []string{"sockets.target.wants/edgeprovd.socket", "sockets.target.wants/edgeprovd-service.socket", "sockets.target.wants/edgeprovd-mqtt.socket",
		"multi-user.target.wants/edgeprovd.service", "multi-user.target.wants/edgeprov-agent.service"} {
		if _, err := os.Lstat(at("etc/systemd/system/" + l)); err != nil {
			t.Errorf("not enabled: %v", err)
		}
	}

	// The installed binaries run: --version, and init refuses the instance there.
	bin := at("usr/bin/edgeprovd")
	if v := run(t, nil, bin, "--version"); v != "edgeprovd "+debVersion+"\n" {
		t.Errorf("edgeprovd --version: %q", v)
	}
	cfgArgs := []string{"--config", at("etc/edgeprov/edgeprovd.yaml"), "--state-dir", at("var/lib/edgeprov")}
	r := e2eRun(t, bin, append([]string{"init"}, cfgArgs...)...)
	if r.code == 0 || !strings.Contains(r.out, "refusing to overwrite") || !strings.Contains(r.out, scope) {
		t.Errorf("second init: exit %d\n%s", r.code, r.out)
	}
	run(t, nil, bin, "check-config", at("etc/edgeprov/edgeprovd.yaml"))
	if v := run(t, nil, at("usr/bin/edgeprov-agent"), "version"); !strings.Contains(v, debVersion) {
		t.Errorf("edgeprov-agent version: %q", v)
	}

	checkPackagedLayout(t, root)

	// Upgrade (reinstall): the edited conffile and the instance stay.
	conf := at("etc/edgeprov/edgeprovd.yaml")
	data, _ := os.ReadFile(conf)
	edited := strings.Replace(string(data), "hub.edgeprov.local", "hub.factory.example", 1)
	os.WriteFile(conf, []byte(edited), 0o640)
	out = dpkg("-i", daemon)
	if strings.Contains(out, "instance created") {
		t.Errorf("the upgrade ran init again:\n%s", out)
	}
	if data, _ := os.ReadFile(conf); string(data) != edited {
		t.Errorf("the upgrade replaced the edited conffile")
	}

	// Remove keeps conffiles and state; purge drops conffiles and enablement, keeps state.
	dpkg("-r", "edgeprovd")
	if _, err := os.Stat(conf); err != nil {
		t.Errorf("remove deleted a conffile: %v", err)
	}
	if _, err := os.Stat(bin); err == nil {
		t.Errorf("remove left the binary")
	}
	out = dpkg("-P", "edgeprovd", "edgeprov-agent")
	if _, err := os.Stat(conf); err == nil {
		t.Errorf("purge left a conffile")
	}
	if _, err := os.Stat(at("var/lib/edgeprov/edgeprov.db")); err != nil {
		t.Errorf("purge deleted the instance's store: %v", err)
	}
	if !strings.Contains(out, "/var/lib/edgeprov (instance CA, registration records) is kept") {
		t.Errorf("purge does not say the state is kept:\n%s", out)
	}
	left, _ := filepath.Glob(at("etc/systemd/system/*/edgeprov*"))
	if len(left) > 0 {
		t.Errorf("purge left unit links: %v", left)
	}
	status, _ := os.ReadFile(at("var/lib/dpkg/status"))
	if slices.Contains(strings.Split(string(status), "\n"), "Package: edgeprovd") {
		t.Errorf("edgeprovd still known to dpkg after purge:\n%s", status)
	}
}

type result struct {
	code int
	out  string
}

func e2eRun(t *testing.T, name string, args ...string) result {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return result{0, string(out)}
	case errors.As(err, &ee):
		return result{ee.ExitCode(), string(out)}
	}
	t.Fatal(err)
	return result{}
}

// checkPackagedLayout runs the installed edgeprovd on the packaged config and
// state (on ephemeral ports: nothing of the host is touched) and runs the
// installed edgeprovctl check against it with the connection string and CA
// the postinst left.
func checkPackagedLayout(t *testing.T, root string) {
	at := func(p string) string { return filepath.Join(root, p) }
	ready := filepath.Join(t.TempDir(), "ready.json")
	cmd := exec.Command(at("usr/bin/edgeprovd"), "run", "--config", at("etc/edgeprov/edgeprovd.yaml"), "--state-dir", at("var/lib/edgeprov"),
		"--listen", "127.0.0.1:0", "--service-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--ready-file", ready)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := <-done; err != nil {
			t.Errorf("installed edgeprovd: %v\n%s", err, log.String())
		}
	}()
	var addrs struct{ Service string }
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if data, err := os.ReadFile(ready); err == nil && json.Unmarshal(data, &addrs) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the installed edgeprovd did not start")
		}
	}
	check := exec.Command(at("usr/bin/edgeprovctl"), "check", "--address", addrs.Service, "--config", at("etc/edgeprov/edgeprovd.yaml"))
	check.Env = append(os.Environ(),
		"EDGEPROV_CONNECTION_STRING_FILE="+at("var/lib/edgeprov/policies/provisioningserviceowner.connection-string"),
		"EDGEPROV_CA_FILE="+at("var/lib/edgeprov/tls/ca.pem"))
	out, err := check.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "service listener") {
		t.Fatalf("edgeprovctl check on the packaged layout: %v\n%s", err, out)
	}
	t.Logf("edgeprovctl check:\n%s", out)
}
