// Package catalog reads the YAML enrollment catalog: DPS's field names, strict
// parsing, every error with file, line and field, secrets inline or in key files.
// Source serves the current catalog to the registration service.
package catalog

import (
	"errors"
	"fmt"
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
}

type fileYAML struct {
	Version          int                      `yaml:"version"`
	Enrollments      []*enrollment.Individual `yaml:"enrollments"`
	EnrollmentGroups []*enrollment.Group      `yaml:"enrollmentGroups"`
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
	seen := map[string]int{}
	for i, e := range y.Enrollments {
		p := fmt.Sprintf("enrollments[%d]", i)
		if e == nil {
			errs = append(errs, strictyaml.Errorf(p, "empty entry"))
			continue
		}
		errs = append(errs, readKeyFile(dir, p, &e.Common)...)
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
		errs = append(errs, readKeyFile(dir, p, &g.Common)...)
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
	f := &File{Path: path, Individuals: nonNil(y.Enrollments), Groups: nonNil(y.EnrollmentGroups)}
	if f.Set, err = enrollment.NewSet(f.Individuals, f.Groups); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// readKeyFile fills primaryKey/secondaryKey from keyFile: the primary key on the
// first line, the secondary (optional) on the second.
func readKeyFile(dir, path string, c *enrollment.Common) []error {
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

// Set implements registration.Enrollments.
func (s *Source) Set(scope string) *enrollment.Set {
	f := s.cur.Load()
	if f == nil || !strings.EqualFold(scope, s.scope) {
		return nil
	}
	return f.Set
}

// Swap installs a new catalog.
func (s *Source) Swap(f *File) { s.cur.Store(f) }

// Current returns the catalog being served.
func (s *Source) Current() *File { return s.cur.Load() }
