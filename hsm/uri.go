package hsm

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ObjectType is the value of the RFC 7512 "type" path attribute.
type ObjectType string

// The object types RFC 7512 defines.
const (
	TypePublic    ObjectType = "public"
	TypePrivate   ObjectType = "private"
	TypeCert      ObjectType = "cert"
	TypeSecretKey ObjectType = "secret-key"
	TypeData      ObjectType = "data"
)

// Version is a PKCS#11 CK_VERSION (the "library-version" path attribute).
type Version struct {
	Major, Minor uint8
}

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// URI is a parsed RFC 7512 "pkcs11:" URI.
//
// The path attributes select a library, a slot, a token and, for key look-ups,
// an object; every attribute present must match. The query attributes say how
// to reach the token. ParseURI refuses a path attribute it does not know
// (RFC 7512: such a URI matches nothing, so using it could only fail
// later, or worse, match too much) and ignores query attributes it does not
// know (RFC 7512). The PIN is never part of a URI: pin-value is refused,
// PINSource names where to read it.
//
// The zero URI is "pkcs11:" and matches every token of an unspecified module.
type URI struct {
	// Token attributes, matched against CK_TOKEN_INFO.
	Token        string // token label
	Manufacturer string // token manufacturerID
	Serial       string // token serialNumber
	Model        string // token model

	// Library attributes, matched against CK_INFO.
	LibraryManufacturer string
	LibraryDescription  string
	LibraryVersion      *Version

	// Slot attributes, matched against CK_SLOT_INFO and the slot ID.
	SlotManufacturer string
	SlotDescription  string
	SlotID           *uint

	// Object attributes: a key's CKA_LABEL, CKA_ID and class.
	Object string
	ID     []byte
	Type   ObjectType

	// ModulePath is the absolute path of the PKCS#11 module (shared library).
	ModulePath string
	// ModuleName is a module name without prefix and suffix ("softhsm2"),
	// looked up in p11-kit's module registry and the usual library
	// directories. ModulePath wins when both are given.
	ModuleName string
	// PINSource is where the user PIN is read from: "file:/absolute/path"
	// (RFC 7512) or "env:VARIABLE" (an edgeprov extension).
	PINSource string
}

// maxURILen bounds what ParseURI reads; real URIs are a few hundred bytes.
const maxURILen = 8 << 10

const scheme = "pkcs11:"

// ParseURI parses an RFC 7512 PKCS#11 URI such as
//
//	pkcs11:token=dev-agent;object=device-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/edgeprov/pin
//
// Errors wrap ErrInvalidURI. Attribute names are matched case-insensitively
// (RFC 5234 quoted strings); a pin-value attribute is refused in any spelling.
func ParseURI(s string) (*URI, error) {
	u, err := parseURI(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidURI, err)
	}
	return u, nil
}

func parseURI(s string) (*URI, error) {
	if len(s) > maxURILen {
		return nil, fmt.Errorf("longer than %d bytes", maxURILen)
	}
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		return nil, fmt.Errorf("must start with %q", scheme)
	}
	rest := s[len(scheme):]
	path, query, hasQuery := strings.Cut(rest, "?")
	u := &URI{}
	seen := map[string]bool{}
	if path != "" {
		for _, run := range strings.Split(path, ";") {
			name, raw, err := splitAttr(run, "path")
			if err != nil {
				return nil, err
			}
			if seen[name] {
				return nil, fmt.Errorf("path attribute %q appears more than once", name)
			}
			seen[name] = true
			if err := u.setPath(name, raw); err != nil {
				return nil, err
			}
		}
	}
	seen = map[string]bool{}
	if hasQuery && query != "" {
		for _, run := range strings.Split(query, "&") {
			name, raw, err := splitAttr(run, "query")
			if err != nil {
				return nil, err
			}
			// Vendor query attributes may repeat (RFC 7512); the defined ones may not.
			if queryAttrs[name] {
				if seen[name] {
					return nil, fmt.Errorf("query attribute %q appears more than once", name)
				}
				seen[name] = true
			}
			if err := u.setQuery(name, raw); err != nil {
				return nil, err
			}
		}
	}
	return u, nil
}

// splitAttr splits one "name=value" run and lower-cases the name.
func splitAttr(run, component string) (name, raw string, err error) {
	if run == "" {
		return "", "", fmt.Errorf("empty %s attribute (stray separator)", component)
	}
	name, raw, ok := strings.Cut(run, "=")
	if !ok {
		return "", "", fmt.Errorf("%s attribute %q is not name=value", component, run)
	}
	if name == "" {
		return "", "", fmt.Errorf("%s attribute %q has no name", component, run)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isAlnum(c) && c != '-' && c != '_' {
			return "", "", fmt.Errorf("%s attribute name %q: only letters, digits, '-' and '_' are allowed", component, name)
		}
	}
	return strings.ToLower(name), raw, nil
}

// queryAttrs are the query attributes RFC 7512 defines.
var queryAttrs = map[string]bool{"pin-source": true, "pin-value": true, "module-name": true, "module-path": true}

