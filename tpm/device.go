// Package tpm is the device side of DPS-style TPM attestation over go-tpm:
// it reports the TPM's endorsement key (EK) and storage root key (SRK),
// imports the authenticationKey blob a provisioning service built for them
// (tpm/dpsauth), and signs with the imported HMAC key inside the TPM. The
// HMAC key is never in the clear on the device: it reaches the TPM wrapped
// to its SRK and is used only through TPM2_HMAC.
//
// A Device talks to /dev/tpmrm0, /dev/tpm0 or a swtpm socket (see
// OpenTransport). Every operation flushes the transient objects and sessions
// it creates, on error paths too, so it also works on TPMs without a
// resource manager such as swtpm (3 object and 3 session slots).
package tpm

import (
	"bytes"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

// Well-known handles.
const (
	// EKHandle is the TCG persistent handle of the RSA-2048 EK.
	EKHandle tpm2.TPMHandle = 0x81010001
	// SRKHandle is the TCG persistent handle of the SRK.
	SRKHandle tpm2.TPMHandle = 0x81000001
	// AuthKeyHandle is where the Azure IoT C and Node SDKs persist the
	// imported DPS/IoT Hub HMAC key (aziot-tpmd uses 0x81001000).
	AuthKeyHandle tpm2.TPMHandle = 0x81000100
	// EKCertNVIndex is the TCG NV index of the RSA-2048 EK certificate.
	EKCertNVIndex tpm2.TPMHandle = 0x01c00002
)

// ErrNoEKCertificate is returned by EKCertificate when the TPM has no EK
// certificate in NV.
var ErrNoEKCertificate = errors.New("tpm: no EK certificate in NV index 0x01c00002")

// SRKTemplate is the SRK template of the Azure IoT SDKs: RSA-2048,
// AES-128-CFB, fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|noDA|
// restricted|decrypt, empty unique. (tpm2.RSASRKTemplate, the TCG one, has a
// 256-byte zero unique and so yields a different key.)
var SRKTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgRSA,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		Restricted:          true,
		Decrypt:             true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
		Symmetric: aes128CFB(),
		KeyBits:   2048,
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
}

func aes128CFB() tpm2.TPMTSymDefObject {
	return tpm2.TPMTSymDefObject{
		Algorithm: tpm2.TPMAlgAES,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
	}
}

// Device is a TPM used for DPS attestation. Its methods are safe for
// concurrent use; they run one at a time.
type Device struct {
	mu     sync.Mutex
	tpm    transport.TPM
	closer io.Closer
	log    *slog.Logger
}

// Option configures Open and New.
type Option func(*Device)

// WithLogger makes the Device log what it changes in the TPM (creating the
// EK/SRK, replacing a persisted key) at debug level. The default discards.
func WithLogger(l *slog.Logger) Option {
	return func(d *Device) {
		if l != nil {
			d.log = l
		}
	}
}

// Open opens the TPM at path (see OpenTransport for the forms it takes).
// Close the Device when done.
func Open(path string, opts ...Option) (*Device, error) {
	t, err := OpenTransport(path)
	if err != nil {
		return nil, err
	}
	d := New(t, opts...)
	d.closer = t
	return d, nil
}

// New returns a Device over an open transport, which the caller keeps
// ownership of (Close does not close it).
func New(t transport.TPM, opts ...Option) *Device {
	d := &Device{tpm: t, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Close closes the transport if Open created it.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closer == nil {
		return nil
	}
	err := d.closer.Close()
	d.closer = nil
	return err
}

// EndorsementKey returns the marshalled TPM2B_PUBLIC of the RSA EK at
// EKHandle, creating it from the TCG default template (tpm2.RSAEKTemplate)
// and persisting it if absent. It fails if the key found there is not one
// dpsauth.ParseEK accepts.
func (d *Device) EndorsementKey() ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ek, _, err := d.endorsementKey()
	return ek, err
}

// StorageRootKey returns the marshalled TPM2B_PUBLIC of the SRK at
// SRKHandle, creating it from SRKTemplate and persisting it if absent. It
// fails if the key found there is not one dpsauth.ParseSRK accepts.
func (d *Device) StorageRootKey() ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	srk, _, err := d.storageRootKey()
	return srk, err
}

// RegistrationID returns the DPS registration ID derived from the EK (see
// dpsauth.RegistrationID), creating the EK if needed.
func (d *Device) RegistrationID() (string, error) {
	ek, err := d.EndorsementKey()
	if err != nil {
		return "", err
	}
	return dpsauth.RegistrationID(ek), nil
}

func (d *Device) endorsementKey() ([]byte, tpm2.TPM2BName, error) {
	pub, name, err := d.persistentPrimary(EKHandle, tpm2.TPMRHEndorsement, tpm2.RSAEKTemplate, "EK")
	if err != nil {
		return nil, name, err
	}
	if _, err := dpsauth.ParseEK(pub); err != nil {
		return nil, name, fmt.Errorf("tpm: key at 0x%08x: %w", uint32(EKHandle), err)
	}
	return pub, name, nil
}

func (d *Device) storageRootKey() ([]byte, tpm2.TPM2BName, error) {
	pub, name, err := d.persistentPrimary(SRKHandle, tpm2.TPMRHOwner, SRKTemplate, "SRK")
	if err != nil {
		return nil, name, err
	}
	if _, err := dpsauth.ParseSRK(pub); err != nil {
		return nil, name, fmt.Errorf("tpm: key at 0x%08x: %w", uint32(SRKHandle), err)
	}
	return pub, name, nil
}

