package registration_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/registration"
	rt "github.com/edgeprov/edgeprov/daemon/registration/registrationtest"
	"github.com/edgeprov/edgeprov/testenv/swtpm"
	"github.com/edgeprov/edgeprov/tpm"
	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

// TestTPM2ToolsDevice is a TPM device that is not edgeprov's: tpm2-tools
// against swtpm import the blobs the registration service answers (the
// challenge, then the hub key) and compute the answer's signature, the same
// command sequence as the Azure C SDK and aziot-tpmd. The hub key they end
// up with must be the one the service stored.
func TestTPM2ToolsDevice(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"tpm2_startauthsession", "tpm2_policysecret", "tpm2_activatecredential",
		"tpm2_flushcontext", "tpm2_import", "tpm2_load", "tpm2_hmac"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (%v); install it with `apt-get install tpm2-tools`", tool, err)
		}
	}
	inst := swtpm.Start(t)
	// Create and persist EK and SRK (what tpm2_createek/tpm2_createprimary +
	// tpm2_evictcontrol would do), then let the tools have the TPM.
	d, err := tpm.Open(inst.Path())
	if err != nil {
		t.Fatal(err)
	}
	ek, err := d.EndorsementKey()
	if err != nil {
		t.Fatal(err)
	}
	srk, err := d.StorageRootKey()
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	regID := dpsauth.RegistrationID(ek)
	dev := &tpmDevice{ek: ek, srk: srk, regID: regID}
	f := rt.NewWith(t, rt.Options{Individuals: []*enrollment.Individual{dev.individual(t, regID)}})
	body := &dpsapi.TPMAttestation{EndorsementKey: b64(ek), StorageRootKey: b64(srk)}

	blob, err := dev.challenge(f, body)
	if err != nil {
		t.Fatal(err)
	}
	// The answer, signed by tpm2_hmac with the imported challenge key, sr
	// URL-encoded as the C SDK does.
	sr := url.QueryEscape(sas.DeviceResource(rt.Scope, regID))
	se := strconv.FormatInt(f.Now.Load().Add(time.Hour).Unix(), 10)
	mac := toolsImportAndHMAC(t, inst, blob, []byte(sr+"\n"+se))
	tok := sas.Prefix + "sr=" + sr + "&sig=" + url.QueryEscape(base64.StdEncoding.EncodeToString(mac)) + "&se=" + se + "&skn=registration"
	op, err := f.Service.Register(ctx, registration.RegisterRequest{Scope: rt.Scope, RegistrationID: regID, Authorization: tok,
		Body: dpsapi.DeviceRegistration{RegistrationID: regID, TPM: body}})
	if err != nil {
		t.Fatalf("the service refused the tpm2-tools answer: %v", err)
	}
	final, err := f.Service.OperationStatus(ctx, registration.PollRequest{Scope: rt.Scope, RegistrationID: regID, OperationID: op.OperationID, Authorization: tok})
	if err != nil || final.RegistrationState.TPM == nil {
		t.Fatalf("poll = %+v, %v", final, err)
	}
	hubBlob, err := base64.StdEncoding.DecodeString(final.RegistrationState.TPM.AuthenticationKey)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("hub-a.test/devices/" + regID + "\n1795646830")
	got := toolsImportAndHMAC(t, inst, hubBlob, data)
	_, _, hubKey := record(t, f, regID)
	m := hmac.New(sha256.New, hubKey)
	m.Write(data)
	if !hmac.Equal(got, m.Sum(nil)) {
		t.Fatal("tpm2-tools' HMAC with the imported hub key differs from the service's stored hub key")
	}
}

// toolsImportAndHMAC imports an authenticationKey blob with tpm2-tools
// (ActivateCredential under a PolicySecret(endorsement) session with the SRK
// and EK at their persistent handles, Import, Load) and returns tpm2_hmac of
// data with it. Transient objects are flushed afterwards: swtpm has no
// resource manager.
func toolsImportAndHMAC(t *testing.T, inst *swtpm.Instance, blob, data []byte) []byte {
	t.Helper()
	ak, err := dpsauth.ParseAuthenticationKey(blob)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tpm2b := func(b []byte) []byte { return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...) }
	// tpm2_makecredential's format: magic, version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
	cred := binary.BigEndian.AppendUint32(nil, 0xBADCC0DE)
	cred = binary.BigEndian.AppendUint32(cred, 1)
	cred = append(append(cred, tpm2b(ak.IDObject)...), tpm2b(ak.EncryptedSecret)...)
	for name, content := range map[string][]byte{"cred.blob": cred, "dup.priv": tpm2b(ak.Duplicate),
		"seed.dat": tpm2b(ak.InSymSeed), "key.pub": tpm2b(ak.Public), "data.bin": data} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+inst.TCTI())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("tpm2_startauthsession", "--policy-session", "-S", "session.ctx")
	run("tpm2_policysecret", "-S", "session.ctx", "-c", "e")
	run("tpm2_activatecredential", "-c", "0x81000001", "-C", "0x81010001", "-i", "cred.blob", "-o", "inner.key", "-P", "session:session.ctx")
	run("tpm2_flushcontext", "session.ctx")
	run("tpm2_import", "-C", "0x81000001", "-G", "hmac", "-i", "dup.priv", "-s", "seed.dat", "-u", "key.pub", "-k", "inner.key", "-r", "key.priv")
	run("tpm2_load", "-C", "0x81000001", "-u", "key.pub", "-r", "key.priv", "-c", "key.ctx")
	run("tpm2_hmac", "-c", "key.ctx", "-g", "sha256", "-o", "mac.bin", "data.bin")
	run("tpm2_flushcontext", "-t")
	mac, err := os.ReadFile(filepath.Join(dir, "mac.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if len(mac) != sha256.Size || bytes.Equal(mac, make([]byte, sha256.Size)) {
		t.Fatalf("tpm2_hmac wrote %x", mac)
	}
	return mac
}
