package dpsapi

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// The MQTT topic grammar of DPS (protocol.md §3.2). Topics are case-sensitive.
const (
	// MQTTResponseFilter is the one subscription a device makes (and may make).
	MQTTResponseFilter = "$dps/registrations/res/#"
	// MQTTRegisterPrefix starts a register request topic; the query follows.
	MQTTRegisterPrefix = "$dps/registrations/PUT/iotdps-register/?"
	// MQTTPollPrefix starts an operation status request topic.
	MQTTPollPrefix = "$dps/registrations/GET/iotdps-get-operationstatus/?"

	mqttResponsePrefix = "$dps/registrations/res/"
)

// Limits of the MQTT grammar: $rid is echoed back verbatim in the response
// topic, so it is kept short and free of topic and query metacharacters.
const (
	MaxMQTTRequestIDLen   = 128
	MaxMQTTOperationIDLen = 256
)

var (
	// ErrMQTTUsername is returned for a CONNECT username that is not
	// {idScope}/registrations/{registrationId}[/api-version=…&ClientVersion=…].
	ErrMQTTUsername = errors.New("invalid MQTT username")
	// ErrMQTTTopic is returned for a topic outside DPS's grammar.
	ErrMQTTTopic = errors.New("invalid MQTT topic")
)

// MQTTUsername is the CONNECT username of a DPS device (protocol.md §3.1).
type MQTTUsername struct {
	IDScope        string
	RegistrationID string
	// APIVersion and ClientVersion are optional (Embedded C may omit the
	// ClientVersion); ClientVersion is kept decoded.
	APIVersion    string
	ClientVersion string
}

// ParseMQTTUsername parses `scope "/registrations/" regId ["/" query]`. Scope,
// registration ID and api-version must be valid; unknown query parameters are
// ignored, as are ClientVersion values that are not URL-encoded (the C SDK sends
// them raw).
func ParseMQTTUsername(s string) (MQTTUsername, error) {
	var u MQTTUsername
	scope, rest, ok := strings.Cut(s, "/")
	if !ok {
		return u, fmt.Errorf("%w: want {idScope}/registrations/{registrationId}/api-version=…", ErrMQTTUsername)
	}
	if err := ValidateIDScope(scope); err != nil {
		return u, fmt.Errorf("%w: %w", ErrMQTTUsername, err)
	}
	word, rest, ok := strings.Cut(rest, "/")
	if !ok || word != "registrations" {
		return u, fmt.Errorf("%w: want {idScope}/registrations/{registrationId}/api-version=…", ErrMQTTUsername)
	}
	regID, query, _ := strings.Cut(rest, "/")
	if err := ValidateRegistrationID(regID); err != nil {
		return u, fmt.Errorf("%w: %w", ErrMQTTUsername, err)
	}
	u.IDScope, u.RegistrationID = scope, regID
	seen := map[string]bool{}
	for _, kv := range strings.Split(query, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		key := strings.ToLower(k)
		if key != "api-version" && key != "clientversion" {
			continue
		}
		if seen[key] {
			return u, fmt.Errorf("%w: %s given twice", ErrMQTTUsername, k)
		}
		seen[key] = true
		if dv, err := url.QueryUnescape(v); err == nil {
			v = dv
		} else if key == "api-version" {
			return u, fmt.Errorf("%w: api-version is not URL-encoded correctly", ErrMQTTUsername)
		}
		if key == "api-version" {
			if v == "" {
				return u, fmt.Errorf("%w: empty api-version", ErrMQTTUsername)
			}
			if err := ValidateAPIVersion(v); err != nil {
				return u, fmt.Errorf("%w: %w", ErrMQTTUsername, err)
			}
			u.APIVersion = v
		} else {
			u.ClientVersion = v
		}
	}
	return u, nil
}

// String formats the username as the SDKs send it.
func (u MQTTUsername) String() string {
	var b strings.Builder
	b.WriteString(u.IDScope + "/registrations/" + u.RegistrationID + "/")
	if u.APIVersion != "" {
		b.WriteString("api-version=" + url.QueryEscape(u.APIVersion))
	}
	if u.ClientVersion != "" {
		if u.APIVersion != "" {
			b.WriteByte('&')
		}
		b.WriteString("ClientVersion=" + url.QueryEscape(u.ClientVersion))
	}
	return b.String()
}

// MQTTRequestKind says which of the two request topics a publish went to.
type MQTTRequestKind int

// The two requests a device publishes.
const (
	MQTTRegister MQTTRequestKind = iota + 1
	MQTTPoll
)

// MQTTRequest is a device's request, as named by its topic.
type MQTTRequest struct {
	Kind MQTTRequestKind
	// RequestID is $rid exactly as sent; the response echoes it verbatim.
	RequestID string
	// OperationID is the (decoded) operation a poll asks about.
	OperationID string
}

