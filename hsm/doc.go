// Package hsm keeps edgeprov's keys in a PKCS#11 token (an HSM, a smart card,
// SoftHSM2) and hands out only crypto.Signer values and HMAC operations, never
// key bytes.
//
// A token and a key are named by one RFC 7512 URI, so a caller is configured
// with a single string:
//
//	pkcs11:token=dev-agent;object=device-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/edgeprov/pin
//
// The PIN is read from the pin-source (a file, or an environment variable with
// the edgeprov extension "env:VAR"); a PIN inside the URI (pin-value) is
// refused.
//
// The PKCS#11 code uses cgo (github.com/ThalesGroup/crypto11 over
// github.com/miekg/pkcs11). A build with CGO_ENABLED=0 (which Go also chooses
// by itself when no C compiler is on PATH) keeps the same API: URI parsing
// works, and everything that would touch a token returns ErrNoPKCS11.
package hsm
