// Package catalog reads the YAML enrollment catalog: DPS's field names, strict
// parsing, every error with file, line and field, secrets inline or in key files.
// Source serves the current catalog to the registration service.
package catalog

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/strictyaml"
)

// Version is the catalog format this build reads.
const Version = 1

// File is a parsed, validated catalog.
type File struct {
	Path        string
	Individuals []*enrollment.Individual `yaml:"-"`
	Groups      []*enrollment.Group      `yaml:"-"`
	Set         *enrollment.Set          `yaml:"-"`
	// CertificateAuthorities are CA certificates that groups' caReferences
	// may name. Declaring one here trusts it: whoever controls the catalog
	// file needs no proof of possession.
	CertificateAuthorities []*CertificateAuthority `yaml:"-"`
	// KeyFiles are the key files the catalog references (resolved paths), so
	// that a watcher can follow them too.
	KeyFiles []string `yaml:"-"`
}

// CertificateAuthority is a CA certificate declared in the catalog.
type CertificateAuthority struct {
	Name string `json:"name" yaml:"name"`
	// Certificate is PEM or base64 DER; CertificateFile a PEM file relative
	// to the catalog.
	Certificate     string `json:"certificate,omitempty" yaml:"certificate,omitempty"`
	CertificateFile string `json:"-" yaml:"certificateFile,omitempty"`

	Cert *x509.Certificate `json:"-" yaml:"-"`
}

type fileYAML struct {
	Version                int                      `yaml:"version"`
	CertificateAuthorities []*CertificateAuthority  `yaml:"certificateAuthorities"`
	Enrollments            []*enrollment.Individual `yaml:"enrollments"`
	EnrollmentGroups       []*enrollment.Group      `yaml:"enrollmentGroups"`
}

// Load reads and validates the catalog at path.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read catalog: %w", err)
	}
	return Parse(path, data)
}

