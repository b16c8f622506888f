package enrollment

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/tpm/dpsauth"
)

// FieldError is a validation problem at a field path such as
// "enrollments[3].attestation.symmetricKey.primaryKey".
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// FieldPath is the path the error is about.
func (e *FieldError) FieldPath() string { return e.Path }

type problems struct {
	prefix string
	errs   []error
}

func (p *problems) add(field, format string, args ...any) {
	path := p.prefix
	if field != "" {
		path += "." + field
	}
	p.errs = append(p.errs, &FieldError{Path: path, Err: fmt.Errorf(format, args...)})
}

// Validate checks an individual enrollment and decodes its keys. path prefixes
// every error (e.g. "enrollments[2]"). It returns every problem, joined.
func (e *Individual) Validate(path string) error {
	p := &problems{prefix: path}
	if err := dpsapi.ValidateRegistrationID(e.RegistrationID); err != nil {
		p.add("registrationId", "%v", err)
	}
	if e.DeviceID != "" {
		if err := validateDeviceID(e.DeviceID); err != nil {
			p.add("deviceId", "%v", err)
		}
	}
	e.Common.validate(p, false)
	return errors.Join(p.errs...)
}

// Validate checks an enrollment group and decodes its keys.
func (g *Group) Validate(path string) error {
	p := &problems{prefix: path}
	if err := dpsapi.ValidateRegistrationID(g.EnrollmentGroupID); err != nil {
		p.add("enrollmentGroupId", "%v", strings.Replace(err.Error(), "registration ID", "enrollment group ID", 1))
	}
	for i, pre := range g.RegistrationIDPrefixes {
		if pre == "" || strings.ContainsFunc(pre, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._:", r))
		}) {
			p.add(fmt.Sprintf("registrationIdPrefixes[%d]", i), "%q is not a registration ID prefix", pre)
		}
	}
	g.Common.validate(p, true)
	if g.Attestation.Type == AttestationTPM && len(g.RegistrationIDPrefixes) > 0 {
		p.add("registrationIdPrefixes", "a TPM group's registration IDs are derived from each device's EK, so prefixes cannot match them")
	}
	return errors.Join(p.errs...)
}

func (c *Common) validate(p *problems, group bool) {
	a := &c.Attestation
	for _, m := range []struct {
		name  string
		given bool
	}{{AttestationSymmetricKey, a.SymmetricKey != nil}, {AttestationX509, a.X509 != nil}, {AttestationTPM, a.TPM != nil}} {
		if m.given && a.Type != m.name && a.Type != "" {
			p.add("attestation."+m.name, "not used with attestation type %s", a.Type)
		}
	}
	switch a.Type {
	case AttestationSymmetricKey:
		if a.SymmetricKey == nil {
			p.add("attestation.symmetricKey", "required for type symmetricKey")
			break
		}
		a.SymmetricKey.decode(p)
	case AttestationX509:
		if a.X509 == nil {
			p.add("attestation.x509", "required for type x509")
			break
		}
		a.X509.validate(p, group)
	case AttestationTPM:
		switch {
		case a.TPM == nil && group:
			p.add("attestation.tpm.ekCACertificates", "required for a TPM group (an edgeprov extension: DPS has no TPM groups)")
		case a.TPM == nil:
			p.add("attestation.tpm.endorsementKey", "required for type tpm")
		case group:
			a.TPM.decodeGroup(p)
		default:
			a.TPM.decodeIndividual(p)
		}
	case "":
		p.add("attestation.type", "required (symmetricKey, x509 or tpm)")
	default:
		p.add("attestation.type", "unknown attestation type %q (symmetricKey, x509 or tpm)", a.Type)
	}
	if c.ClientCertificateIssuancePolicy != nil {
		c.ClientCertificateIssuancePolicy.validate(p)
	}
	switch c.ProvisioningStatus {
	case "", StatusEnabled, StatusDisabled:
	default:
		p.add("provisioningStatus", "must be enabled or disabled, not %q", c.ProvisioningStatus)
	}
	switch c.AllocationPolicy {
	case "", AllocationHashed, AllocationGeoLatency, AllocationStatic:
	case AllocationCustom:
		if c.CustomAllocationDefinition == nil {
			p.add("customAllocationDefinition", "required when allocationPolicy is custom")
		}
	default:
		p.add("allocationPolicy", "unknown allocation policy %q (hashed, geoLatency, static or custom)", c.AllocationPolicy)
	}
	if c.AllocationPolicy == AllocationStatic && len(c.IoTHubs) != 1 && c.IoTHubHostName == "" {
		p.add("iotHubs", "static allocation needs exactly one hub")
	}
	if d := c.CustomAllocationDefinition; d != nil {
		u, err := url.Parse(d.WebhookURL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			p.add("customAllocationDefinition.webhookUrl", "must be an https URL")
		}
		if d.APIVersion == "" {
			p.add("customAllocationDefinition.apiVersion", "required")
		}
	}
	seen := map[string]bool{}
	for i, h := range c.IoTHubs {
		if h == "" {
			p.add(fmt.Sprintf("iotHubs[%d]", i), "empty hub host name")
		}
		if seen[strings.ToLower(h)] {
			p.add(fmt.Sprintf("iotHubs[%d]", i), "hub %q listed twice", h)
		}
		seen[strings.ToLower(h)] = true
	}
}