// ParseMQTTRequestTopic parses
// `$dps/registrations/PUT/iotdps-register/?$rid={rid}` and
// `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}`.
// Unknown query parameters are ignored.
func ParseMQTTRequestTopic(topic string) (MQTTRequest, error) {
	var r MQTTRequest
	var query string
	switch {
	case strings.HasPrefix(topic, MQTTRegisterPrefix):
		r.Kind, query = MQTTRegister, topic[len(MQTTRegisterPrefix):]
	case strings.HasPrefix(topic, MQTTPollPrefix):
		r.Kind, query = MQTTPoll, topic[len(MQTTPollPrefix):]
	default:
		return r, fmt.Errorf("%w: not a DPS request topic", ErrMQTTTopic)
	}
	rid, ridSeen, opSeen := "", false, false
	for _, kv := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "$rid":
			if ridSeen {
				return r, fmt.Errorf("%w: $rid given twice", ErrMQTTTopic)
			}
			rid, ridSeen = v, true
		case "operationId":
			if r.Kind != MQTTPoll {
				continue
			}
			if opSeen {
				return r, fmt.Errorf("%w: operationId given twice", ErrMQTTTopic)
			}
			opSeen = true
			op, err := url.QueryUnescape(v)
			if err != nil || !validOperationID(op) {
				return r, fmt.Errorf("%w: invalid operationId", ErrMQTTTopic)
			}
			r.OperationID = op
		}
	}
	if !ValidMQTTRequestID(rid) {
		return r, fmt.Errorf("%w: missing or invalid $rid", ErrMQTTTopic)
	}
	r.RequestID = rid
	if r.Kind == MQTTPoll && r.OperationID == "" {
		return r, fmt.Errorf("%w: a poll needs an operationId", ErrMQTTTopic)
	}
	return r, nil
}

// Topic formats the request topic.
func (r MQTTRequest) Topic() string {
	if r.Kind == MQTTPoll {
		return MQTTPollPrefix + "$rid=" + r.RequestID + "&operationId=" + url.QueryEscape(r.OperationID)
	}
	return MQTTRegisterPrefix + "$rid=" + r.RequestID
}

// ValidMQTTRequestID reports whether rid may be echoed into a response topic:
// 1 to 128 printable ASCII characters, none of which is a topic wildcard, a
// level separator or a query metacharacter.
func ValidMQTTRequestID(rid string) bool {
	if rid == "" || len(rid) > MaxMQTTRequestIDLen {
		return false
	}
	for i := 0; i < len(rid); i++ {
		c := rid[i]
		if c <= ' ' || c > '~' || strings.IndexByte("#+/?&=", c) >= 0 {
			return false
		}
	}
	return true
}

// validOperationID accepts printable ASCII: the service answers unknown IDs
// with 404, so only what could break logs and topics is refused here.
func validOperationID(op string) bool {
	if op == "" || len(op) > MaxMQTTOperationIDLen {
		return false
	}
	for i := 0; i < len(op); i++ {
		if op[i] <= ' ' || op[i] > '~' {
			return false
		}
	}
	return true
}

// MQTTResponse is the service's answer, as named by its topic.
type MQTTResponse struct {
	// Status is the HTTP-like status (200, 202, 400, 401, 404, 429, 500, …).
	Status    int
	RequestID string
	// RetryAfter is in seconds; 0 means absent.
	RetryAfter int
}

// Topic formats `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={n}]`
// with $rid first: Python reads the properties after the second '$' only.
func (r MQTTResponse) Topic() string {
	t := mqttResponsePrefix + strconv.Itoa(r.Status) + "/?$rid=" + r.RequestID
	if r.RetryAfter > 0 {
		t += "&retry-after=" + strconv.Itoa(r.RetryAfter)
	}
	return t
}

// ParseMQTTResponseTopic parses a response topic (the agent's side). A
// retry-after that is not a positive integer reads as absent.
func ParseMQTTResponseTopic(topic string) (MQTTResponse, error) {
	var r MQTTResponse
	rest, ok := strings.CutPrefix(topic, mqttResponsePrefix)
	if !ok {
		return r, fmt.Errorf("%w: not a DPS response topic", ErrMQTTTopic)
	}
	status, query, ok := strings.Cut(rest, "/?")
	if !ok || len(status) != 3 {
		return r, fmt.Errorf("%w: want res/{status}/?$rid=…", ErrMQTTTopic)
	}
	n, err := strconv.Atoi(status)
	if err != nil || n < 100 || n > 599 {
		return r, fmt.Errorf("%w: status %q", ErrMQTTTopic, status)
	}
	r.Status = n
	ridSeen := false
	for _, kv := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "$rid":
			if ridSeen {
				return r, fmt.Errorf("%w: $rid given twice", ErrMQTTTopic)
			}
			r.RequestID, ridSeen = v, true
		case "retry-after":
			if s, err := strconv.Atoi(v); err == nil && s > 0 && len(v) <= 6 {
				r.RetryAfter = s
			}
		}
	}
	if !ValidMQTTRequestID(r.RequestID) {
		return r, fmt.Errorf("%w: missing or invalid $rid", ErrMQTTTopic)
	}
	return r, nil
}
