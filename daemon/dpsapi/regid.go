package dpsapi

import (
	"errors"
	"fmt"
	"strings"
)

// Registration ID limits (dps-concepts.txt).
const (
	MaxRegistrationIDLen     = 128
	MaxX509RegistrationIDLen = 64 // the subject CN limit
)

var (
	// ErrInvalidRegistrationID is returned for IDs that break DPS's rules.
	ErrInvalidRegistrationID = errors.New("invalid registration ID")
	// ErrInvalidIDScope is returned for ID scopes of the wrong shape.
	ErrInvalidIDScope = errors.New("invalid ID scope")
)

// ValidateRegistrationID checks DPS's rules: 1 to 128 characters, alphanumerics and
// '-', '.', '_', ':', the last one alphanumeric or '-'. The same rules apply to
// enrollment group IDs.
func ValidateRegistrationID(id string) error {
	return validateID(id, MaxRegistrationIDLen)
}

// ValidateX509RegistrationID is ValidateRegistrationID with the 64-character CN limit.
func ValidateX509RegistrationID(id string) error {
	return validateID(id, MaxX509RegistrationIDLen)
}

func validateID(id string, max int) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidRegistrationID)
	}
	if len(id) > max {
		return fmt.Errorf("%w: %d characters, the limit is %d", ErrInvalidRegistrationID, len(id), max)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && c != '-' && c != '.' && c != '_' && c != ':' {
			return fmt.Errorf("%w: character %q at %d is not allowed (alphanumerics and - . _ : only)", ErrInvalidRegistrationID, c, i)
		}
	}
	if last := id[len(id)-1]; !isAlnum(last) && last != '-' {
		return fmt.Errorf("%w: the last character must be alphanumeric or '-'", ErrInvalidRegistrationID)
	}
	return nil
}

// NormalizeRegistrationID is the case-insensitive key of a registration ID.
func NormalizeRegistrationID(id string) string { return strings.ToLower(id) }

// ValidateIDScope checks the shape DPS uses and edgeprov generates: "0ne" and
// eight upper-case hex digits. Scopes compare case-insensitively.
func ValidateIDScope(scope string) error {
	if len(scope) != 11 || !strings.EqualFold(scope[:3], "0ne") {
		return fmt.Errorf("%w: %q (want 0ne followed by 8 hex digits)", ErrInvalidIDScope, scope)
	}
	for i := 3; i < len(scope); i++ {
		if !isHex(scope[i]) {
			return fmt.Errorf("%w: %q (want 0ne followed by 8 hex digits)", ErrInvalidIDScope, scope)
		}
	}
	return nil
}

// NormalizeIDScope is the canonical spelling of a scope ("0ne" + upper-case
// hex); anything shorter than the prefix is only upper-cased.
func NormalizeIDScope(scope string) string {
	if len(scope) < 3 {
		return strings.ToUpper(scope)
	}
	return "0ne" + strings.ToUpper(scope[3:])
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// ValidateAPIVersion accepts any api-version of DPS's shape (YYYY-MM-DD with an
// optional -suffix such as -preview) and an absent one.
func ValidateAPIVersion(v string) error {
	if v == "" {
		return nil
	}
	if len(v) < 10 || len(v) > 32 {
		return fmt.Errorf("invalid api-version %q", v)
	}
	for i := 0; i < 10; i++ {
		c := v[i]
		if i == 4 || i == 7 {
			if c != '-' {
				return fmt.Errorf("invalid api-version %q", v)
			}
		} else if c < '0' || c > '9' {
			return fmt.Errorf("invalid api-version %q", v)
		}
	}
	if len(v) > 10 {
		if v[10] != '-' || len(v) == 11 {
			return fmt.Errorf("invalid api-version %q", v)
		}
		for i := 11; i < len(v); i++ {
			if !isAlnum(v[i]) {
				return fmt.Errorf("invalid api-version %q", v)
			}
		}
	}
	return nil
}
