package enrollment

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
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
		if group {
			p.add("attestation.type", "TPM enrollment groups are not supported by DPS; enroll each TPM individually")
		} else if a.TPM == nil || a.TPM.EndorsementKey == "" {
			p.add("attestation.tpm.endorsementKey", "required for type tpm")
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
