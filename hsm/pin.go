package hsm

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// pin is a token PIN. It redacts itself in logs and in fmt output.
type pin struct{ b []byte }

const redacted = "REDACTED"

func (pin) LogValue() slog.Value           { return slog.StringValue(redacted) }
func (pin) String() string                 { return redacted }
func (pin) GoString() string               { return redacted }
func (pin) Format(f fmt.State, _ rune)     { _, _ = io.WriteString(f, redacted) }
func (p pin) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// value returns the PIN for handing to the PKCS#11 library.
func (p pin) value() string { return string(p.b) }

// wipe overwrites the PIN bytes this package holds.
func (p pin) wipe() { clear(p.b) }

// maxPINFile bounds a PIN file; PKCS#11 PINs are short.
const maxPINFile = 1024

type pinSource struct {
	file string // absolute path, or
	env  string // environment variable name
}

// parsePINSource parses "file:/abs/path", "file:///abs/path" (RFC 8089) or
// the edgeprov extension "env:VARIABLE".
func parsePINSource(s string) (pinSource, error) {
	scheme, rest, ok := strings.Cut(s, ":")
	switch strings.ToLower(scheme) {
	case "file":
		p := rest
		if strings.HasPrefix(p, "//") {
			host, path, _ := strings.Cut(p[2:], "/")
			if host != "" && host != "localhost" {
				return pinSource{}, fmt.Errorf("pin-source %q: a file on another host is not supported", s)
			}
			p = "/" + path
		}
		if !filepath.IsAbs(p) {
			return pinSource{}, fmt.Errorf("pin-source %q: the PIN file path must be absolute (file:/path/to/pin)", s)
		}
		return pinSource{file: filepath.Clean(p)}, nil
	case "env":
		if !validEnvName(rest) {
			return pinSource{}, fmt.Errorf("pin-source %q: want env:NAME with NAME made of letters, digits and '_'", s)
		}
		return pinSource{env: rest}, nil
	}
	if !ok || strings.HasPrefix(s, "|") {
		return pinSource{}, fmt.Errorf("pin-source %q: want file:/path/to/pin or env:VARIABLE (running a command is not supported)", s)
	}
	return pinSource{}, fmt.Errorf("pin-source %q: unsupported scheme %q (want file:/path/to/pin or env:VARIABLE)", s, scheme)
}

func validEnvName(s string) bool {
	if s == "" || '0' <= s[0] && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && s[i] != '_' {
			return false
		}
	}
	return true
}

// readPIN reads the PIN the URI's pin-source names. Errors wrap ErrPIN and
// never contain the PIN.
func readPIN(u *URI, log *slog.Logger) (pin, error) {
	if u.PINSource == "" {
		return pin{}, fmt.Errorf("%w: the URI has no pin-source: add ?pin-source=file:/path/to/pin (or pin-source=env:VARIABLE)", ErrPIN)
	}
	src, err := parsePINSource(u.PINSource)
	if err != nil {
		return pin{}, fmt.Errorf("%w: %w", ErrPIN, err)
	}
	var b []byte
	if src.env != "" {
		v, ok := os.LookupEnv(src.env)
		if !ok {
			return pin{}, fmt.Errorf("%w: environment variable %s (pin-source %s) is not set", ErrPIN, src.env, u.PINSource)
		}
		b = []byte(v)
	} else {
		if b, err = readPINFile(src.file, log); err != nil {
			return pin{}, fmt.Errorf("%w: %w", ErrPIN, err)
		}
	}
	// One trailing line ending is what "echo 1234 > pin" leaves behind.
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	switch {
	case len(b) == 0:
		return pin{}, fmt.Errorf("%w: pin-source %s holds an empty PIN", ErrPIN, u.PINSource)
	case bytes.IndexByte(b, 0) >= 0:
		return pin{}, fmt.Errorf("%w: pin-source %s holds a NUL byte", ErrPIN, u.PINSource)
	}
	return pin{b: b}, nil
}

func readPINFile(path string, log *slog.Logger) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err // *PathError names the file, not the content
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("PIN file %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("PIN file is readable or writable by group or others; chmod 600 it",
			"path", path, "mode", fi.Mode().Perm().String())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPINFile+1))
	if err != nil {
		return nil, fmt.Errorf("read PIN file %s: %w", path, err)
	}
	if len(b) > maxPINFile {
		clear(b)
		return nil, fmt.Errorf("PIN file %s is larger than %d bytes", path, maxPINFile)
	}
	return b, nil
}
