package e2e_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/testenv/e2e"
	"github.com/edgeprov/edgeprov/testenv/nodesdk"
)

// inNetnsEnv marks the copy of this test binary that runs inside a private
// network namespace.
const inNetnsEnv = "EDGEPROV_E2E_IN_NETNS"

// inNetns runs the test named t.Name() again in a fresh network namespace
// (`unshare -n`, loopback up), where it may bind port 443 without touching the
// host (protocol.md §9.1). It reports whether the caller is that copy and
// should run the test body; in the parent it runs the copy and fails t if the
// copy fails or did not run.
func inNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(inNetnsEnv) == "1" {
		return true
	}
	if os.Geteuid() != 0 {
		t.Fatalf("%s needs root to create a network namespace (unshare -n) where it can bind port 443; CI runs as root", t.Name())
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatalf("unshare (util-linux) not found: %v", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("ip (iproute2) not found: %v", err)
	}
	// Build and install before entering the namespace: it has no network.
	nodesdk.Ensure(t)
	bin := filepath.Dir(e2e.Bin(t, "edgeprovd"))
	cmd := exec.CommandContext(t.Context(), "unshare", "-n", "--", "sh", "-c", `ip link set lo up && exec "$0" "$@"`,
		os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), inNetnsEnv+"=1", e2e.BinDirEnv+"="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in a network namespace: %v\n%s", t.Name(), err, out)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()+" ") {
		t.Fatalf("%s did not run in the network namespace:\n%s", t.Name(), out)
	}
	t.Logf("ran in a private network namespace:\n%s", out)
	return false
}

// TestNodeDeviceSDKOverMQTTWebSocket provisions with the Node SDK's MqttWs
// transport, which always dials wss://host:443/$iothub/websocket: the daemon
// serves HTTPS (and MQTT over WebSockets) on 443 inside a private network
// namespace.
func TestNodeDeviceSDKOverMQTTWebSocket(t *testing.T) {
	if !inNetns(t) {
		return
	}
	d := newMQTTDaemon(t, ":443")
	d.Start(t)
	if d.Port() != "443" {
		t.Fatalf("daemon listens on %s", d.DeviceAddr)
	}
	runNodeCases(t, d, nodesdk.MQTTWS, "localhost", 0)
}
