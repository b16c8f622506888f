package https_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/endpoint/https"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	rt "github.com/edgeprov/edgeprov/daemon/registration/registrationtest"
	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

// TestTPMChallenge checks the wire shape of the TPM challenge (protocol.md
// §5.4.1): 401 with authenticationKey and keyName (Node, C SDK, aziot), the
// usual error fields, no status; and that EKs nobody enrolled get the plain
// 401 of any unknown device.
func TestTPMChallenge(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile("../../../tpm/dpsauth/testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(b)
	}
	ek, srk := read("swtpm-ek.bin"), read("swtpm-srk.bin")
	f := rt.NewWith(t, rt.Options{Individuals: []*enrollment.Individual{{RegistrationID: "tpm-http-1", Common: enrollment.Common{
		Attestation: enrollment.Attestation{Type: enrollment.AttestationTPM, TPM: &enrollment.TPMAttestation{EndorsementKey: ek}}}}}})
	srv := httptest.NewServer(https.NewHandler(f.Service, 1, nil))
	t.Cleanup(srv.Close)
	e := &env{f: f, srv: srv}
	// No registrationId in the body: the same body serves two paths.
	body := fmt.Appendf(nil, `{"tpm":{"endorsementKey":%q,"storageRootKey":%q}}`, ek, srk)

	r := e.do(t, "PUT", regPath("tpm-http-1"), "", jsonCT, body)
	if r.status != 401 || r.header.Get("Content-Type") != jsonCT || r.header.Get("x-ms-error-code") != "401002" {
		t.Fatalf("challenge: %d %v %s", r.status, r.header, r.body)
	}
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["status"]; ok {
		t.Errorf("challenge body has a status (the C SDK wants none but unassigned): %s", r.body)
	}
	if m["keyName"] != "registration" || m["errorCode"] != float64(dpsapi.CodeUnauthorized) || m["message"] == "" || m["trackingId"] == "" {
		t.Errorf("challenge body: %s", r.body)
	}
	blob, err := base64.StdEncoding.DecodeString(fmt.Sprint(m["authenticationKey"]))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dpsauth.ParseAuthenticationKey(blob); err != nil || len(blob) != 766 {
		t.Fatalf("authenticationKey is %d bytes: %v", len(blob), err)
	}

	// The same EK under an unknown registration ID, and a bad signature for a
	// known device: the same answer, without a challenge.
	unknown := e.do(t, "PUT", regPath("tpm-stranger"), "", jsonCT, body)
	badSig := e.do(t, "PUT", regPath("dev-individual"), f.Token("dev-individual", rt.OtherKey), jsonCT, nil)
	if unknown.status != 401 || stripIDs(unknown) != stripIDs(badSig) {
		t.Fatalf("unknown TPM: %s\nbad signature: %s", stripIDs(unknown), stripIDs(badSig))
	}

	// Malformed keys are a bad request whatever is enrolled.
	bad := e.do(t, "PUT", regPath("tpm-http-1"), "", jsonCT, []byte(`{"tpm":{"endorsementKey":"AToAAQ==","storageRootKey":"AAA="}}`))
	if bad.status != 400 || bad.header.Get("x-ms-error-code") != "400007" || !json.Valid(bad.body) {
		t.Fatalf("malformed EK: %d %v %s", bad.status, bad.header, bad.body)
	}
}

func stripIDs(r resp) string {
	var m map[string]any
	json.Unmarshal(r.body, &m)
	delete(m, "trackingId")
	delete(m, "timestampUtc")
	out, _ := json.Marshal(m)
	return fmt.Sprint(r.status, string(out))
}
