package tpm_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/testenv/swtpm"
	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

// TestTPM2ToolsImport imports a blob from BuildAuthenticationKey with
// tpm2-tools instead of this package, as an independent check of the blob
// and of the device-side recipe: ActivateCredential under a policy session
// with PolicySecret(endorsement), Import with the inner key, Load, HMAC.
func TestTPM2ToolsImport(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"tpm2_startauthsession", "tpm2_policysecret", "tpm2_activatecredential",
		"tpm2_flushcontext", "tpm2_import", "tpm2_load", "tpm2_hmac"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (%v); install it with `apt-get install tpm2-tools`", tool, err)
		}
	}
	inst := swtpm.Start(t)
	d := openDevice(t, inst)
	ek, srk := deviceKeys(t, d) // creates and persists EK and SRK
	// swtpm serves one connection at a time: let the tools in.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	key, blob := newBlob(t, ek, srk, 32)
	ak, err := dpsauth.ParseAuthenticationKey(blob)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	file := func(name string) string { return filepath.Join(dir, name) }
	tpm2b := func(b []byte) []byte { return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...) }
	// tpm2_makecredential's output format, read by tpm2_activatecredential -i:
	// UINT32 magic 0xBADCC0DE ‖ UINT32 version 1 ‖ TPM2B_ID_OBJECT ‖ TPM2B_ENCRYPTED_SECRET.
	cred := binary.BigEndian.AppendUint32(nil, 0xBADCC0DE)
	cred = binary.BigEndian.AppendUint32(cred, 1)
	cred = append(cred, tpm2b(ak.IDObject)...)
	cred = append(cred, tpm2b(ak.EncryptedSecret)...)
	// The other inputs are plain marshalled TPM2B structures.
	data := []byte("0ne00abcdef%2fregistrations%2fmy-device-01\n1795646830")
	for name, content := range map[string][]byte{
		"cred.blob": cred,
		"dup.priv":  tpm2b(ak.Duplicate),
		"seed.dat":  tpm2b(ak.InSymSeed),
		"key.pub":   tpm2b(ak.Public),
		"data.txt":  data,
	} {
		if err := os.WriteFile(file(name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+inst.TCTI())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("tpm2_startauthsession", "--policy-session", "-S", "session.ctx")
	run("tpm2_policysecret", "-S", "session.ctx", "-c", "e")
	run("tpm2_activatecredential", "-c", "0x81000001", "-C", "0x81010001",
		"-i", "cred.blob", "-o", "inner.key", "-P", "session:session.ctx")
	run("tpm2_flushcontext", "session.ctx")
	run("tpm2_import", "-C", "0x81000001", "-G", "hmac", "-i", "dup.priv", "-s", "seed.dat",
		"-u", "key.pub", "-k", "inner.key", "-r", "key.priv")
	run("tpm2_load", "-C", "0x81000001", "-u", "key.pub", "-r", "key.priv", "-c", "key.ctx")
	run("tpm2_hmac", "-c", "key.ctx", "-g", "sha256", "-o", "mac.bin", "data.txt")

	inner, err := os.ReadFile(file("inner.key"))
	if err != nil {
		t.Fatal(err)
	}
	if len(inner) != 16 {
		t.Errorf("activated inner key is %d bytes, want 16", len(inner))
	}
	mac, err := os.ReadFile(file("mac.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if want := softHMAC(key, data); !bytes.Equal(mac, want) {
		t.Fatalf("tpm2_hmac = %x, want HMAC-SHA256 with the service's key %x", mac, want)
	}
	// No assertNoLeaks here: without a resource manager, tpm2_load and
	// tpm2_hmac leave their transient objects loaded in swtpm.
}
