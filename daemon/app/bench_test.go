package app_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgeprov/edgeprov/daemon/app"
	"github.com/edgeprov/edgeprov/daemon/config"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
)

var benchGroupKey = []byte("benchmark group key, 32 bytes!!!")

// benchDaemon is an in-process edgeprovd (init, then run) serving HTTPS and
// MQTT on loopback, with one symmetric-key group for "bench-" devices.
type benchDaemon struct {
	d     *app.Daemon
	scope string
	tls   *tls.Config // trusts the daemon's CA
}

func startBenchDaemon(b *testing.B) *benchDaemon {
	b.Helper()
	dir := benchDir(b)
	catalog := fmt.Sprintf("version: 1\nenrollmentGroups:\n  - enrollmentGroupId: bench\n    registrationIdPrefixes: [bench-]\n    attestation: {type: symmetricKey, symmetricKey: {primaryKey: %s}}\n",
		base64.StdEncoding.EncodeToString(benchGroupKey))
	if err := os.WriteFile(filepath.Join(dir, "enrollments.yaml"), []byte(catalog), 0o600); err != nil {
		b.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "edgeprovd.yaml")
	cfg, err := config.Parse(cfgPath, []byte(`version: 1
stateDir: state
catalog: enrollments.yaml
device: {listen: "127.0.0.1:0", hostNames: [localhost, 127.0.0.1]}
mqtt: {listen: "127.0.0.1:0", packetRate: 1000, packetBurst: 1000}
linkedHubs:
  - {name: a, hostName: a.bench.local}
  - {name: b, hostName: b.bench.local}
`))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	res, err := app.Init(ctx, cfg, cfg.Device.HostNames)
	if err != nil {
		b.Fatal(err)
	}
	d, err := app.Build(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, "") }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
		d.Close()
	})
	pem, err := os.ReadFile(cfg.CACertPath())
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &benchDaemon{d: d, scope: res.IDScope, tls: &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}}
}

func (bd *benchDaemon) token(regID string) string {
	return sas.Build(sas.DeriveDeviceKey(benchGroupKey, regID), sas.DeviceResource(bd.scope, regID), time.Now().Add(time.Hour), sas.DeviceKeyName)
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchDir is where the daemon's state lives: on tmpfs when there is one, so
// that the comparison is between transports and not dominated by fsync (the
// store's cost is BenchmarkRegister's in daemon/registration).
func benchDir(b *testing.B) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		dir, err := os.MkdirTemp("/dev/shm", "edgeprov-bench-")
		if err == nil {
			b.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return b.TempDir()
}

// registerHTTPS registers one device over a fresh TLS connection: PUT
// register, then GET the operation on the same connection, as the SDKs do.
func (bd *benchDaemon) registerHTTPS(regID string) error {
	tr := &http.Transport{TLSClientConfig: bd.tls.Clone(), MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	base := "https://" + bd.d.DeviceAddr().String() + "/" + bd.scope + "/registrations/" + regID
	auth := bd.token(regID)
	do := func(method, url string, body []byte) (*dpsapi.RegistrationOperationStatus, error) {
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		req.Header.Set("Authorization", auth)
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		resp, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		var op dpsapi.RegistrationOperationStatus
		if err := json.Unmarshal(data, &op); err != nil || resp.StatusCode/100 != 2 {
			return nil, fmt.Errorf("%s: %d %s", method, resp.StatusCode, data)
		}
		return &op, nil
	}
	op, err := do("PUT", base+"/register?api-version=2021-06-01", []byte(`{"registrationId":"`+regID+`"}`))
	if err != nil {
		return err
	}
	op, err = do("GET", base+"/operations/"+op.OperationID+"?api-version=2021-06-01", nil)
	if err != nil {
		return err
	}
	if op.Status != dpsapi.StatusAssigned {
		return fmt.Errorf("status %s", op.Status)
	}
	return nil
}

// registerMQTT registers one device over a fresh MQTT/TLS connection:
// CONNECT, SUBSCRIBE, register, poll, DISCONNECT, as the SDKs do.
func (bd *benchDaemon) registerMQTT(regID string) error {
	return bd.registerOverMQTT("tls://"+bd.d.MQTTAddr().String(), regID)
}

// registerMQTTWebSocket is registerMQTT over a fresh WebSocket on the HTTPS listener.
func (bd *benchDaemon) registerMQTTWebSocket(regID string) error {
	return bd.registerOverMQTT("wss://"+bd.d.DeviceAddr().String()+"/$iothub/websocket", regID)
}

func (bd *benchDaemon) registerOverMQTT(broker, regID string) error {
	msgs := make(chan paho.Message, 4)
	opts := paho.NewClientOptions().AddBroker(broker).SetTLSConfig(bd.tls.Clone()).
		SetProtocolVersion(4).SetClientID(regID).SetCleanSession(true).SetAutoReconnect(false).
		SetUsername(dpsapi.MQTTUsername{IDScope: bd.scope, RegistrationID: regID, APIVersion: "2021-06-01"}.String()).
		SetPassword(bd.token(regID))
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		return fmt.Errorf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	if tok := c.Subscribe(dpsapi.MQTTResponseFilter, 1, func(_ paho.Client, m paho.Message) { msgs <- m }); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		return fmt.Errorf("subscribe: %v", tok.Error())
	}
	ask := func(req dpsapi.MQTTRequest, body []byte) (*dpsapi.RegistrationOperationStatus, error) {
		if tok := c.Publish(req.Topic(), 1, false, body); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("publish: %v", tok.Error())
		}
		select {
		case m := <-msgs:
			var op dpsapi.RegistrationOperationStatus
			if err := json.Unmarshal(m.Payload(), &op); err != nil {
				return nil, err
			}
			return &op, nil
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("no response")
		}
	}
	op, err := ask(dpsapi.MQTTRequest{Kind: dpsapi.MQTTRegister, RequestID: "1"}, []byte(`{"registrationId":"`+regID+`"}`))
	if err != nil {
		return err
	}
	op, err = ask(dpsapi.MQTTRequest{Kind: dpsapi.MQTTPoll, RequestID: "2", OperationID: op.OperationID}, []byte{})
	if err != nil {
		return err
	}
	if op.Status != dpsapi.StatusAssigned {
		return fmt.Errorf("status %s", op.Status)
	}
	return nil
}

