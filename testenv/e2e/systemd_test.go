package e2e_test

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/app"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/testenv/e2e"
)

// notifySocket is a NOTIFY_SOCKET the test listens on, as systemd does.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []timedMsg
}

type timedMsg struct {
	at  time.Time
	msg string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify.sock")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, timedMsg{time.Now(), string(buf[:k])})
			n.mu.Unlock()
		}
	}()
	return n
}

func (n *notifySocket) since(t0 time.Time) []timedMsg {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []timedMsg
	for _, m := range n.msgs {
		if !m.at.Before(t0) {
			out = append(out, m)
		}
	}
	return out
}

// wait returns the first message after t0 matching re.
func (n *notifySocket) wait(t *testing.T, t0 time.Time, re string, d *e2e.Daemon) timedMsg {
	t.Helper()
	rx := regexp.MustCompile(re)
	// Status lines are refreshed every 15 s without a watchdog, after a health
	// check that may itself take seconds on a loaded machine.
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range n.since(t0) {
			if rx.MatchString(m.msg) {
				return m
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no notification matching %s; got %v\n%s", re, n.since(t0), d.Log())
	return timedMsg{}
}

func (n *notifySocket) count(t0 time.Time, s string) int {
	k := 0
	for _, m := range n.since(t0) {
		if strings.Contains(m.msg, s) {
			k++
		}
	}
	return k
}

func provision(t *testing.T, d *e2e.Daemon, regID string) {
	t.Helper()
	cfg, _ := agentConfig(t, d, regID, "group")
	if r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg); r.Code != 0 {
		t.Fatalf("agent %s: exit %d\n%s%s\n%s", regID, r.Code, r.Stdout, r.Stderr, d.Log())
	}
}

// TestNotifyLifecycle runs edgeprovd as systemd would with Type=notify: READY
// once it serves, a status line that follows registrations, RELOADING and READY
// around a SIGHUP, STOPPING on SIGTERM.
func TestNotifyLifecycle(t *testing.T) {
	t.Parallel()
	n := newNotifySocket(t)
	d := newDaemon(t)
	t0 := time.Now()
	d.StartWith(t, e2e.StartOptions{Env: []string{"NOTIFY_SOCKET=" + n.path, "WATCHDOG_USEC=2000000"}})

	ready := n.wait(t, t0, `^READY=1\nSTATUS=serving 2 enrollments and 1 enrollment groups \(ID scope 0ne[0-9A-F]{8}\); 0 registrations since start, 0 refused$`, d)
	// READY came after a TLS handshake on the device socket; the endpoint answers.
	c, err := tls.Dial("tcp", d.DeviceAddr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("READY=1 at %v but the device endpoint does not answer: %v", ready.at, err)
	}
	c.Close()

	provision(t, d, "line-0100")
	n.wait(t, t0, `^STATUS=serving .*; 1 registrations since start, 0 refused$`, d)

	// A reload: the catalog gains an individual enrollment.
	cat := filepath.Join(d.Dir, "enrollments.yaml")
	data, err := os.ReadFile(cat)
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.Replace(data, []byte("enrollments:\n"), []byte("enrollments:\n  - registrationId: extra-01\n    attestation: {type: symmetricKey, symmetricKey: {primaryKey: "+b64(individualKey)+"}}\n"), 1)
	e2e.Write(t, cat, string(data))
	t1 := time.Now()
	d.Signal(t, syscall.SIGHUP)
	reloading := n.wait(t, t1, `^RELOADING=1\nMONOTONIC_USEC=[0-9]+$`, d)
	after := n.wait(t, t1, `^READY=1\nSTATUS=serving 3 enrollments and 1 enrollment groups`, d)
	if after.at.Before(reloading.at) {
		t.Fatalf("READY before RELOADING")
	}

	// A broken catalog: still READY (the old one serves), the status says so.
	e2e.Write(t, cat, "version: 1\nenrollments: [{registrationId: bad!}]\n")
	t2 := time.Now()
	d.Signal(t, syscall.SIGHUP)
	n.wait(t, t2, `^RELOADING=1`, d)
	n.wait(t, t2, `^READY=1\nSTATUS=catalog reload refused, the previous catalog keeps serving; serving 3 enrollments`, d)

	t3 := time.Now()
	d.Stop(t)
	n.wait(t, t3, `^STOPPING=1\nSTATUS=stopping`, d)
}

// TestSocketActivationServesAgent passes edgeprovd the device and service
// sockets the test bound, as systemd does (LISTEN_FDS, LISTEN_PID,
// LISTEN_FDNAMES), provisions a device through the first and runs
// edgeprovctl check through the second; the configured addresses are not used.
func TestSocketActivationServesAgent(t *testing.T) {
	t.Parallel()
	var files []*os.File
	var want []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File() // a duplicate: it stays listening
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, ln.Addr().String())
		ln.Close()
		defer f.Close()
		files = append(files, f)
	}
	d := e2e.NewDaemon(t, e2e.Options{Catalog: catalog, Service: true, CatalogFiles: map[string]string{
		"group.key":   b64(groupKey) + "\n",
		"blocked.key": b64(sas.DeriveDeviceKey(groupKey, "line-blocked")) + "\n",
	}})
	// LISTEN_PID must be the daemon's: sh sets it to its own, then execs.
	d.StartWith(t, e2e.StartOptions{
		Prefix:     []string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`},
		Env:        []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=device-https:service-https"},
		ExtraFiles: files,
		Args:       []string{"--listen", "127.0.0.1:1", "--service-listen", "127.0.0.1:1"},
	})
	if d.DeviceAddr != want[0] || d.ServiceAddr != want[1] {
		t.Fatalf("serving device %s, service %s; want the passed sockets %v\n%s", d.DeviceAddr, d.ServiceAddr, want, d.Log())
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(d.Log(), "socketActivated=true"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon does not log that it was socket-activated:\n%s", d.Log())
		}
	}
	provision(t, d, "line-0200")
	if r := ctl(t, d, "check"); r.Code != 0 || !strings.Contains(r.Stdout, "service listener") {
		t.Fatalf("edgeprovctl check through the passed service socket: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
}

// TestSocketActivationUnknownName: a socket edgeprovd does not serve is an
// error at start, not a port whose clients hang.
func TestSocketActivationUnknownName(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, _ := ln.(*net.TCPListener).File()
	ln.Close()
	defer f.Close()
	d := newDaemon(t)
	d.StartWith(t, e2e.StartOptions{
		Prefix:     []string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`},
		Env:        []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=debug-http"},
		ExtraFiles: []*os.File{f},
		NoWait:     true,
	})
	exited, err := d.Exited(20 * time.Second)
	if !exited || err == nil || !strings.Contains(d.Log(), "sockets named debug-http are not served by this edgeprovd (set FileDescriptorName= to one of "+strings.Join(app.ListenerNames(), ", ")+")") {
		t.Fatalf("exited=%v err=%v\n%s", exited, err, d.Log())
	}
}

