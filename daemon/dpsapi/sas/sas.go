// Package sas builds, parses and verifies the SharedAccessSignature tokens of DPS
// devices (protocol.md §5.1) and service policies (§6.1), and derives the device
// keys of symmetric-key enrollment groups (§5.2). It is shared by the daemon and
// the agent and uses the standard library only.
package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Prefix starts every token.
const Prefix = "SharedAccessSignature "

// MaxTokenLen bounds what Parse reads; real tokens are a few hundred bytes.
const MaxTokenLen = 4096

// DeviceKeyName is the only skn DPS documents for device tokens.
const DeviceKeyName = "registration"

var (
	// ErrMalformed is returned for a token that cannot be parsed.
	ErrMalformed = errors.New("malformed SAS token")
	// ErrExpired is returned for a token whose se lies in the past.
	ErrExpired = errors.New("SAS token expired")
	// ErrSignature is returned when no key produces the token's signature.
	ErrSignature = errors.New("SAS signature mismatch")
)

// Token is a parsed SharedAccessSignature.
type Token struct {
	// ResourceRaw is sr exactly as it appeared in the token: the SDKs sign what
	// they send, encoded or not.
	ResourceRaw string
	// Resource is sr percent-decoded.
	Resource string
	// Signature is the decoded HMAC.
	Signature []byte
	// Expiry is se.
	Expiry time.Time
	// ExpiryRaw is se as sent (it is part of the string to sign).
	ExpiryRaw string
	// KeyName is skn, empty when absent.
	KeyName string

	forms []string // the other spellings of sr, computed on first need
}

// LogValue keeps the signature out of logs.
func (t *Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("sr", t.Resource), slog.Time("se", t.Expiry), slog.String("skn", t.KeyName))
}

// Parse reads a token in any field order. It keeps sr raw so that Verify can check
// the exact bytes the client signed.
func Parse(s string) (*Token, error) {
	if len(s) > MaxTokenLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxTokenLen)
	}
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return nil, fmt.Errorf("%w: missing %q prefix", ErrMalformed, strings.TrimSpace(Prefix))
	}
	t := &Token{}
	var haveSR, haveSig, haveSE bool
	for _, field := range strings.Split(strings.TrimSpace(rest), "&") {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return nil, fmt.Errorf("%w: field %q has no value", ErrMalformed, k)
		}
		switch k {
		case "sr":
			if haveSR {
				return nil, fmt.Errorf("%w: sr given twice", ErrMalformed)
			}
			dec, err := url.PathUnescape(v)
			if err != nil {
				return nil, fmt.Errorf("%w: sr: %v", ErrMalformed, err)
			}
			t.ResourceRaw, t.Resource, haveSR = v, dec, true
		case "sig":
			if haveSig {
				return nil, fmt.Errorf("%w: sig given twice", ErrMalformed)
			}
			// '+' stays literal: the SDKs send base64's '+' as %2B; form-encoders
			// that turn it into a space are handled below.
			dec, err := url.PathUnescape(v)
			if err != nil {
				return nil, fmt.Errorf("%w: sig: %v", ErrMalformed, err)
			}
			dec = strings.ReplaceAll(dec, " ", "+")
			sig, err := base64.StdEncoding.DecodeString(dec)
			if err != nil || len(sig) != sha256.Size {
				return nil, fmt.Errorf("%w: sig is not a base64 HMAC-SHA256", ErrMalformed)
			}
			t.Signature, haveSig = sig, true
		case "se":
			if haveSE {
				return nil, fmt.Errorf("%w: se given twice", ErrMalformed)
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 || n > 1<<40 {
				return nil, fmt.Errorf("%w: se is not a unix time", ErrMalformed)
			}
			t.Expiry, t.ExpiryRaw, haveSE = time.Unix(n, 0), v, true
		case "skn":
			dec, err := url.QueryUnescape(v)
			if err != nil {
				return nil, fmt.Errorf("%w: skn: %v", ErrMalformed, err)
			}
			t.KeyName = dec
		default:
			// Unknown fields are ignored, as Azure does.
		}
	}
	if !haveSR || !haveSig || !haveSE {
		return nil, fmt.Errorf("%w: sr, sig and se are required", ErrMalformed)
	}
	return t, nil
}

// CheckExpiry refuses a token whose expiry lies further in the past than skew.
func (t *Token) CheckExpiry(now time.Time, skew time.Duration) error {
	if !t.Expiry.After(now.Add(-skew)) {
		return fmt.Errorf("%w at %s", ErrExpired, t.Expiry.UTC().Format(time.RFC3339))
	}
	return nil
}