// persistentPrimary returns the public area (marshalled TPM2B_PUBLIC) and
// Name of the object at handle, first creating a primary key from template
// in hierarchy and persisting it there if the handle is empty.
func (d *Device) persistentPrimary(handle, hierarchy tpm2.TPMHandle, template tpm2.TPMTPublic, what string) ([]byte, tpm2.TPM2BName, error) {
	rp, err := tpm2.ReadPublic{ObjectHandle: handle}.Execute(d.tpm)
	if err == nil {
		return tpm2.Marshal(rp.OutPublic), rp.Name, nil
	}
	if !errors.Is(err, tpm2.TPMRCHandle) {
		return nil, tpm2.TPM2BName{}, fmt.Errorf("tpm: read %s at 0x%08x: %w", what, uint32(handle), err)
	}
	d.log.Debug("tpm: creating and persisting primary key", "key", what, "handle", fmt.Sprintf("0x%08x", uint32(handle)))
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: hierarchy, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(template),
	}.Execute(d.tpm)
	if err != nil {
		return nil, tpm2.TPM2BName{}, fmt.Errorf("tpm: create %s: %w", what, err)
	}
	defer d.flush(cp.ObjectHandle, what)
	if _, err := (tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name},
		PersistentHandle: handle,
	}).Execute(d.tpm); err != nil {
		return nil, tpm2.TPM2BName{}, fmt.Errorf("tpm: persist %s at 0x%08x: %w", what, uint32(handle), err)
	}
	return tpm2.Marshal(cp.OutPublic), cp.Name, nil
}

// flush flushes a transient object or session; failures are logged, as
// there is nothing better to do with them on the way out.
func (d *Device) flush(h tpm2.TPMHandle, what string) {
	if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(d.tpm); err != nil {
		d.log.Warn("tpm: flush failed", "what", what, "handle", fmt.Sprintf("0x%08x", uint32(h)), "err", err)
	}
}

// EKCertificate returns the DER EK certificate in NV index EKCertNVIndex
// (trailing padding after the DER structure removed), or an error wrapping
// ErrNoEKCertificate if the index is not defined or not written.
func (d *Device) EKCertificate() ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rp, err := tpm2.NVReadPublic{NVIndex: EKCertNVIndex}.Execute(d.tpm)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, ErrNoEKCertificate
	}
	if err != nil {
		return nil, fmt.Errorf("tpm: read NV index 0x%08x: %w", uint32(EKCertNVIndex), err)
	}
	nv, err := rp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("tpm: NV index 0x%08x public area: %w", uint32(EKCertNVIndex), err)
	}
	if !nv.Attributes.Written || nv.DataSize == 0 {
		return nil, fmt.Errorf("%w (index defined but empty)", ErrNoEKCertificate)
	}
	// Read with the index's own (empty) auth if allowed, else as owner.
	auth := tpm2.AuthHandle{Handle: EKCertNVIndex, Name: rp.NVName, Auth: tpm2.PasswordAuth(nil)}
	if !nv.Attributes.AuthRead {
		auth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	}
	chunk := d.nvBufferMax()
	data := make([]byte, 0, nv.DataSize)
	for off := 0; off < int(nv.DataSize); off += chunk {
		n := min(chunk, int(nv.DataSize)-off)
		r, err := tpm2.NVRead{
			AuthHandle: auth,
			NVIndex:    tpm2.NamedHandle{Handle: EKCertNVIndex, Name: rp.NVName},
			Size:       uint16(n),
			Offset:     uint16(off),
		}.Execute(d.tpm)
		if err != nil {
			return nil, fmt.Errorf("tpm: read EK certificate at offset %d: %w", off, err)
		}
		if len(r.Data.Buffer) != n {
			return nil, fmt.Errorf("tpm: read EK certificate at offset %d: got %d bytes, want %d", off, len(r.Data.Buffer), n)
		}
		data = append(data, r.Data.Buffer...)
	}
	return trimDER(data), nil
}

// nvBufferMax returns TPM_PT_NV_BUFFER_MAX, at most 1024, or 512 (a size
// every TPM supports) if the TPM does not say.
func (d *Device) nvBufferMax() int {
	const fallback, ceiling = 512, 1024
	gc, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTNVBufferMax),
		PropertyCount: 1,
	}.Execute(d.tpm)
	if err != nil {
		return fallback
	}
	props, err := gc.CapabilityData.Data.TPMProperties()
	if err != nil || len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != tpm2.TPMPTNVBufferMax {
		return fallback
	}
	return max(64, min(int(props.TPMProperty[0].Value), ceiling))
}

// trimDER drops bytes after a leading DER element (some TPMs pad the EK
// certificate NV index); anything that does not parse is returned as is.
func trimDER(b []byte) []byte {
	var v asn1.RawValue
	rest, err := asn1.Unmarshal(b, &v)
	if err != nil || len(rest) == 0 || !allZeroOrFF(rest) {
		return b
	}
	return bytes.Clone(b[:len(b)-len(rest)])
}

func allZeroOrFF(b []byte) bool {
	for _, c := range b {
		if c != 0 && c != 0xff {
			return false
		}
	}
	return true
}
