// Package state is the agent's result file: written atomically (temp file,
// fsync, rename), so a crash leaves the old result or the new one.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Result is what a provisioning run leaves for the device's other software.
type Result struct {
	ProvisioningHost string          `json:"provisioningHost"`
	IDScope          string          `json:"idScope"`
	RegistrationID   string          `json:"registrationId"`
	DeviceID         string          `json:"deviceId"`
	AssignedHub      string          `json:"assignedHub"`
	Status           string          `json:"status"`
	Substatus        string          `json:"substatus,omitempty"`
	Payload          json.RawMessage `json:"payload,omitempty"`
	OperationID      string          `json:"operationId"`
	ProvisionedAt    time.Time       `json:"provisionedAt"`
	// IssuedCertificateFile is where the certificate chain the service
	// issued (from the agent's CSR) was written.
	IssuedCertificateFile string `json:"issuedCertificateFile,omitempty"`
	// TPM says where the hub key is, for TPM attestation: it was imported
	// into the TPM and never left it; sign hub SAS tokens with TPM2_HMAC there.
	TPM *TPMKey `json:"tpm,omitempty"`
}

// TPMKey locates the hub key in the device's TPM.
type TPMKey struct {
	Path string `json:"path"`
	// HubKeyHandle is the persistent handle, hex (e.g. "0x81000100").
	HubKeyHandle string `json:"hubKeyHandle"`
}

// ErrNone is returned by Load when there is no result yet.
var ErrNone = errors.New("no provisioning result yet")

// Load reads a result file.
func Load(path string) (*Result, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNone
	}
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s is corrupt: %w", path, err)
	}
	return &r, nil
}

// Save writes r to path atomically.
func Save(path string, r *Result) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return WriteFile(path, append(data, '\n'), 0o600)
}

// WriteFile writes data to path atomically (temporary file, fsync, rename)
// with mode perm.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