func (u *URI) setPath(name, raw string) error {
	text := map[string]*string{
		"token":                &u.Token,
		"manufacturer":         &u.Manufacturer,
		"serial":               &u.Serial,
		"model":                &u.Model,
		"library-manufacturer": &u.LibraryManufacturer,
		"library-description":  &u.LibraryDescription,
		"slot-manufacturer":    &u.SlotManufacturer,
		"slot-description":     &u.SlotDescription,
		"object":               &u.Object,
	}
	if dst, ok := text[name]; ok {
		v, err := decodeText(raw, isPathChar, name)
		*dst = v
		return err
	}
	switch name {
	case "id":
		b, err := decode(raw, isPathChar, name)
		if err != nil {
			return err
		}
		if len(b) == 0 {
			return fmt.Errorf("attribute %q is empty", name)
		}
		u.ID = b
		return nil
	case "type", "library-version", "slot-id":
	default:
		return fmt.Errorf("unknown path attribute %q: RFC 7512 makes a URI with a path attribute the consumer does not understand match nothing", name)
	}
	v, err := decodeText(raw, isPathChar, name)
	if err != nil {
		return err
	}
	switch name {
	case "type":
		t := ObjectType(strings.ToLower(v))
		switch t {
		case TypePublic, TypePrivate, TypeCert, TypeSecretKey, TypeData:
			u.Type = t
			return nil
		}
		return fmt.Errorf("type %q: want public, private, cert, secret-key or data", v)
	case "library-version":
		ver, err := parseVersion(v)
		if err != nil {
			return err
		}
		u.LibraryVersion = &ver
		return nil
	}
	n, err := parseDigits(v, strconv.IntSize) // slot-id: a CK_SLOT_ID (unsigned long)
	if err != nil {
		return fmt.Errorf("slot-id %q: want a decimal number: %w", v, err)
	}
	id := uint(n)
	u.SlotID = &id
	return nil
}