func (s *SymmetricKeyAttestation) decode(p *problems) {
	if s.PrimaryKey == "" && s.SecondaryKey == "" {
		// A keyFile that gave no key was reported by the catalog, which reads it.
		if s.KeyFile == "" {
			p.add("attestation.symmetricKey", "primaryKey, secondaryKey or keyFile is required")
		}
		return
	}
	var err error
	if s.PrimaryKey != "" {
		if s.primary, err = sas.DecodeKey(s.PrimaryKey); err != nil {
			p.add("attestation.symmetricKey.primaryKey", "%v", err)
		}
	}
	if s.SecondaryKey != "" {
		if s.secondary, err = sas.DecodeKey(s.SecondaryKey); err != nil {
			p.add("attestation.symmetricKey.secondaryKey", "%v", err)
		}
	}
}

// decodeIndividual parses the enrolled EK and the pinned SRK, if any.
func (t *TPMAttestation) decodeIndividual(p *problems) {
	t.ek, t.srk = nil, nil
	if len(t.EKCACertificates) > 0 || len(t.EKCACertificateFiles) > 0 {
		p.add("attestation.tpm.ekCACertificates", "only enrollment groups trust EK CA certificates; an individual enrollment names its EK")
	}
	if t.EndorsementKey == "" {
		p.add("attestation.tpm.endorsementKey", "required for type tpm")
	} else if raw, err := base64.StdEncoding.DecodeString(t.EndorsementKey); err != nil {
		p.add("attestation.tpm.endorsementKey", "not valid base64: %v", err)
	} else if t.ek, err = dpsauth.ParseEK(raw); err != nil {
		p.add("attestation.tpm.endorsementKey", "%v", err)
	}
	if t.StorageRootKey != "" {
		if raw, err := base64.StdEncoding.DecodeString(t.StorageRootKey); err != nil {
			p.add("attestation.tpm.storageRootKey", "not valid base64: %v", err)
		} else if t.srk, err = dpsauth.ParseSRK(raw); err != nil {
			p.add("attestation.tpm.storageRootKey", "%v", err)
		}
	}
}

// decodeGroup parses the trusted EK CA certificates of a TPM group.
func (t *TPMAttestation) decodeGroup(p *problems) {
	t.cas, t.pool = nil, nil
	if t.EndorsementKey != "" || t.StorageRootKey != "" {
		p.add("attestation.tpm", "a TPM group trusts EK CA certificates (ekCACertificates), not one device's EK or SRK")
	}
	if len(t.EKCACertificates) == 0 {
		// Files that gave nothing were reported by the catalog, which reads them.
		if len(t.EKCACertificateFiles) == 0 {
			p.add("attestation.tpm.ekCACertificates", "required for a TPM group (an edgeprov extension: DPS has no TPM groups)")
		}
		return
	}
	pool := x509.NewCertPool()
	var cas []*x509.Certificate
	for i, text := range t.EKCACertificates {
		field := fmt.Sprintf("attestation.tpm.ekCACertificates[%d]", i)
		certs, err := ParseCACertificates([]byte(text))
		if err != nil {
			p.add(field, "%v", err)
			continue
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
		cas = append(cas, certs...)
	}
	if len(cas) > 0 {
		t.cas, t.pool = cas, pool
	}
}

// ParseCACertificates reads PEM CERTIFICATE blocks, each a CA certificate.
func ParseCACertificates(text []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, text = pem.Decode(text)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q is not a CERTIFICATE", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		if !IsCA(c) {
			return nil, fmt.Errorf("certificate %q is not a CA certificate (basicConstraints CA:TRUE and keyCertSign are needed)", c.Subject)
		}
		out = append(out, c)
	}
	if len(bytes.TrimSpace(text)) > 0 {
		return nil, errors.New("text after the last PEM certificate")
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

// validateDeviceID applies IoT Hub's device ID rules: up to 128 ASCII
// alphanumerics and - . + % _ # * ? ! ( ) , : = @ $ '.
func validateDeviceID(id string) error {
	if len(id) > 128 {
		return fmt.Errorf("device ID is %d characters, the limit is 128", len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-.+%_#*?!(),:=@$'", c) >= 0 {
			continue
		}
		return fmt.Errorf("device ID character %q is not allowed", c)
	}
	return nil
}
