package tpm

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

// hmacChunk is the most data sent in one TPM2_HMAC or TPM2_SequenceUpdate:
// TPM_PT_INPUT_BUFFER is at least 1024 on PC Client TPMs and on swtpm.
const hmacChunk = 1024

// ImportAuthenticationKey imports the HMAC key carried by an
// authenticationKey blob (protocol.md §5.4.3, built by
// dpsauth.BuildAuthenticationKey) and persists it at handle, replacing any
// object already there (use AuthKeyHandle unless you have a reason not to):
//
//  1. ActivateCredential with the SRK as activated object and the EK as
//     key, authorized by a policy session with PolicySecret(endorsement),
//     recovers the 16-byte inner wrapper key;
//  2. Import under the SRK with that key (AES-128-CFB inner wrapper);
//  3. Load, evict the object persisted at handle if any, persist the new one.
//
// The EK and SRK must exist (call EndorsementKey and StorageRootKey first,
// which also is what the service needs from the device). A blob made for
// another TPM fails in step 1 and a tampered one in step 1 or 2; either
// way the key persisted at handle before is left alone. handle must be an
// owner persistent handle (0x81000000–0x817fffff) other than the SRK's
// and EK's.
func (d *Device) ImportAuthenticationKey(blob []byte, handle tpm2.TPMHandle) error {
	if err := checkAuthKeyHandle(handle); err != nil {
		return err
	}
	ak, err := dpsauth.ParseAuthenticationKey(blob)
	if err != nil {
		return fmt.Errorf("tpm: import authentication key: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()

	ek, err := d.readPublic(EKHandle, "EK")
	if err != nil {
		return fmt.Errorf("tpm: import authentication key: %w", err)
	}
	srk, err := d.readPublic(SRKHandle, "SRK")
	if err != nil {
		return fmt.Errorf("tpm: import authentication key: %w", err)
	}
	srkAuth := tpm2.AuthHandle{Handle: SRKHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)}

	innerKey, err := d.activateCredential(ak, srkAuth, tpm2.NamedHandle{Handle: EKHandle, Name: ek.Name})
	if err != nil {
		return fmt.Errorf("tpm: import authentication key: %w", err)
	}
	defer clear(innerKey)

	public := tpm2.BytesAs2B[tpm2.TPMTPublic](ak.Public)
	imp, err := tpm2.Import{
		ParentHandle:  srkAuth,
		EncryptionKey: tpm2.TPM2BData{Buffer: innerKey},
		ObjectPublic:  public,
		Duplicate:     tpm2.TPM2BPrivate{Buffer: ak.Duplicate},
		InSymSeed:     tpm2.TPM2BEncryptedSecret{Buffer: ak.InSymSeed},
		Symmetric: tpm2.TPMTSymDef{
			Algorithm: tpm2.TPMAlgAES,
			KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
			Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
		},
	}.Execute(d.tpm)
	if err != nil {
		return fmt.Errorf("tpm: import authentication key: Import: %w", err)
	}
	ld, err := tpm2.Load{
		ParentHandle: srkAuth,
		InPrivate:    imp.OutPrivate,
		InPublic:     public,
	}.Execute(d.tpm)
	if err != nil {
		return fmt.Errorf("tpm: import authentication key: Load: %w", err)
	}
	defer d.flush(ld.ObjectHandle, "imported key")

	if err := d.evict(handle); err != nil {
		return fmt.Errorf("tpm: import authentication key: %w", err)
	}
	if _, err := (tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: ld.ObjectHandle, Name: ld.Name},
		PersistentHandle: handle,
	}).Execute(d.tpm); err != nil {
		return fmt.Errorf("tpm: import authentication key: persist at 0x%08x: %w", uint32(handle), err)
	}
	return nil
}

// activateCredential runs TPM2_ActivateCredential(activateHandle=SRK,
// keyHandle=EK) in a policy session satisfying the EK's
// PolicySecret(TPM_RH_ENDORSEMENT) policy and returns the credential. The
// session is flushed whatever happens.
func (d *Device) activateCredential(ak *dpsauth.AuthenticationKey, srk tpm2.AuthHandle, ek tpm2.NamedHandle) (_ []byte, err error) {
	sess, closeSession, err := tpm2.PolicySession(d.tpm, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		return nil, fmt.Errorf("start EK policy session: %w", err)
	}
	defer func() {
		if cerr := closeSession(); cerr != nil {
			d.log.Warn("tpm: flushing the EK policy session failed", "err", cerr)
		}
	}()
	if _, err := (tpm2.PolicySecret{
		AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		PolicySession: sess.Handle(),
		NonceTPM:      sess.NonceTPM(),
	}).Execute(d.tpm); err != nil {
		return nil, fmt.Errorf("PolicySecret(endorsement): %w", err)
	}
	ac, err := tpm2.ActivateCredential{
		ActivateHandle: srk,
		KeyHandle:      tpm2.AuthHandle{Handle: ek.Handle, Name: ek.Name, Auth: sess},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: ak.IDObject},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: ak.EncryptedSecret},
	}.Execute(d.tpm)
	if err != nil {
		return nil, fmt.Errorf("ActivateCredential (blob made for another TPM, or tampered): %w", err)
	}
	if n := len(ac.CertInfo.Buffer); n != 16 {
		clear(ac.CertInfo.Buffer)
		return nil, fmt.Errorf("ActivateCredential: inner key is %d bytes, want 16 (AES-128)", n)
	}
	return ac.CertInfo.Buffer, nil
}