// BenchmarkRegistrationFreshTLS measures whole registrations (register +
// poll, durable records) per second, each device on its own new TLS
// connection, over HTTPS, MQTT and MQTT over WebSockets against one
// in-process daemon in the same run, 16 devices at a time per CPU, the
// daemon's state on tmpfs (see benchDir).
// "interleaved" runs HTTPS and MQTT registrations side by side, so that load
// from elsewhere on the machine hits both alike, and reports each one's mean
// latency and their ratio.
func BenchmarkRegistrationFreshTLS(b *testing.B) {
	bd := startBenchDaemon(b)
	var seq atomic.Int64
	transports := []struct {
		name     string
		register func(string) error
	}{{"https", bd.registerHTTPS}, {"mqtt", bd.registerMQTT}, {"mqtt-websocket", bd.registerMQTTWebSocket}}
	for _, tc := range transports {
		b.Run(tc.name, func(b *testing.B) {
			b.SetParallelism(16)
			start, cpu0 := time.Now(), cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := tc.register(fmt.Sprintf("bench-%s-%d", tc.name, seq.Add(1))); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "registrations/s")
			// CPU per registration (daemon and client, both in this process)
			// holds still when other work on the machine slows the clock.
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/reg")
		})
	}
	b.Run("interleaved", func(b *testing.B) {
		b.SetParallelism(16)
		var spent, count [2]atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				n := seq.Add(1)
				i := n % 2
				t0 := time.Now()
				if err := transports[i].register(fmt.Sprintf("bench-mix-%d", n)); err != nil {
					b.Error(err)
					return
				}
				spent[i].Add(int64(time.Since(t0)))
				count[i].Add(1)
			}
		})
		if count[0].Load() == 0 || count[1].Load() == 0 {
			return
		}
		https := float64(spent[0].Load()) / float64(count[0].Load()) / 1e6
		mqtt := float64(spent[1].Load()) / float64(count[1].Load()) / 1e6
		b.ReportMetric(https, "https-ms/reg")
		b.ReportMetric(mqtt, "mqtt-ms/reg")
		b.ReportMetric(https/mqtt, "mqtt-speedup")
	})
}