// TestSocketActivationMQTT passes the MQTT listener as systemd's device-mqtt
// socket; the agent provisions over it. A device-mqtt socket with no mqtt:
// section in the config is refused with a message that says so.
func TestSocketActivationMQTT(t *testing.T) {
	t.Parallel()
	passed := func(t *testing.T) (*os.File, string) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		t.Cleanup(func() { f.Close() })
		return f, ln.Addr().String()
	}
	t.Run("ok/served", func(t *testing.T) {
		t.Parallel()
		f, addr := passed(t)
		d := newMQTTDaemon(t, "")
		d.StartWith(t, e2e.StartOptions{
			Prefix:     []string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`},
			Env:        []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=" + app.ListenerMQTT},
			ExtraFiles: []*os.File{f},
		})
		if d.MQTTAddr != addr {
			t.Fatalf("MQTT on %s, want the passed socket %s\n%s", d.MQTTAddr, addr, d.Log())
		}
		cfg, _ := agentConfigFor(t, d, "line-0301", "group", "mqtt")
		if r := e2e.Run(t, nil, "edgeprov-agent", "provision", "--config", cfg); r.Code != 0 {
			t.Fatalf("agent over the passed MQTT socket: exit %d\n%s%s\n%s", r.Code, r.Stdout, r.Stderr, d.Log())
		}
	})
	t.Run("fail/no-mqtt-section", func(t *testing.T) {
		t.Parallel()
		f, _ := passed(t)
		d := newDaemon(t)
		d.StartWith(t, e2e.StartOptions{
			Prefix:     []string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`},
			Env:        []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=" + app.ListenerMQTT},
			ExtraFiles: []*os.File{f},
			NoWait:     true,
		})
		exited, err := d.Exited(20 * time.Second)
		if !exited || err == nil || !strings.Contains(d.Log(), "a device-mqtt socket was passed but") || !strings.Contains(d.Log(), "has no mqtt: section") {
			t.Fatalf("exited=%v err=%v\n%s", exited, err, d.Log())
		}
	})
}