// evict removes the persistent object at handle, if there is one.
func (d *Device) evict(handle tpm2.TPMHandle) error {
	rp, err := tpm2.ReadPublic{ObjectHandle: handle}.Execute(d.tpm)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read object at 0x%08x: %w", uint32(handle), err)
	}
	d.log.Debug("tpm: evicting the persisted key", "handle", fmt.Sprintf("0x%08x", uint32(handle)))
	if _, err := (tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: handle, Name: rp.Name},
		PersistentHandle: handle,
	}).Execute(d.tpm); err != nil {
		return fmt.Errorf("evict object at 0x%08x: %w", uint32(handle), err)
	}
	return nil
}

func (d *Device) readPublic(handle tpm2.TPMHandle, what string) (*tpm2.ReadPublicResponse, error) {
	rp, err := tpm2.ReadPublic{ObjectHandle: handle}.Execute(d.tpm)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, fmt.Errorf("no %s at 0x%08x (call EndorsementKey and StorageRootKey first): %w", what, uint32(handle), err)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s at 0x%08x: %w", what, uint32(handle), err)
	}
	return rp, nil
}

func checkAuthKeyHandle(h tpm2.TPMHandle) error {
	if h < 0x81000000 || h > 0x817fffff || h == SRKHandle || h == EKHandle {
		return fmt.Errorf("tpm: 0x%08x is not an owner persistent handle for the authentication key (0x81000000–0x817fffff, not the SRK or EK)", uint32(h))
	}
	return nil
}

// HMAC returns HMAC-SHA256(key, data) computed by the TPM with the HMAC key
// persisted at handle (see ImportAuthenticationKey). Data longer than
// 1024 bytes goes through an HMAC sequence.
func (d *Device) HMAC(handle tpm2.TPMHandle, data []byte) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rp, err := tpm2.ReadPublic{ObjectHandle: handle}.Execute(d.tpm)
	if err != nil {
		return nil, fmt.Errorf("tpm: HMAC: read key at 0x%08x: %w", uint32(handle), err)
	}
	key := tpm2.AuthHandle{Handle: handle, Name: rp.Name, Auth: tpm2.PasswordAuth(nil)}
	if len(data) <= hmacChunk {
		r, err := tpm2.Hmac{
			Handle:  key,
			Buffer:  tpm2.TPM2BMaxBuffer{Buffer: data},
			HashAlg: tpm2.TPMAlgSHA256,
		}.Execute(d.tpm)
		if err != nil {
			return nil, fmt.Errorf("tpm: HMAC with key at 0x%08x: %w", uint32(handle), err)
		}
		return r.OutHMAC.Buffer, nil
	}
	mac, err := d.hmacSequence(key, data)
	if err != nil {
		return nil, fmt.Errorf("tpm: HMAC with key at 0x%08x: %w", uint32(handle), err)
	}
	return mac, nil
}

// hmacSequence computes the HMAC with HMAC_Start, SequenceUpdate and
// SequenceComplete; the sequence object is flushed if anything fails.
func (d *Device) hmacSequence(key tpm2.AuthHandle, data []byte) (_ []byte, err error) {
	start, err := tpm2.HmacStart{Handle: key, HashAlg: tpm2.TPMAlgSHA256}.Execute(d.tpm)
	if err != nil {
		return nil, fmt.Errorf("HMAC_Start: %w", err)
	}
	seq := tpm2.AuthHandle{Handle: start.SequenceHandle, Auth: tpm2.PasswordAuth(nil)}
	defer func() {
		if err != nil { // SequenceComplete flushes the sequence on success
			d.flush(start.SequenceHandle, "HMAC sequence")
		}
	}()
	for len(data) > hmacChunk {
		if _, err := (tpm2.SequenceUpdate{
			SequenceHandle: seq,
			Buffer:         tpm2.TPM2BMaxBuffer{Buffer: data[:hmacChunk]},
		}).Execute(d.tpm); err != nil {
			return nil, fmt.Errorf("SequenceUpdate: %w", err)
		}
		data = data[hmacChunk:]
	}
	r, err := tpm2.SequenceComplete{
		SequenceHandle: seq,
		Buffer:         tpm2.TPM2BMaxBuffer{Buffer: data},
		Hierarchy:      tpm2.TPMRHNull,
	}.Execute(d.tpm)
	if err != nil {
		return nil, fmt.Errorf("SequenceComplete: %w", err)
	}
	return r.Result.Buffer, nil
}
