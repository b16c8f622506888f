package nodesdk

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// Transport selects the Node device transport.
type Transport string

const (
	// HTTP is azure-iot-provisioning-device-http. The SDK always dials 443;
	// device.js redirects it to DeviceArgs.Port through Node's global HTTPS
	// agent.
	HTTP Transport = "http"
	// MQTT is azure-iot-provisioning-device-mqtt's Mqtt (TLS); the SDK
	// accepts host:port, so any port works.
	MQTT Transport = "mqtt"
	// MQTTWS is MqttWs: wss://<host>:443/$iothub/websocket, port fixed to 443
	// by the SDK (DeviceArgs.Port must be 0 or 443).
	MQTTWS Transport = "mqttws"
)

// X509Files names the PEM files of a device identity. CertFile may hold the
// chain (leaf first); the SDK sends every certificate in it.
type X509Files struct {
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
}

// DeviceArgs is the argument of testenv/node/device.js.
type DeviceArgs struct {
	// Host is the DNS name the SDK connects to; the server certificate must
	// be valid for it (e.g. "localhost").
	Host string `json:"host"`
	// Port is the server port; 0 means the SDK's default (443 for HTTP,
	// 8883 for MQTT).
	Port           int       `json:"port,omitempty"`
	IDScope        string    `json:"idScope"`
	RegistrationID string    `json:"registrationId"`
	Transport      Transport `json:"transport"`
	// SymmetricKey is the base64 device key (for a group enrollment: the
	// derived key). Exactly one of SymmetricKey and X509 is set.
	SymmetricKey string     `json:"symmetricKey,omitempty"`
	X509         *X509Files `json:"x509,omitempty"`
	// Payload, if non-nil, is passed to setProvisioningPayload. The SDK
	// sends it only if it is truthy in JavaScript (not false, 0 or "").
	Payload any `json:"payload,omitempty"`
	// Timeout bounds the whole registration inside the script (0: 60 s).
	Timeout time.Duration `json:"-"`
}

// MarshalJSON adds timeoutMs.
func (a DeviceArgs) MarshalJSON() ([]byte, error) {
	type plain DeviceArgs
	return json.Marshal(struct {
		plain
		TimeoutMS int64 `json:"timeoutMs,omitempty"`
	}{plain(a), a.Timeout.Milliseconds()})
}

// DeviceResult is what device.js printed.
type DeviceResult struct {
	// OK reports that register() succeeded. Result is what it resolved
	// with (nil only if the server's final answer had no registrationState).
	OK     bool               `json:"ok"`
	Result *RegistrationState `json:"result,omitempty"`
	// Error is the SDK's error when OK is false.
	Error *SDKError `json:"error,omitempty"`
	// Stderr is everything the script wrote to stderr (SDK debug output
	// with DEBUG=azure-iot*).
	Stderr string `json:"-"`
}

// RegistrationState is the object register() resolves with: the
// registrationState of the final operation status (protocol.md §2.4.2).
type RegistrationState struct {
	RegistrationID         string          `json:"registrationId"`
	CreatedDateTimeUTC     string          `json:"createdDateTimeUtc"`
	AssignedHub            string          `json:"assignedHub"`
	DeviceID               string          `json:"deviceId"`
	Status                 string          `json:"status"`
	Substatus              string          `json:"substatus"`
	ErrorCode              int             `json:"errorCode"`
	ErrorMessage           string          `json:"errorMessage"`
	LastUpdatedDateTimeUTC string          `json:"lastUpdatedDateTimeUtc"`
	ETag                   string          `json:"etag"`
	Payload                json.RawMessage `json:"payload"`
	X509                   json.RawMessage `json:"x509"`
	SymmetricKey           json.RawMessage `json:"symmetricKey"`
	// Raw is the whole object as the SDK returned it.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps the raw object next to the typed fields.
func (s *RegistrationState) UnmarshalJSON(b []byte) error {
	type plain RegistrationState
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*s = RegistrationState(p)
	s.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// RunDevice runs one ProvisioningDeviceClient registration with the stock
// SDK, trusting the PEM CA in caFile (may be "" to use only Node's bundled
// roots). The error is non-nil only when the harness failed; a failed
// registration is DeviceResult{OK: false, Error: ...}.
func RunDevice(t testing.TB, ctx context.Context, caFile string, args DeviceArgs) (DeviceResult, error) {
	t.Helper()
	if args.X509 != nil {
		files := *args.X509
		var err error
		if files.CertFile, err = absPath(files.CertFile); err != nil {
			return DeviceResult{}, fmt.Errorf("nodesdk: x509 cert file: %w", err)
		}
		if files.KeyFile, err = absPath(files.KeyFile); err != nil {
			return DeviceResult{}, fmt.Errorf("nodesdk: x509 key file: %w", err)
		}
		args.X509 = &files
	}
	var res DeviceResult
	stderr, err := runScript(t, ctx, "device.js", caFile, args, args.Timeout, &res)
	res.Stderr = stderr
	if err != nil {
		return res, err
	}
	if res.OK == (res.Error != nil) {
		return res, fmt.Errorf("nodesdk: device.js broke its contract: ok=%v error=%v\nstderr:\n%s",
			res.OK, res.Error, tail(stderr, 8000))
	}
	return res, nil
}
