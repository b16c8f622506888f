package serviceapi

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// MaxContinuationLen bounds the x-ms-continuation header we read.
const MaxContinuationLen = 2048

// cursorTTL is how long a continuation token stays valid.
const cursorTTL = time.Hour

// Cursor is what a continuation token carries: the query it belongs to and
// where the next page starts. Tokens are HMAC'd, so a client can neither forge
// one nor move one to another query.
type Cursor struct {
	V int `json:"v"`
	// Q names the query: "enrollments", "enrollmentGroups", "registrations/<group>", ...
	Q string `json:"q"`
	// After is the last ID of the previous page.
	After string `json:"a"`
	// Expires is a unix time.
	Expires int64 `json:"x"`
}

var errBadToken = errors.New("invalid continuation token")

// Paging signs and verifies continuation tokens.
type Paging struct{ key []byte }

// NewPaging returns Paging with a MAC key (at least 32 bytes).
func NewPaging(key []byte) *Paging { return &Paging{key: bytes.Clone(key)} }

var b64 = base64.RawURLEncoding

// Encode makes the token for the page after `after` of query q.
func (p *Paging) Encode(q, after string, now time.Time) string {
	payload, _ := json.Marshal(Cursor{V: 1, Q: q, After: after, Expires: now.Add(cursorTTL).Unix()})
	return b64.EncodeToString(payload) + "." + b64.EncodeToString(p.mac(payload))
}

func (p *Paging) mac(payload []byte) []byte {
	m := hmac.New(sha256.New, p.key)
	m.Write([]byte("edgeprov continuation v1\n"))
	m.Write(payload)
	return m.Sum(nil)
}

// Decode verifies a token for query q and returns where to continue. The MAC
// is checked before the payload is parsed.
func (p *Paging) Decode(token, q string, now time.Time) (string, error) {
	if len(token) > MaxContinuationLen {
		return "", fmt.Errorf("%w: too long", errBadToken)
	}
	ps, ms, ok := strings.Cut(token, ".")
	if !ok {
		return "", errBadToken
	}
	payload, err := b64.DecodeString(ps)
	if err != nil {
		return "", errBadToken
	}
	mac, err := b64.DecodeString(ms)
	if err != nil || !hmac.Equal(mac, p.mac(payload)) {
		return "", fmt.Errorf("%w: signature mismatch", errBadToken)
	}
	var c Cursor
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || c.V != 1 {
		return "", errBadToken
	}
	if c.Q != q {
		return "", fmt.Errorf("%w: it belongs to another query", errBadToken)
	}
	if now.Unix() > c.Expires {
		return "", fmt.Errorf("%w: expired, start the query again", errBadToken)
	}
	return c.After, nil
}