// Sign returns HMAC-SHA256(key, resource + "\n" + expiry).
func Sign(key []byte, resource, expiry string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(resource))
	m.Write([]byte{'\n'})
	m.Write([]byte(expiry))
	return m.Sum(nil)
}

// Verify reports whether any of keys signed the token. It checks sr as sent
// first, with every key: that is what every SDK signs. Only when that fails
// does it try the decoded form and its lower- and upper-case-hex encodings
// (hand-made tokens). Comparisons are constant-time and every key is tried at
// each stage, so the time taken does not say which key matched.
func (t *Token) Verify(keys ...[]byte) error {
	if t.verifyForm(t.ResourceRaw, keys) {
		return nil
	}
	if t.forms == nil {
		t.forms = t.resourceForms()
	}
	ok := false
	for _, f := range t.forms {
		ok = t.verifyForm(f, keys) || ok
	}
	if !ok {
		return ErrSignature
	}
	return nil
}

func (t *Token) verifyForm(resource string, keys [][]byte) bool {
	ok := 0
	for _, k := range keys {
		if len(k) == 0 {
			continue
		}
		ok |= subtle.ConstantTimeCompare(Sign(k, resource, t.ExpiryRaw), t.Signature)
	}
	return ok == 1
}

// resourceForms are the spellings of sr other than the raw one.
func (t *Token) resourceForms() []string {
	forms := []string{}
	add := func(s string) {
		if s == t.ResourceRaw {
			return
		}
		for _, f := range forms {
			if f == s {
				return
			}
		}
		forms = append(forms, s)
	}
	add(t.Resource)
	enc := url.PathEscape(t.Resource)
	enc = strings.ReplaceAll(enc, "/", "%2F")
	add(enc)
	add(lowerHex(enc))
	return forms
}

// lowerHex lower-cases the hex digits of percent escapes, as the Embedded C SDK writes them.
func lowerHex(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			for j := i + 1; j <= i+2; j++ {
				if b[j] >= 'A' && b[j] <= 'F' {
					b[j] += 'a' - 'A'
				}
			}
		}
	}
	return string(b)
}

// Build makes a token for resource that expires at expiry. The resource is
// written as given (callers choose raw or encoded, as the SDKs do) and signed as
// written. keyName is omitted when empty.
func Build(key []byte, resource string, expiry time.Time, keyName string) string {
	tok, _ := BuildWithMAC(func(msg []byte) ([]byte, error) {
		m := hmac.New(sha256.New, key)
		m.Write(msg)
		return m.Sum(nil), nil
	}, resource, expiry, keyName)
	return tok
}

// BuildWithMAC is Build with the HMAC-SHA256 computed by mac, for keys that
// cannot leave a token (an HSM).
func BuildWithMAC(mac func(msg []byte) ([]byte, error), resource string, expiry time.Time, keyName string) (string, error) {
	se := strconv.FormatInt(expiry.Unix(), 10)
	sum, err := mac([]byte(resource + "\n" + se))
	if err != nil {
		return "", fmt.Errorf("sign SAS token: %w", err)
	}
	sig := base64.StdEncoding.EncodeToString(sum)
	var b strings.Builder
	b.WriteString(Prefix)
	b.WriteString("sr=")
	b.WriteString(resource)
	b.WriteString("&sig=")
	b.WriteString(url.QueryEscape(sig))
	b.WriteString("&se=")
	b.WriteString(se)
	if keyName != "" {
		b.WriteString("&skn=")
		b.WriteString(url.QueryEscape(keyName))
	}
	return b.String(), nil
}

// DeviceResource is the resource a device token names.
func DeviceResource(idScope, registrationID string) string {
	return idScope + "/registrations/" + registrationID
}

// DeriveDeviceKey returns a group device's key: HMAC-SHA256 of the registration ID
// keyed with the group key (protocol.md §5.2). Both are raw bytes.
func DeriveDeviceKey(groupKey []byte, registrationID string) []byte {
	m := hmac.New(sha256.New, groupKey)
	m.Write([]byte(registrationID))
	return m.Sum(nil)
}

// DecodeKey decodes a base64 symmetric key, refusing empty and absurd sizes.
func DecodeKey(b64 string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil {
		return nil, fmt.Errorf("symmetric key is not valid base64: %w", err)
	}
	if len(k) < 16 || len(k) > 64 {
		return nil, fmt.Errorf("symmetric key is %d bytes; DPS keys are 16 to 64 bytes", len(k))
	}
	return k, nil
}
