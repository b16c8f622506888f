// Package config loads edgeprov-agent's YAML configuration, strictly: unknown
// fields and a missing or unknown version are errors, with line numbers.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/hsm"
)

// Version is the config format this build reads.
const Version = 1

// Config is agent.yaml.
type Config struct {
	Version int `yaml:"version"`
	// ProvisioningHost is host[:port] of the device endpoint; without a port,
	// 443 for https and 8883 for mqtt.
	ProvisioningHost string `yaml:"provisioningHost"`
	IDScope          string `yaml:"idScope"`
	// RegistrationID may be left out with TPM attestation (derived from the EK).
	RegistrationID string `yaml:"registrationId,omitempty"`
	// TrustBundle is a PEM file of CA certificates to trust for the endpoint;
	// empty means the system roots.
	TrustBundle string `yaml:"trustBundle,omitempty"`
	// Transport is https (the default) or mqtt (MQTT 3.1.1 over TLS).
	Transport   string      `yaml:"transport,omitempty"`
	Attestation Attestation `yaml:"attestation"`
	// Payload is sent with the registration (custom allocation data).
	Payload any `yaml:"payload,omitempty"`
	// CSR, when set, makes the agent send a certificate signing request for
	// an operational key and keep the certificate the service issues.
	CSR *CSR `yaml:"csr,omitempty"`
	// StateFile receives the result, atomically.
	StateFile string `yaml:"stateFile"`
	// Timeout bounds the whole provisioning, polls included.
	Timeout string `yaml:"timeout,omitempty"`

	dir     string
	timeout time.Duration
}

// Attestation says how the device proves itself.
type Attestation struct {
	Type         string        `yaml:"type"`
	SymmetricKey *SymmetricKey `yaml:"symmetricKey,omitempty"`
	X509         *X509         `yaml:"x509,omitempty"`
	TPM          *TPM          `yaml:"tpm,omitempty"`
}

// TPM names the device's TPM 2.0 (DPS-style TPM attestation: the hub key is
// imported into the TPM and never leaves it).
type TPM struct {
	// Path is /dev/tpmrm0 (the default), /dev/tpm0, unix:/path/to/swtpm.sock
	// or tcp:host:port.
	Path string `yaml:"path,omitempty"`
	// AuthKeyHandle is the persistent handle the hub key is imported at
	// (hex, default 0x81000100 as the Azure IoT C and Node SDKs).
	AuthKeyHandle string `yaml:"authKeyHandle,omitempty"`

	handle uint32
}

// DefaultAuthKeyHandle is where the hub key is persisted unless configured.
const DefaultAuthKeyHandle = 0x81000100

// Handle is the parsed AuthKeyHandle.
func (t *TPM) Handle() uint32 { return t.handle }

// SymmetricKey names the key: the device's own (KeyFile), a group key the
// device key is derived from (GroupKeyFile, for factory stations), or the
// device's own key held in a PKCS#11 token as a generic secret (KeyURI), which
// signs the SAS tokens itself.
type SymmetricKey struct {
	KeyFile      string `yaml:"keyFile,omitempty"`
	GroupKeyFile string `yaml:"groupKeyFile,omitempty"`
	KeyURI       string `yaml:"keyURI,omitempty"`
}

// X509 is the device's certificate (PEM: the leaf, then the intermediates to
// send) and its private key, in a PEM file or in a PKCS#11 token (RFC 7512
// URI).
type X509 struct {
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile,omitempty"`
	KeyURI   string `yaml:"keyURI,omitempty"`
}

// CSR is the operational key the service is asked to certify at
// registration (api-version 2025-07-01-preview) and where the issued chain is
// kept.
type CSR struct {
	// KeyFile or KeyURI is the key; `edgeprov-agent keygen` creates it.
	KeyFile string `yaml:"keyFile,omitempty"`
	KeyURI  string `yaml:"keyURI,omitempty"`
	// KeyType is what keygen creates: ecdsa-p256 (default) or rsa-2048.
	KeyType string `yaml:"keyType,omitempty"`
	// ChainFile receives the issued certificate and its CA chain (PEM, the
	// device's certificate first), atomically.
	ChainFile string `yaml:"chainFile"`
}

// Load reads and validates path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read agent config: %w", err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.dir = filepath.Dir(path)
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

