package credential

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/tpm"
)

// TPM is a device TPM 2.0 doing DPS-style attestation (protocol.md §5.4): it
// reports its endorsement key (EK), storage root key (SRK) and, when the TPM
// carries one, the EK certificate; it imports the keys the service wraps to
// it, and signs SAS tokens with the imported key inside the TPM. The key
// never exists outside the TPM on the device.
type TPM struct {
	dev    *tpm.Device
	path   string
	handle tpm2.TPMHandle
	ev     dpsapi.TPMAttestation
	regID  string
}

var _ SASSigner = (*TPM)(nil)

// OpenTPM opens the TPM at path (see tpm.OpenTransport), reads (or creates
// and persists) its EK and SRK and reads its EK certificate, if any. Keys
// are imported at handle. Close it when done.
func OpenTPM(path string, handle uint32, log *slog.Logger) (*TPM, error) {
	dev, err := tpm.Open(path, tpm.WithLogger(log))
	if err != nil {
		return nil, err
	}
	t := &TPM{dev: dev, path: path, handle: tpm2.TPMHandle(handle)}
	if err := t.read(); err != nil {
		dev.Close()
		return nil, err
	}
	return t, nil
}

func (t *TPM) read() error {
	ek, err := t.dev.EndorsementKey()
	if err != nil {
		return err
	}
	srk, err := t.dev.StorageRootKey()
	if err != nil {
		return err
	}
	t.ev = dpsapi.TPMAttestation{
		EndorsementKey: base64.StdEncoding.EncodeToString(ek),
		StorageRootKey: base64.StdEncoding.EncodeToString(srk),
	}
	cert, err := t.dev.EKCertificate()
	switch {
	case err == nil:
		// An edgeprov extension: TPM enrollment groups verify it.
		t.ev.EndorsementKeyCertificate = base64.StdEncoding.EncodeToString(cert)
	case !errors.Is(err, tpm.ErrNoEKCertificate):
		return err
	}
	t.regID, err = t.dev.RegistrationID()
	return err
}

// Close closes the TPM.
func (t *TPM) Close() error { return t.dev.Close() }

// Evidence is the tpm object of the registration body.
func (t *TPM) Evidence() *dpsapi.TPMAttestation {
	ev := t.ev
	return &ev
}

// RegistrationID is the registration ID DPS derives from the EK, for devices
// that are not given one.
func (t *TPM) RegistrationID() string { return t.regID }

// Path is where the TPM was opened.
func (t *TPM) Path() string { return t.path }

// Handle is the persistent handle the imported key lives at.
func (t *TPM) Handle() uint32 { return uint32(t.handle) }

// ImportAuthenticationKey imports an authenticationKey blob (the challenge,
// then the hub key) at the handle, replacing the key there.
func (t *TPM) ImportAuthenticationKey(blob []byte) error {
	return t.dev.ImportAuthenticationKey(blob, t.handle)
}

// Token implements SASSigner: TPM2_HMAC with the imported key. Like the Azure
// Node TPM client, it URL-encodes sr and signs it as sent.
func (t *TPM) Token(resource string, expiry time.Time) (string, error) {
	return sas.BuildWithMAC(func(s []byte) ([]byte, error) {
		return t.dev.HMAC(t.handle, s)
	}, url.QueryEscape(resource), expiry, sas.DeviceKeyName)
}

// LogValue says which TPM, not what it holds.
func (t *TPM) LogValue() slog.Value {
	return slog.GroupValue(slog.String("path", t.path), slog.String("handle", fmt.Sprintf("0x%08x", uint32(t.handle))))
}
