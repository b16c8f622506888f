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
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
)

// Version is the config format this build reads.
const Version = 1

// Config is agent.yaml.
type Config struct {
	Version int `yaml:"version"`
	// ProvisioningHost is host[:port] of the device endpoint (port 443 if absent).
	ProvisioningHost string `yaml:"provisioningHost"`
	IDScope          string `yaml:"idScope"`
	RegistrationID   string `yaml:"registrationId"`
	// TrustBundle is a PEM file of CA certificates to trust for the endpoint;
	// empty means the system roots.
	TrustBundle string      `yaml:"trustBundle,omitempty"`
	Transport   string      `yaml:"transport,omitempty"`
	Attestation Attestation `yaml:"attestation"`
	// Payload is sent with the registration (custom allocation data).
	Payload any `yaml:"payload,omitempty"`
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
}

// SymmetricKey names the key: the device's own (KeyFile), or a group key the
// device key is derived from (GroupKeyFile, for factory stations).
type SymmetricKey struct {
	KeyFile      string `yaml:"keyFile,omitempty"`
	GroupKeyFile string `yaml:"groupKeyFile,omitempty"`
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
	if err := dpsapi.ValidateRegistrationID(c.RegistrationID); err != nil {
		bad("registrationId: %v", err)
	}
	switch c.Transport {
	case "", "https":
	default:
		bad("transport: %q is not supported (https)", c.Transport)
	}
	switch c.Attestation.Type {
	case "symmetricKey":
		sk := c.Attestation.SymmetricKey
		if sk == nil || (sk.KeyFile == "") == (sk.GroupKeyFile == "") {
			bad("attestation.symmetricKey: give exactly one of keyFile or groupKeyFile")
		}
	case "":
		bad("attestation.type: required (symmetricKey)")
	default:
		bad("attestation.type: %q is not supported (symmetricKey)", c.Attestation.Type)
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

// HostPort returns the endpoint address with the default port filled in.
func (c *Config) HostPort() (string, error) {
	if _, _, err := net.SplitHostPort(c.ProvisioningHost); err == nil {
		return c.ProvisioningHost, nil
	}
	if net.ParseIP(c.ProvisioningHost) == nil && !validHost(c.ProvisioningHost) {
		return "", fmt.Errorf("%q is not host or host:port", c.ProvisioningHost)
	}
	return net.JoinHostPort(c.ProvisioningHost, "443"), nil
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