func (c *Config) validate() error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if c.Version != Version {
		bad("version: %d is not supported (this agent reads version %d)", c.Version, Version)
	}
	if c.ProvisioningHost == "" {
		bad("provisioningHost: required")
	} else if _, err := c.HostPort(); err != nil {
		bad("provisioningHost: %v", err)
	}
	if err := dpsapi.ValidateIDScope(c.IDScope); err != nil {
		bad("idScope: %v", err)
	}
	// A TPM device may leave its registration ID out: it is derived from the
	// EK, as the Azure SDKs derive it (protocol.md §5.4.1).
	if c.RegistrationID != "" || c.Attestation.Type != "tpm" {
		if err := dpsapi.ValidateRegistrationID(c.RegistrationID); err != nil {
			bad("registrationId: %v", err)
		}
	}
	switch c.Transport {
	case "", TransportHTTPS, TransportMQTT:
	default:
		bad("transport: %q is not supported (https or mqtt)", c.Transport)
	}
	a := c.Attestation
	switch a.Type {
	case "symmetricKey":
		sk := a.SymmetricKey
		if sk == nil || countSet(sk.KeyFile, sk.GroupKeyFile, sk.KeyURI) != 1 {
			bad("attestation.symmetricKey: give exactly one of keyFile, groupKeyFile or keyURI")
		} else if sk.KeyURI != "" {
			if err := checkKeyURI(sk.KeyURI); err != nil {
				bad("attestation.symmetricKey.keyURI: %v", err)
			}
		}
		if a.X509 != nil {
			bad("attestation.x509: not used with type symmetricKey")
		}
		if a.TPM != nil {
			bad("attestation.tpm: not used with type symmetricKey")
		}
	case "x509":
		if err := dpsapi.ValidateX509RegistrationID(c.RegistrationID); err != nil && c.RegistrationID != "" {
			bad("registrationId: with x509 attestation it is the certificate's CN: %v", err)
		}
		x := a.X509
		switch {
		case x == nil:
			bad("attestation.x509: required for type x509 (certFile and keyFile or keyURI)")
		default:
			if x.CertFile == "" {
				bad("attestation.x509.certFile: required")
			}
			if countSet(x.KeyFile, x.KeyURI) != 1 {
				bad("attestation.x509: give exactly one of keyFile or keyURI")
			} else if x.KeyURI != "" {
				if err := checkKeyURI(x.KeyURI); err != nil {
					bad("attestation.x509.keyURI: %v", err)
				}
			}
		}
		if a.SymmetricKey != nil {
			bad("attestation.symmetricKey: not used with type x509")
		}
		if a.TPM != nil {
			bad("attestation.tpm: not used with type x509")
		}
	case "tpm":
		if a.SymmetricKey != nil {
			bad("attestation.symmetricKey: not used with type tpm")
		}
		if a.X509 != nil {
			bad("attestation.x509: not used with type tpm")
		}
		if c.Attestation.TPM == nil {
			c.Attestation.TPM = &TPM{}
		}
		t := c.Attestation.TPM
		if t.Path == "" {
			t.Path = "/dev/tpmrm0"
		}
		t.handle = DefaultAuthKeyHandle
		if t.AuthKeyHandle != "" {
			h, err := strconv.ParseUint(t.AuthKeyHandle, 0, 32)
			// Owner persistent handles, minus the SRK's 0x81000001.
			if err != nil || h < 0x81000000 || h > 0x817fffff || h == 0x81000001 {
				bad("attestation.tpm.authKeyHandle: %q is not an owner persistent handle (0x81000000–0x817fffff, not the SRK's 0x81000001)", t.AuthKeyHandle)
			} else {
				t.handle = uint32(h)
			}
		}
	case "":
		bad("attestation.type: required (symmetricKey, x509 or tpm)")
	default:
		bad("attestation.type: %q is not supported (symmetricKey, x509 or tpm)", a.Type)
	}
	if r := c.CSR; r != nil {
		if countSet(r.KeyFile, r.KeyURI) != 1 {
			bad("csr: give exactly one of keyFile or keyURI")
		} else if r.KeyURI != "" {
			if err := checkKeyURI(r.KeyURI); err != nil {
				bad("csr.keyURI: %v", err)
			}
		}
		switch r.KeyType {
		case "", "ecdsa-p256", "rsa-2048":
		default:
			bad("csr.keyType: %q is not supported (ecdsa-p256 or rsa-2048)", r.KeyType)
		}
		if r.ChainFile == "" {
			bad("csr.chainFile: required (where the issued certificate chain is written)")
		}
	}
	if c.StateFile == "" {
		bad("stateFile: required")
	}
	c.timeout = 2 * time.Minute
	if c.Timeout != "" {
		d, err := time.ParseDuration(c.Timeout)
		if err != nil || d <= 0 {
			bad("timeout: %q is not a positive duration", c.Timeout)
		}
		c.timeout = d
	}
	if c.Payload != nil {
		if _, err := json.Marshal(c.Payload); err != nil {
			bad("payload: cannot be sent as JSON: %v", err)
		}
	}
	return errors.Join(errs...)
}

func countSet(s ...string) int {
	n := 0
	for _, v := range s {
		if v != "" {
			n++
		}
	}
	return n
}

// checkKeyURI requires a pkcs11: URI naming a key.
func checkKeyURI(s string) error {
	u, err := hsm.ParseURI(s)
	if err != nil {
		return err
	}
	_, err = u.KeyRef()
	return err
}

// Transports.
const (
	TransportHTTPS = "https"
	TransportMQTT  = "mqtt"
)

// TransportName is the transport, defaulted.
func (c *Config) TransportName() string {
	if c.Transport == "" {
		return TransportHTTPS
	}
	return c.Transport
}

// HostPort returns the endpoint address with the transport's default port
// filled in (DPS's: 443 for HTTPS, 8883 for MQTT).
func (c *Config) HostPort() (string, error) {
	if _, _, err := net.SplitHostPort(c.ProvisioningHost); err == nil {
		return c.ProvisioningHost, nil
	}
	if net.ParseIP(c.ProvisioningHost) == nil && !validHost(c.ProvisioningHost) {
		return "", fmt.Errorf("%q is not host or host:port", c.ProvisioningHost)
	}
	port := "443"
	if c.TransportName() == TransportMQTT {
		port = "8883"
	}
	return net.JoinHostPort(c.ProvisioningHost, port), nil
}

func validHost(h string) bool {
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return h != ""
}

// Path resolves p relative to the config file.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// TimeoutDuration is the parsed Timeout.
func (c *Config) TimeoutDuration() time.Duration { return c.timeout }