// setQuery stores a query attribute RFC 7512 defines and checks the syntax
// of the others, which a consumer ignores.
func (u *URI) setQuery(name, raw string) error {
	if !queryAttrs[name] {
		_, err := decode(raw, isQueryChar, name)
		return err
	}
	if name == "pin-value" {
		return fmt.Errorf("pin-value is refused: a PIN written into a URI ends up in config files, " +
			"command lines and logs; put it in a file only edgeprov can read and use " +
			"pin-source=file:/path/to/pin (or pin-source=env:VARIABLE)")
	}
	v, err := decodeText(raw, isQueryChar, name)
	if err != nil {
		return err
	}
	switch name {
	case "pin-source":
		if _, err := parsePINSource(v); err != nil {
			return err
		}
		u.PINSource = v
	case "module-name":
		if strings.ContainsAny(v, `/\`) {
			return fmt.Errorf("module-name %q is a path: use module-path", v)
		}
		u.ModuleName = v
	case "module-path":
		if !filepath.IsAbs(v) {
			return fmt.Errorf("module-path %q is not absolute (RFC 7512 requires an absolute path)", v)
		}
		u.ModulePath = filepath.Clean(v)
	}
	return nil
}

func parseVersion(v string) (Version, error) {
	maj, min, hasMinor := strings.Cut(v, ".")
	a, err := parseDigits(maj, 8)
	if err != nil {
		return Version{}, fmt.Errorf("library-version %q: want M or M.N with 0 <= M, N <= 255", v)
	}
	var b uint64
	if hasMinor {
		if b, err = parseDigits(min, 8); err != nil {
			return Version{}, fmt.Errorf("library-version %q: want M or M.N with 0 <= M, N <= 255", v)
		}
	}
	return Version{Major: uint8(a), Minor: uint8(b)}, nil
}

// parseDigits parses a non-empty run of ASCII digits (no sign, no spaces).
func parseDigits(s string, bits int) (uint64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("not a decimal number")
	}
	return strconv.ParseUint(s, 10, bits)
}

// decodeText decodes a text attribute: non-empty, UTF-8, no NUL.
func decodeText(raw string, allowed func(byte) bool, name string) (string, error) {
	b, err := decode(raw, allowed, name)
	if err != nil {
		return "", err
	}
	switch {
	case len(b) == 0:
		return "", fmt.Errorf("attribute %q is empty", name)
	case !utf8.Valid(b):
		return "", fmt.Errorf("attribute %q is not UTF-8", name)
	case bytes.IndexByte(b, 0) >= 0:
		return "", fmt.Errorf("attribute %q contains a NUL byte", name)
	}
	return string(b), nil
}

// decode percent-decodes raw, refusing characters the component only admits
// percent-encoded.
func decode(raw string, allowed func(byte) bool, name string) ([]byte, error) {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '%':
			if i+2 >= len(raw) {
				return nil, fmt.Errorf("attribute %q: truncated percent-escape", name)
			}
			hi, ok1 := unhex(raw[i+1])
			lo, ok2 := unhex(raw[i+2])
			if !ok1 || !ok2 {
				return nil, fmt.Errorf("attribute %q: bad percent-escape %q", name, raw[i:i+3])
			}
			out = append(out, hi<<4|lo)
			i += 2
		case allowed(c):
			out = append(out, c)
		default:
			return nil, fmt.Errorf("attribute %q: character %q must be percent-encoded (%%%02X)", name, c, c)
		}
	}
	return out, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// RFC 3986 unreserved.
func isUnreserved(c byte) bool {
	return isAlnum(c) || c == '-' || c == '.' || c == '_' || c == '~'
}

// pk11-res-avail of RFC 7512 §2.3.
func isResAvail(c byte) bool { return strings.IndexByte(":[]@!$'()*+,=", c) >= 0 }

// pk11-pchar without pct-encoded: the path also admits "&".
func isPathChar(c byte) bool { return isUnreserved(c) || isResAvail(c) || c == '&' }

// pk11-qchar without pct-encoded: the query also admits "/", "?" and "|".
func isQueryChar(c byte) bool {
	return isUnreserved(c) || isResAvail(c) || c == '/' || c == '?' || c == '|'
}

// String formats u as a canonical pkcs11: URI that ParseURI reads back to an
// equal URI. It contains no secret (the PIN never is part of a URI).
func (u *URI) String() string {
	var b strings.Builder
	b.WriteString(scheme)
	sep := ""
	path := func(name, v string) {
		if v == "" {
			return
		}
		b.WriteString(sep + name + "=" + encode([]byte(v), ":[]@!$'()*+,"))
		sep = ";"
	}
	path("token", u.Token)
	path("manufacturer", u.Manufacturer)
	path("serial", u.Serial)
	path("model", u.Model)
	path("library-manufacturer", u.LibraryManufacturer)
	path("library-description", u.LibraryDescription)
	if u.LibraryVersion != nil {
		path("library-version", u.LibraryVersion.String())
	}
	path("slot-manufacturer", u.SlotManufacturer)
	path("slot-description", u.SlotDescription)
	if u.SlotID != nil {
		path("slot-id", strconv.FormatUint(uint64(*u.SlotID), 10))
	}
	path("object", u.Object)
	path("type", string(u.Type))
	if len(u.ID) > 0 {
		b.WriteString(sep + "id=" + encode(u.ID, "")) // id names bytes: write every one encoded
		sep = ";"
	}
	sep = "?"
	query := func(name, v string) {
		if v == "" {
			return
		}
		b.WriteString(sep + name + "=" + encode([]byte(v), ":[]@!$'()*+,/|"))
		sep = "&"
	}
	query("module-name", u.ModuleName)
	query("module-path", u.ModulePath)
	query("pin-source", u.PINSource)
	return b.String()
}

// encode percent-encodes every byte of v except, when keep is not empty,
// unreserved characters and those in keep.
func encode(v []byte, keep string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for _, c := range v {
		if keep != "" && (isUnreserved(c) || strings.IndexByte(keep, c) >= 0) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

// clone returns a deep copy of u.
func (u *URI) clone() *URI {
	c := *u
	c.ID = bytes.Clone(u.ID)
	if u.LibraryVersion != nil {
		v := *u.LibraryVersion
		c.LibraryVersion = &v
	}
	if u.SlotID != nil {
		id := *u.SlotID
		c.SlotID = &id
	}
	return &c
}

// KeyRef returns the key the URI's object and id attributes name.
func (u *URI) KeyRef() (KeyRef, error) {
	if u.Object == "" && len(u.ID) == 0 {
		return KeyRef{}, fmt.Errorf("%w: %s names no key: add ;object=<label> or ;id=<%%-encoded CKA_ID>", ErrInvalidURI, u)
	}
	return KeyRef{Label: u.Object, ID: bytes.Clone(u.ID)}, nil
}

// libraryInfo is what the URI's library attributes are matched against.
type libraryInfo struct {
	manufacturer, description string
	version                   Version
}

// tokenInfo is what the URI's slot and token attributes are matched against.
type tokenInfo struct {
	slotID                            uint
	slotManufacturer, slotDescription string
	label, manufacturer, model        string
	serial                            string
}

func (u *URI) matchesLibrary(l libraryInfo) bool {
	return matchStr(u.LibraryManufacturer, l.manufacturer) &&
		matchStr(u.LibraryDescription, l.description) &&
		(u.LibraryVersion == nil || *u.LibraryVersion == l.version)
}

func (u *URI) matchesToken(t tokenInfo) bool {
	return (u.SlotID == nil || *u.SlotID == t.slotID) &&
		matchStr(u.SlotManufacturer, t.slotManufacturer) &&
		matchStr(u.SlotDescription, t.slotDescription) &&
		matchStr(u.Token, t.label) &&
		matchStr(u.Manufacturer, t.manufacturer) &&
		matchStr(u.Model, t.model) &&
		matchStr(u.Serial, t.serial)
}

// matchStr compares a URI attribute with a PKCS#11 blank-padded string; an
// absent attribute matches anything.
func matchStr(want, have string) bool {
	return want == "" || want == strings.TrimRight(have, " \x00")
}

func (t tokenInfo) String() string {
	return fmt.Sprintf("token=%q serial=%q slot-id=%d", t.label, t.serial, t.slotID)
}
