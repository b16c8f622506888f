package hsm

import "errors"

// Errors returned by this package, to be tested with errors.Is.
var (
	// ErrNoPKCS11 is returned by every token operation of a binary built
	// without cgo.
	ErrNoPKCS11 = errors.New("edgeprov was built without PKCS#11 support (CGO_ENABLED=0)")
	// ErrInvalidURI wraps every ParseURI error and URIs that name no key
	// where a key is needed.
	ErrInvalidURI = errors.New("invalid pkcs11 URI")
	// ErrPIN is returned when the PIN cannot be read from its pin-source.
	ErrPIN = errors.New("cannot read the PKCS#11 PIN")
	// ErrPINIncorrect is returned when the token refuses the PIN.
	ErrPINIncorrect = errors.New("PKCS#11 PIN incorrect")
	// ErrModuleNotFound is returned when no PKCS#11 module (shared library)
	// can be found or loaded.
	ErrModuleNotFound = errors.New("PKCS#11 module not found")
	// ErrTokenNotFound is returned when no initialised token matches the URI.
	ErrTokenNotFound = errors.New("PKCS#11 token not found")
	// ErrKeyNotFound is returned when no key matches a label or id.
	ErrKeyNotFound = errors.New("key not found")
	// ErrKeyExists is returned when a key with the label to create exists.
	ErrKeyExists = errors.New("key already exists")
	// ErrAmbiguous is returned when several tokens or keys match where one
	// is needed.
	ErrAmbiguous = errors.New("more than one match")
	// ErrKeyKind is returned when a key is not of the kind asked for.
	ErrKeyKind = errors.New("key of another kind")
	// ErrClosed is returned by a Module (and its keys) after Close.
	ErrClosed = errors.New("hsm module closed")
)
