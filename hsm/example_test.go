package hsm_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log"

	"github.com/edgeprov/edgeprov/hsm"
)

// A device agent configured with one string: the token, the key, the module
// and where the PIN is.
func ExampleOpenURI() {
	ctx := context.Background()
	m, err := hsm.OpenURI(ctx, "pkcs11:token=dev-agent;object=device-key"+
		"?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/edgeprov/pin")
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	key, err := m.SignerFromURI(ctx, m.URI())
	if err != nil {
		log.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "device-0001"},
	}, key)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(csr) > 0)
}

// Moving a device's DPS symmetric key into the token once, then signing SAS
// tokens with it.
func ExampleModule_ImportHMACKey() {
	ctx := context.Background()
	m, err := hsm.OpenURI(ctx, "pkcs11:token=dev-agent?module-name=softhsm2&pin-source=env:EDGEPROV_PIN")
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	var deviceKey []byte // decoded from the enrollment's base64 primary key
	k, err := m.ImportHMACKey(ctx, "dps-symmetric-key", deviceKey)
	if err != nil {
		log.Fatal(err)
	}
	clear(deviceKey) // from now on the key lives only in the token
	sig, err := k.Sum([]byte("0ne00000A0A%2Fregistrations%2Fdevice-0001\n1767225600"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(sig) == sha256.Size)
}
