package x509chain

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"sync"
	"time"
)

// maxCached bounds the verified chains kept; past it the cache starts over.
const maxCached = 1 << 16

// chainCache remembers chains that verified up to a group's anchor lately, so
// a device's poll (same connection, same chain) does not verify its
// signatures again: the register call and the poll of one X.509 device cost
// one chain verification, not two. An entry names the exact certificates
// presented and the exact anchor certificates, so a changed group CA misses;
// validity periods are checked again on every hit.
type chainCache struct {
	mu sync.Mutex
	m  map[chainKey]verifiedChain
}

type chainKey struct {
	chain   [sha256.Size]byte // the presented certificates, in order
	anchors [sha256.Size]byte // the anchor certificates the group trusts
	scope   string
	group   string
	caName  string
}

type verifiedChain struct {
	keyRef              string
	notBefore, notAfter time.Time // the verified path's common validity
}

// digest hashes certificates' DER with length prefixes.
func digest(certs ...*x509.Certificate) [sha256.Size]byte {
	h := sha256.New()
	var n [4]byte
	for _, c := range certs {
		if c == nil {
			continue
		}
		binary.BigEndian.PutUint32(n[:], uint32(len(c.Raw)))
		h.Write(n[:])
		h.Write(c.Raw)
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

func (c *chainCache) get(k chainKey, now time.Time) (string, bool) {
	c.mu.Lock()
	v, ok := c.m[k]
	c.mu.Unlock()
	if !ok || now.Before(v.notBefore) || now.After(v.notAfter) {
		return "", false
	}
	return v.keyRef, true
}

func (c *chainCache) put(k chainKey, path []*x509.Certificate, keyRef string) {
	v := verifiedChain{keyRef: keyRef}
	for i, p := range path {
		if i == 0 || p.NotBefore.After(v.notBefore) {
			v.notBefore = p.NotBefore
		}
		if i == 0 || p.NotAfter.Before(v.notAfter) {
			v.notAfter = p.NotAfter
		}
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCached {
		c.m = make(map[chainKey]verifiedChain)
	}
	c.m[k] = v
	c.mu.Unlock()
}