// Parse validates catalog bytes; path places errors and resolves key files.
func Parse(path string, data []byte) (*File, error) {
	var y fileYAML
	doc, err := strictyaml.Decode(path, data, &y, Version)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	var errs []error
	var keyFiles []string
	seenCA := map[string]int{}
	for i, ca := range y.CertificateAuthorities {
		p := fmt.Sprintf("certificateAuthorities[%d]", i)
		if ca == nil {
			errs = append(errs, strictyaml.Errorf(p, "empty entry"))
			continue
		}
		errs = append(errs, ca.load(dir, p)...)
		k := strings.ToLower(ca.Name)
		if j, dup := seenCA[k]; dup && k != "" {
			errs = append(errs, strictyaml.Errorf(p+".name", "duplicate CA name %q (also certificateAuthorities[%d], line %d)", ca.Name, j, doc.Line(fmt.Sprintf("certificateAuthorities[%d]", j))))
		}
		seenCA[k] = i
	}
	seen := map[string]int{}
	for i, e := range y.Enrollments {
		p := fmt.Sprintf("enrollments[%d]", i)
		if e == nil {
			errs = append(errs, strictyaml.Errorf(p, "empty entry"))
			continue
		}
		errs = append(errs, readKeyFile(dir, p, &e.Common, &keyFiles)...)
		errs = append(errs, readCertFiles(dir, p, &e.Common)...)
		errs = append(errs, readEKCAFiles(dir, p, &e.Common)...)
		errs = append(errs, e.Validate(p))
		k := dpsapi.NormalizeRegistrationID(e.RegistrationID)
		if j, dup := seen[k]; dup && k != "" {
			errs = append(errs, strictyaml.Errorf(p+".registrationId", "duplicate registration ID %q (also enrollments[%d], line %d)", e.RegistrationID, j, doc.Line(fmt.Sprintf("enrollments[%d]", j))))
		}
		seen[k] = i
	}
	seenG := map[string]int{}
	for i, g := range y.EnrollmentGroups {
		p := fmt.Sprintf("enrollmentGroups[%d]", i)
		if g == nil {
			errs = append(errs, strictyaml.Errorf(p, "empty entry"))
			continue
		}
		errs = append(errs, readKeyFile(dir, p, &g.Common, &keyFiles)...)
		errs = append(errs, readCertFiles(dir, p, &g.Common)...)
		errs = append(errs, readEKCAFiles(dir, p, &g.Common)...)
		errs = append(errs, g.Validate(p))
		k := strings.ToLower(g.EnrollmentGroupID)
		if j, dup := seenG[k]; dup && k != "" {
			errs = append(errs, strictyaml.Errorf(p+".enrollmentGroupId", "duplicate enrollment group ID %q (also enrollmentGroups[%d], line %d)", g.EnrollmentGroupID, j, doc.Line(fmt.Sprintf("enrollmentGroups[%d]", j))))
		}
		seenG[k] = i
	}
	if err := doc.Annotate(errors.Join(errs...)); err != nil {
		return nil, err
	}
	f := &File{Path: path, Individuals: nonNil(y.Enrollments), Groups: nonNil(y.EnrollmentGroups),
		CertificateAuthorities: nonNil(y.CertificateAuthorities), KeyFiles: keyFiles}
	if f.Set, err = enrollment.NewSet(f.Individuals, f.Groups); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// readKeyFile fills primaryKey/secondaryKey from keyFile: the primary key on the
// first line, the secondary (optional) on the second.
func readKeyFile(dir, path string, c *enrollment.Common, files *[]string) []error {
	sk := c.Attestation.SymmetricKey
	if sk == nil || sk.KeyFile == "" {
		return nil
	}
	p := path + ".attestation.symmetricKey.keyFile"
	if sk.PrimaryKey != "" || sk.SecondaryKey != "" {
		return []error{strictyaml.Errorf(p, "give keyFile or inline keys, not both")}
	}
	name := sk.KeyFile
	if !filepath.IsAbs(name) {
		name = filepath.Join(dir, name)
	}
	*files = append(*files, name)
	data, err := os.ReadFile(name)
	if err != nil {
		return []error{strictyaml.Errorf(p, "%v", err)}
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 || len(lines) > 2 {
		return []error{strictyaml.Errorf(p, "%s must hold one or two base64 keys, one per line", sk.KeyFile)}
	}
	sk.PrimaryKey = lines[0]
	if len(lines) == 2 {
		sk.SecondaryKey = lines[1]
	}
	return nil
}

// readCertFiles fills certificate from certificateFile in the X.509
// attestation's certificate entries.
func readCertFiles(dir, path string, c *enrollment.Common) []error {
	x := c.Attestation.X509
	if x == nil {
		return nil
	}
	var errs []error
	for _, set := range []struct {
		field string
		certs *enrollment.X509Certificates
	}{{"clientCertificates", x.ClientCertificates}, {"signingCertificates", x.SigningCertificates}} {
		if set.certs == nil {
			continue
		}
		for _, e := range []struct {
			name string
			c    *enrollment.X509CertificateWithInfo
		}{{"primary", set.certs.Primary}, {"secondary", set.certs.Secondary}} {
			if e.c == nil || e.c.CertificateFile == "" {
				continue
			}
			p := path + ".attestation.x509." + set.field + "." + e.name + ".certificateFile"
			if e.c.Certificate != "" || e.c.Thumbprint != "" {
				errs = append(errs, strictyaml.Errorf(p, "give certificateFile, certificate or thumbprint, only one"))
				continue
			}
			data, err := readPEMFile(dir, e.c.CertificateFile)
			if err != nil {
				errs = append(errs, strictyaml.Errorf(p, "%v", err))
				continue
			}
			e.c.Certificate = data
		}
	}
	return errs
}

// load reads and checks a catalog CA entry.
func (ca *CertificateAuthority) load(dir, path string) []error {
	var errs []error
	if err := enrollment.ValidateCAName(ca.Name); err != nil {
		errs = append(errs, strictyaml.Errorf(path+".name", "%v", err))
	}
	switch {
	case ca.CertificateFile != "" && ca.Certificate != "":
		return append(errs, strictyaml.Errorf(path+".certificateFile", "give certificateFile or certificate, not both"))
	case ca.CertificateFile != "":
		data, err := readPEMFile(dir, ca.CertificateFile)
		if err != nil {
			return append(errs, strictyaml.Errorf(path+".certificateFile", "%v", err))
		}
		ca.Certificate = data
	case ca.Certificate == "":
		return append(errs, strictyaml.Errorf(path+".certificate", "certificate or certificateFile is required"))
	}
	cert, err := enrollment.ParseCertificate(ca.Certificate)
	if err != nil {
		return append(errs, strictyaml.Errorf(path+".certificate", "%v", err))
	}
	if !enrollment.IsCA(cert) {
		return append(errs, strictyaml.Errorf(path+".certificate", "%q is not a CA certificate (basicConstraints CA:TRUE and keyCertSign are needed)", cert.Subject.String()))
	}
	ca.Cert = cert
	return errs
}

// readEKCAFiles adds the PEM files named by a TPM group's ekCACertificateFiles
// to its ekCACertificates, where Validate parses them.
func readEKCAFiles(dir, path string, c *enrollment.Common) []error {
	t := c.Attestation.TPM
	if t == nil {
		return nil
	}
	var errs []error
	for i, name := range t.EKCACertificateFiles {
		p := fmt.Sprintf("%s.attestation.tpm.ekCACertificateFiles[%d]", path, i)
		data, err := readPEMFile(dir, name)
		if err != nil {
			errs = append(errs, strictyaml.Errorf(p, "%v", err))
			continue
		}
		// Checked here so that an error names the file's line, not a list
		// entry the file became.
		if _, err := enrollment.ParseCACertificates([]byte(data)); err != nil {
			errs = append(errs, strictyaml.Errorf(p, "%s: %v", name, err))
			continue
		}
		t.EKCACertificates = append(t.EKCACertificates, data)
	}
	return errs
}

// maxPEMFile bounds a certificate file; one certificate is a few KB.
const maxPEMFile = 64 << 10

func readPEMFile(dir, name string) (string, error) {
	if !filepath.IsAbs(name) {
		name = filepath.Join(dir, name)
	}
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return "", err
	}
	if len(data) > maxPEMFile {
		return "", fmt.Errorf("%s is larger than %d bytes", name, maxPEMFile)
	}
	return string(data), nil
}

func nonNil[T any](in []*T) []*T {
	out := in[:0]
	for _, v := range in {
		if v != nil {
			out = append(out, v)
		}
	}
	return out
}

// Source serves the current catalog of one ID scope; Swap replaces it atomically.
type Source struct {
	scope string
	cur   atomic.Pointer[File]
}

// NewSource returns a Source for scope serving f (nil: no catalog).
func NewSource(scope string, f *File) *Source {
	s := &Source{scope: dpsapi.NormalizeIDScope(scope)}
	if f != nil {
		s.cur.Store(f)
	}
	return s
}

// Set returns the catalog's enrollments of scope, or nil.
func (s *Source) Set(scope string) *enrollment.Set {
	f := s.cur.Load()
	if f == nil || !strings.EqualFold(scope, s.scope) {
		return nil
	}
	return f.Set
}

// Lookup implements registration.Enrollments for a daemon whose only
// enrollments are the catalog's.
func (s *Source) Lookup(_ context.Context, scope, _ string) (enrollment.Lookup, error) {
	if set := s.Set(scope); set != nil {
		return set, nil
	}
	return nil, nil
}

// Swap installs a new catalog.
func (s *Source) Swap(f *File) { s.cur.Store(f) }

// Current returns the catalog being served.
func (s *Source) Current() *File { return s.cur.Load() }
