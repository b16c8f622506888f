package serviceapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
)

// Right is a shared access policy right, as DPS names them.
type Right string

// Rights (protocol.md §6.1). DeviceConnect has no use on this API.
const (
	ServiceConfig           Right = "ServiceConfig"
	EnrollmentRead          Right = "EnrollmentRead"
	EnrollmentWrite         Right = "EnrollmentWrite"
	RegistrationStatusRead  Right = "RegistrationStatusRead"
	RegistrationStatusWrite Right = "RegistrationStatusWrite"
)

// AllRights are the rights of the provisioningserviceowner policy.
var AllRights = []Right{ServiceConfig, EnrollmentRead, EnrollmentWrite, RegistrationStatusRead, RegistrationStatusWrite}

// ParseRight accepts a right name in any case.
func ParseRight(s string) (Right, bool) {
	for _, r := range AllRights {
		if strings.EqualFold(s, string(r)) {
			return r, true
		}
	}
	return "", false
}

// Policy is a shared access policy: a name, its keys (primary, and a secondary
// for rotation) and its rights.
type Policy struct {
	Name   string
	Keys   [][]byte
	Rights []Right
}

// LogValue keeps the keys out of logs.
func (p *Policy) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", p.Name), slog.Any("rights", p.Rights))
}

func (p *Policy) has(r Right) bool {
	for _, have := range p.Rights {
		if have == r {
			return true
		}
	}
	return false
}

var (
	errUnauthorized = errors.New("unauthorized")
	errForbidden    = errors.New("forbidden")
)

// authorize checks the request's SAS token (protocol.md §6.1): a known policy
// (skn), a resource (sr) that is one of our host names or a segment prefix of
// the requested resource under it, not expired, signed with one of the
// policy's keys; then that the policy has the right. Unknown policy, bad
// signature, wrong resource and expiry all answer 401 alike; the reason is
// logged, never the token.
func (h *Handler) authorize(r *http.Request, need Right, segs []string) (*Policy, error) {
	deny := func(reason string, args ...any) (*Policy, error) {
		h.log.Info("service API request refused", "method", r.Method, "path", r.URL.Path, "reason", fmt.Sprintf(reason, args...))
		return nil, errUnauthorized
	}
	raw := r.Header.Get("Authorization")
	if raw == "" {
		return deny("no Authorization header")
	}
	tok, err := sas.Parse(raw)
	if err != nil {
		return deny("%v", err)
	}
	p := h.policies[strings.ToLower(tok.KeyName)]
	if p == nil {
		return deny("unknown policy %q", tok.KeyName)
	}
	if !h.resourceMatches(tok.Resource, r.Host, segs) {
		return deny("token resource %q does not cover %s", tok.Resource, r.URL.Path)
	}
	if err := tok.CheckExpiry(h.now(), h.skew); err != nil {
		return deny("policy %s: %v", p.Name, err)
	}
	if err := tok.Verify(p.Keys...); err != nil {
		return deny("policy %s: %v", p.Name, err)
	}
	if !p.has(need) {
		h.log.Info("service API request forbidden", "method", r.Method, "path", r.URL.Path, "policy", p.Name, "needs", need)
		return p, fmt.Errorf("policy %s lacks the %s right: %w", p.Name, need, errForbidden)
	}
	return p, nil
}

// resourceMatches reports whether sr names one of our hosts, alone or with a
// path that is a segment prefix of the request's.
func (h *Handler) resourceMatches(sr, reqHost string, segs []string) bool {
	sr = strings.ToLower(strings.TrimSuffix(sr, "/"))
	host, rest, _ := strings.Cut(sr, "/")
	if !h.hostAllowed(stripPort(host), reqHost) {
		return false
	}
	if rest == "" {
		return true
	}
	parts := strings.Split(rest, "/")
	if len(parts) > len(segs) {
		return false
	}
	for i, p := range parts {
		d, err := url.PathUnescape(p)
		if err != nil || !strings.EqualFold(d, segs[i]) {
			return false
		}
	}
	return true
}

func (h *Handler) hostAllowed(host, reqHost string) bool {
	if host == "" {
		return false
	}
	if strings.EqualFold(host, stripPort(reqHost)) {
		return true
	}
	for _, n := range h.hostNames {
		if strings.EqualFold(host, n) {
			return true
		}
	}
	return false
}

func stripPort(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// skewDefault is how far past its expiry a service token is still accepted.
const skewDefault = 5 * time.Minute