// TestSystemdSocketActivate runs edgeprovd under systemd-socket-activate, which
// binds the port, waits for the first connection and only then starts the
// daemon, like a .socket unit: the agent's connection waits in the backlog
// until edgeprovd is READY and then provisions.
func TestSystemdSocketActivate(t *testing.T) {
	t.Parallel()
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatalf("systemd-socket-activate not found (Debian: apt-get install systemd): %v", err)
	}
	n := newNotifySocket(t)
	d := newDaemon(t)
	var port string
	for attempt := 0; ; attempt++ {
		port = freePort(t)
		t0 := time.Now()
		d.StartWith(t, e2e.StartOptions{
			Prefix: []string{sa, "-l", "127.0.0.1:" + port, "--fdname=device-https", "-E", "NOTIFY_SOCKET=" + n.path},
			NoWait: true,
		})
		// It prints "Listening on ..." once bound; "Address already in use" if
		// the free port was taken meanwhile.
		for time.Since(t0) < 10*time.Second && !strings.Contains(d.Log(), "Listening on") && !strings.Contains(d.Log(), "in use") {
			time.Sleep(20 * time.Millisecond)
		}
		if strings.Contains(d.Log(), "Listening on") {
			break
		}
		if attempt == 3 {
			t.Fatalf("systemd-socket-activate did not listen:\n%s", d.Log())
		}
		d.Stop(t)
	}
	if n.count(time.Time{}, "READY=1") != 0 {
		t.Fatal("READY=1 before any connection: the daemon started eagerly")
	}
	d.DeviceAddr = "127.0.0.1:" + port
	done := make(chan struct{})
	go func() {
		defer close(done)
		provision(t, d, "line-0300")
	}()
	n.wait(t, time.Time{}, `^READY=1\nSTATUS=serving`, d)
	<-done
	n.wait(t, time.Time{}, `1 registrations since start, 0 refused`, d)
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

// TestWatchdogFollowsHealth: with WATCHDOG_USEC set, edgeprovd pings at half
// the interval while its health checks pass, stops when its state directory
// takes no writes (a full or read-only disk) and says why in its status, and
// pings again once it recovers.
func TestWatchdogFollowsHealth(t *testing.T) {
	t.Parallel()
	n := newNotifySocket(t)
	d := newDaemon(t)
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// root writes anywhere: run the daemon as nobody so that taking the
		// write permission away is felt.
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
		runnable(t, d, 65534, 65534)
		os.Chmod(filepath.Dir(n.path), 0o777)
		os.Chmod(n.path, 0o777)
	}
	t0 := time.Now()
	d.StartWith(t, e2e.StartOptions{Env: []string{"NOTIFY_SOCKET=" + n.path, "WATCHDOG_USEC=1000000"}, Credential: cred})
	n.wait(t, t0, `^READY=1`, d)
	time.Sleep(1500 * time.Millisecond)
	if k := n.count(t0, "WATCHDOG=1"); k < 2 {
		t.Fatalf("%d watchdog pings in 1.5 s at a 1 s watchdog, want at least 2\n%s", k, d.Log())
	}

	if err := os.Chmod(d.StateDir, 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(d.StateDir, 0o700)
	n.wait(t, t0, `^STATUS=UNHEALTHY: state directory: .*permission denied`, d)
	t1 := time.Now()
	time.Sleep(2500 * time.Millisecond)
	if k := n.count(t1, "WATCHDOG=1"); k != 0 {
		t.Fatalf("%d watchdog pings while unhealthy\n%s", k, d.Log())
	}
	if !strings.Contains(d.Log(), "health check failed; watchdog pings stop") {
		t.Fatalf("the log does not say the watchdog stops:\n%s", d.Log())
	}

	os.Chmod(d.StateDir, 0o700)
	t2 := time.Now()
	n.wait(t, t2, `^WATCHDOG=1$`, d)
	n.wait(t, t0, `^STATUS=serving`, d)
}

