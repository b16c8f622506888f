package dpsapi

import (
	"errors"
	"strings"
	"testing"
)

func TestParseMQTTUsername(t *testing.T) {
	tests := []struct {
		name, in string
		want     MQTTUsername
		wantErr  bool
	}{
		{name: "ok/node", in: "0ne00ABCDEF/registrations/my-device-01/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.9.1",
			want: MQTTUsername{"0ne00ABCDEF", "my-device-01", "2019-03-31", "azure-iot-provisioning-device/1.9.1"}},
		{name: "ok/c-sdk-raw-client-version", in: "0ne00ABCDEF/registrations/dev/api-version=2021-06-01&ClientVersion=1.15.0",
			want: MQTTUsername{"0ne00ABCDEF", "dev", "2021-06-01", "1.15.0"}},
		{name: "ok/python-quoted", in: "0ne00abcdef/registrations/dev/api-version=2019-03-31&ClientVersion=azure-iot-device-provisioning-py%2F2.14.0%28Linux%3B%29",
			want: MQTTUsername{"0ne00abcdef", "dev", "2019-03-31", "azure-iot-device-provisioning-py/2.14.0(Linux;)"}},
		{name: "ok/embedded-c-no-client-version", in: "0ne00ABCDEF/registrations/dev/api-version=2019-03-31",
			want: MQTTUsername{"0ne00ABCDEF", "dev", "2019-03-31", ""}},
		{name: "ok/no-query", in: "0ne00ABCDEF/registrations/dev", want: MQTTUsername{IDScope: "0ne00ABCDEF", RegistrationID: "dev"}},
		{name: "ok/empty-query", in: "0ne00ABCDEF/registrations/dev/", want: MQTTUsername{IDScope: "0ne00ABCDEF", RegistrationID: "dev"}},
		{name: "ok/unknown-parameter-ignored", in: "0ne00ABCDEF/registrations/dev/api-version=2019-03-31&x=1&clientversion=a%zz",
			want: MQTTUsername{"0ne00ABCDEF", "dev", "2019-03-31", "a%zz"}},
		{name: "ok/preview-api-version", in: "0ne00ABCDEF/registrations/dev/api-version=2025-07-01-preview",
			want: MQTTUsername{"0ne00ABCDEF", "dev", "2025-07-01-preview", ""}},
		{name: "fail/empty", in: "", wantErr: true},
		{name: "fail/scope-only", in: "0ne00ABCDEF", wantErr: true},
		{name: "fail/bad-scope", in: "scope/registrations/dev/api-version=2019-03-31", wantErr: true},
		{name: "fail/wrong-word", in: "0ne00ABCDEF/devices/dev/api-version=2019-03-31", wantErr: true},
		{name: "fail/no-registration-id", in: "0ne00ABCDEF/registrations//api-version=2019-03-31", wantErr: true},
		{name: "fail/invalid-registration-id", in: "0ne00ABCDEF/registrations/dev!/api-version=2019-03-31", wantErr: true},
		{name: "fail/long-registration-id", in: "0ne00ABCDEF/registrations/" + strings.Repeat("a", 129), wantErr: true},
		{name: "fail/bad-api-version", in: "0ne00ABCDEF/registrations/dev/api-version=yesterday", wantErr: true},
		{name: "fail/empty-api-version", in: "0ne00ABCDEF/registrations/dev/api-version=", wantErr: true},
		{name: "fail/api-version-twice", in: "0ne00ABCDEF/registrations/dev/api-version=2019-03-31&api-version=2021-06-01", wantErr: true},
		{name: "ok/unparsable-query-ignored", in: "0ne00ABCDEF/registrations/dev/x/api-version=2019-03-31", wantErr: false,
			want: MQTTUsername{IDScope: "0ne00ABCDEF", RegistrationID: "dev"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMQTTUsername(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrMQTTUsername) {
					t.Fatalf("got %+v, %v; want ErrMQTTUsername", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestMQTTUsernameString(t *testing.T) {
	u := MQTTUsername{"0ne00ABCDEF", "my-device-01", "2019-03-31", "azure-iot-provisioning-device/1.9.1"}
	want := "0ne00ABCDEF/registrations/my-device-01/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.9.1"
	if u.String() != want {
		t.Fatalf("got %s, want %s (Node's spelling)", u.String(), want)
	}
}

func TestParseMQTTRequestTopic(t *testing.T) {
	tests := []struct {
		name, in string
		want     MQTTRequest
		wantErr  bool
	}{
		{name: "ok/register-node-uuid", in: "$dps/registrations/PUT/iotdps-register/?$rid=c83b1ba7-5b0e-4a34-9c4c-2a3f2e1d0c9b",
			want: MQTTRequest{MQTTRegister, "c83b1ba7-5b0e-4a34-9c4c-2a3f2e1d0c9b", ""}},
		{name: "ok/register-c-integer", in: "$dps/registrations/PUT/iotdps-register/?$rid=1", want: MQTTRequest{MQTTRegister, "1", ""}},
		{name: "ok/register-python-quoted", in: "$dps/registrations/PUT/iotdps-register/?$rid=a%20b", want: MQTTRequest{MQTTRegister, "a%20b", ""}},
		{name: "ok/poll", in: "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.0123456789abcdef.c83b1ba7-5b0e-4a34-9c4c-2a3f2e1d0c9b",
			want: MQTTRequest{MQTTPoll, "2", "4.0123456789abcdef.c83b1ba7-5b0e-4a34-9c4c-2a3f2e1d0c9b"}},
		{name: "ok/poll-parameters-swapped", in: "$dps/registrations/GET/iotdps-get-operationstatus/?operationId=op%2E1&$rid=2",
			want: MQTTRequest{MQTTPoll, "2", "op.1"}},
		{name: "ok/unknown-parameter-ignored", in: "$dps/registrations/PUT/iotdps-register/?$rid=1&x=y", want: MQTTRequest{MQTTRegister, "1", ""}},
		{name: "fail/response-topic", in: "$dps/registrations/res/200/?$rid=1", wantErr: true},
		{name: "fail/other-topic", in: "devices/dev/messages/events/", wantErr: true},
		{name: "fail/no-rid", in: "$dps/registrations/PUT/iotdps-register/?", wantErr: true},
		{name: "fail/empty-rid", in: "$dps/registrations/PUT/iotdps-register/?$rid=", wantErr: true},
		{name: "fail/rid-twice", in: "$dps/registrations/PUT/iotdps-register/?$rid=1&$rid=2", wantErr: true},
		{name: "fail/rid-with-wildcard", in: "$dps/registrations/PUT/iotdps-register/?$rid=1#", wantErr: true},
		{name: "fail/rid-with-slash", in: "$dps/registrations/PUT/iotdps-register/?$rid=1/2", wantErr: true},
		{name: "fail/rid-too-long", in: "$dps/registrations/PUT/iotdps-register/?$rid=" + strings.Repeat("r", 129), wantErr: true},
		{name: "fail/poll-without-operation", in: "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2", wantErr: true},
		{name: "fail/poll-bad-escape", in: "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=%zz", wantErr: true},
		{name: "fail/poll-control-char", in: "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=a%0Ab", wantErr: true},
		{name: "fail/case-differs", in: "$DPS/registrations/PUT/iotdps-register/?$rid=1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMQTTRequestTopic(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrMQTTTopic) {
					t.Fatalf("got %+v, %v; want ErrMQTTTopic", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestMQTTResponseTopic(t *testing.T) {
	tests := []struct {
		name string
		in   MQTTResponse
		want string
	}{
		{"ok/assigning", MQTTResponse{202, "c83b", 3}, "$dps/registrations/res/202/?$rid=c83b&retry-after=3"},
		{"ok/assigned", MQTTResponse{200, "1", 0}, "$dps/registrations/res/200/?$rid=1"},
		{"ok/unauthorized", MQTTResponse{401, "x", 0}, "$dps/registrations/res/401/?$rid=x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.in.Topic(); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
			back, err := ParseMQTTResponseTopic(tt.want)
			if err != nil || back != tt.in {
				t.Fatalf("parse back: %+v, %v", back, err)
			}
		})
	}
	for _, bad := range []string{"$dps/registrations/res/2000/?$rid=1", "$dps/registrations/res/abc/?$rid=1", "$dps/registrations/res/200?$rid=1",
		"$dps/registrations/res/200/?retry-after=3", "$dps/registrations/res/099/?$rid=1", "$dps/registrations/PUT/iotdps-register/?$rid=1"} {
		t.Run("fail/"+bad, func(t *testing.T) {
			if r, err := ParseMQTTResponseTopic(bad); !errors.Is(err, ErrMQTTTopic) {
				t.Fatalf("got %+v, %v", r, err)
			}
		})
	}
	// retry-after is read from anywhere in the query; a malformed one is absent.
	r, err := ParseMQTTResponseTopic("$dps/registrations/res/202/?retry-after=x&$rid=1")
	if err != nil || r.RetryAfter != 0 || r.RequestID != "1" {
		t.Fatalf("got %+v, %v", r, err)
	}
}

// FuzzParseMQTTUsername: whatever a device sends as its CONNECT username, the
// parser returns a valid identity or ErrMQTTUsername, and what it accepts
// formats back to a username it reads the same way.
func FuzzParseMQTTUsername(f *testing.F) {
	f.Add("0ne00ABCDEF/registrations/my-device-01/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.9.1")
	f.Add("0ne00ABCDEF/registrations/dev/api-version=2021-06-01&ClientVersion=1.15.0")
	f.Add("0ne00ABCDEF/registrations/dev")
	f.Add("0ne00ABCDEF/registrations/dev/api-version=2019-03-31&clientversion=%28a%29&x")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseMQTTUsername(s)
		if err != nil {
			if !errors.Is(err, ErrMQTTUsername) {
				t.Fatalf("error %v is not ErrMQTTUsername", err)
			}
			return
		}
		if ValidateIDScope(u.IDScope) != nil || ValidateRegistrationID(u.RegistrationID) != nil || ValidateAPIVersion(u.APIVersion) != nil {
			t.Fatalf("accepted invalid parts: %+v", u)
		}
		back, err := ParseMQTTUsername(u.String())
		if err != nil || back != u {
			t.Fatalf("round trip of %q: %q → %+v, %v; want %+v", s, u.String(), back, err, u)
		}
	})
}

// FuzzParseMQTTRequestTopic: a request topic parses to a request whose $rid can
// be echoed into a valid response topic, and formats back to the same request.
func FuzzParseMQTTRequestTopic(f *testing.F) {
	f.Add("$dps/registrations/PUT/iotdps-register/?$rid=c83b1ba7-5b0e-4a34-9c4c-2a3f2e1d0c9b")
	f.Add("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.0123456789abcdef.c83b1ba7")
	f.Add("$dps/registrations/GET/iotdps-get-operationstatus/?operationId=a%2Fb&$rid=1&x=")
	f.Add("$dps/registrations/res/202/?$rid=1&retry-after=3")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseMQTTRequestTopic(s)
		if err != nil {
			if !errors.Is(err, ErrMQTTTopic) {
				t.Fatalf("error %v is not ErrMQTTTopic", err)
			}
		} else {
			if !ValidMQTTRequestID(r.RequestID) || (r.Kind == MQTTPoll) != (r.OperationID != "") {
				t.Fatalf("inconsistent request %+v", r)
			}
			back, err := ParseMQTTRequestTopic(r.Topic())
			if err != nil || back != r {
				t.Fatalf("round trip of %q: %q → %+v, %v", s, r.Topic(), back, err)
			}
			resp := MQTTResponse{Status: 202, RequestID: r.RequestID, RetryAfter: 1}
			if got, err := ParseMQTTResponseTopic(resp.Topic()); err != nil || got != resp {
				t.Fatalf("response to %q does not parse back: %+v, %v", s, got, err)
			}
		}
		// The agent's parser sees the same bytes from a (hostile) server.
		if resp, err := ParseMQTTResponseTopic(s); err == nil {
			if resp.Status < 100 || resp.Status > 599 || resp.RetryAfter < 0 || !ValidMQTTRequestID(resp.RequestID) {
				t.Fatalf("inconsistent response %+v", resp)
			}
		} else if !errors.Is(err, ErrMQTTTopic) {
			t.Fatalf("error %v is not ErrMQTTTopic", err)
		}
	})
}