// runnable lets uid:gid run the built binaries and own the daemon's directory.
func runnable(t *testing.T, d *e2e.Daemon, uid, gid int) {
	t.Helper()
	for dir := filepath.Dir(e2e.Bin(t, "edgeprovd")); dir != "/"; dir = filepath.Dir(dir) {
		if st, err := os.Stat(dir); err == nil && st.Mode().Perm()&0o011 == 0 {
			os.Chmod(dir, st.Mode().Perm()|0o011)
		}
	}
	for dir := filepath.Dir(d.Dir); dir != "/"; dir = filepath.Dir(dir) {
		if st, err := os.Stat(dir); err == nil && st.Mode().Perm()&0o001 == 0 {
			os.Chmod(dir, st.Mode().Perm()|0o001)
		}
	}
	err := filepath.Walk(d.Dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestJournalLogging builds edgeprovd with go-systemd's journal socket moved
// to a path the test listens on, runs it with stderr "connected to the
// journal" (JOURNAL_STREAM naming its device and inode, as systemd sets it),
// and reads the native-protocol entries it sends.
func TestJournalLogging(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sock := filepath.Join(dir, "journal.sock")
	bin := filepath.Join(dir, "edgeprovd")
	build := exec.Command("go", "build", "-o", bin, "-ldflags", "-X github.com/coreos/go-systemd/v22/journal.journalSocket="+sock, "./daemon/cmd/edgeprovd")
	build.Dir = e2e.RepoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	jc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer jc.Close()
	entries := make(chan map[string]string, 100)
	go func() {
		buf := make([]byte, 1<<16)
		for {
			k, err := jc.Read(buf)
			if err != nil {
				return
			}
			entries <- parseNative(t, buf[:k])
		}
	}()

	d := newDaemon(t)
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(stderr.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(d.Dir, "ready.json")
	cmd := exec.Command(bin, "run", "--config", d.Config, "--ready-file", ready)
	cmd.Env = append(os.Environ(), fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	next := func(prefix string) map[string]string {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case e := <-entries:
				if strings.HasPrefix(e["MESSAGE"], prefix) {
					return e
				}
			case <-timeout:
				out, _ := os.ReadFile(stderr.Name())
				t.Fatalf("no journal entry %q; stderr:\n%s", prefix, out)
			}
		}
	}
	e := next("edgeprovd ready")
	if e["PRIORITY"] != "6" || !regexp.MustCompile(`^0ne[0-9A-F]{8}$`).MatchString(e["ID_SCOPE"]) || e["SOCKET_ACTIVATED"] != "false" ||
		e["SYSLOG_IDENTIFIER"] != "edgeprovd" || !strings.HasSuffix(e["CODE_FILE"], "daemon/app/run.go") ||
		!strings.Contains(e["MESSAGE"], "idScope="+e["ID_SCOPE"]) {
		t.Fatalf("ready entry: %v", e)
	}
	e2e.Write(t, filepath.Join(d.Dir, "enrollments.yaml"), "version: 1\nenrollments: [{registrationId: bad!}]\n")
	cmd.Process.Signal(syscall.SIGHUP)
	e = next("catalog reload refused")
	if e["PRIORITY"] != "3" || !strings.Contains(e["ERROR"], "enrollments.yaml:2") {
		t.Fatalf("reload error entry: %v", e)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("edgeprovd: %v", err)
	}
	if out, _ := os.ReadFile(stderr.Name()); bytes.Contains(out, []byte("level=INFO")) {
		t.Fatalf("logs went to stderr as text too:\n%s", out)
	}
}

// parseNative decodes one datagram of the journal's native protocol:
// KEY=VALUE lines, or KEY, a little-endian 64-bit length, the value and a
// newline for values holding newlines.
func parseNative(t *testing.T, b []byte) map[string]string {
	out := map[string]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			t.Errorf("truncated entry %q", b)
			return out
		}
		line := b[:nl]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			out[string(k)] = string(v)
			b = b[nl+1:]
			continue
		}
		rest := b[nl+1:]
		n := binary.LittleEndian.Uint64(rest[:8])
		out[string(line)] = string(rest[8 : 8+n])
		b = rest[8+n+1:]
	}
	return out
}
