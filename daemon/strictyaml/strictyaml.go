// Package strictyaml decodes versioned YAML files strictly (unknown fields are
// errors) and reports every problem as "file:line: path: message".
package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxFileSize bounds what Decode reads.
const MaxFileSize = 256 << 20

// Pather is an error that names the field path it is about, such as
// "enrollments[2].attestation.type".
type Pather interface {
	error
	FieldPath() string
}

// FieldError is a Pather.
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string     { return e.Path + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error     { return e.Err }
func (e *FieldError) FieldPath() string { return e.Path }

// Errorf returns a FieldError.
func Errorf(path, format string, args ...any) error {
	return &FieldError{Path: path, Err: fmt.Errorf(format, args...)}
}

// Doc is a decoded document: its file name and node tree, to place errors.
type Doc struct {
	File string
	Root *yaml.Node
}

var lineRE = regexp.MustCompile(`line (\d+): (.*)`)

// Decode parses data into v. The document must be a mapping with a top-level
// "version" equal to wantVersion. Unknown fields are refused.
func Decode(file string, data []byte, v any, wantVersion int) (*Doc, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s: file is larger than %d bytes", file, MaxFileSize)
	}
	doc := &Doc{File: file}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, doc.syntaxErr(err, data)
	}
	if len(root.Content) == 0 {
		return nil, fmt.Errorf("%s: empty document (want a mapping with version: %d)", file, wantVersion)
	}
	doc.Root = root.Content[0]
	if doc.Root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: the document must be a mapping", file, doc.Root.Line)
	}
	ver := valueOf(doc.Root, "version")
	if ver == nil {
		return nil, fmt.Errorf("%s:%d: version: required (this edgeprov reads version %d)", file, doc.Root.Line, wantVersion)
	}
	if n, err := strconv.Atoi(ver.Value); err != nil || n != wantVersion {
		return nil, fmt.Errorf("%s:%d: version: %q is not supported (this edgeprov reads version %d)", file, ver.Line, ver.Value, wantVersion)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return nil, doc.yamlErr(err)
	}
	return doc, nil
}

func (d *Doc) yamlErr(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var errs []error
		for _, e := range te.Errors {
			errs = append(errs, d.lineMsg(e))
		}
		return errors.Join(errs...)
	}
	return d.lineMsg(strings.TrimPrefix(err.Error(), "yaml: "))
}

// parserProblems are yaml.v3's parser (not scanner) errors (parserc.go). It
// reports their line 0-based, one line too early, and none on the first line.
var parserProblems = []string{
	"did not find expected <stream-start>",
	"did not find expected <document start>",
	"did not find expected node content",
	"did not find expected '-' indicator",
	"did not find expected key",
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found undefined tag handle",
	"found duplicate %TAG directive",
}

// syntaxErr is yamlErr with the line of parser errors corrected; an error at the
// end of the stream stays on the last line.
func (d *Doc) syntaxErr(err error, data []byte) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line, text := 0, msg
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		text = m[2]
	}
	if !slices.Contains(parserProblems, text) {
		return d.yamlErr(err)
	}
	lines := bytes.Count(data, []byte("\n"))
	if len(data) > 0 && data[len(data)-1] != '\n' {
		lines++
	}
	return fmt.Errorf("%s:%d: %s", d.File, max(1, min(line+1, lines)), text)
}

func (d *Doc) lineMsg(msg string) error {
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		text := m[2]
		if i := strings.Index(text, " in type "); i >= 0 {
			text = text[:i]
		}
		return fmt.Errorf("%s:%s: %s", d.File, m[1], text)
	}
	return fmt.Errorf("%s: %s", d.File, msg)
}

// Annotate rewrites every Pather inside err (joined errors included) as
// "file:line: path: message", the line being that of the closest node on path.
func (d *Doc) Annotate(err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range flatten(err) {
		var p Pather
		if errors.As(e, &p) {
			out = append(out, fmt.Errorf("%s:%d: %w", d.File, d.Line(p.FieldPath()), e))
		} else {
			out = append(out, fmt.Errorf("%s: %w", d.File, e))
		}
	}
	return errors.Join(out...)
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// Line returns the line of the node at path ("a.b[2].c"), or of its closest
// existing ancestor.
func (d *Doc) Line(path string) int {
	n := d.Root
	if n == nil {
		return 0
	}
	line := n.Line
	for _, part := range strings.Split(path, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 && strings.HasSuffix(part, "]") {
			name = part[:i]
			idx, _ = strconv.Atoi(part[i+1 : len(part)-1])
		}
		if name != "" {
			k, v := keyValue(n, name)
			if v == nil {
				return line
			}
			line, n = k.Line, v
		}
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return line
			}
			n = n.Content[idx]
			line = n.Line
		}
	}
	return line
}

func valueOf(m *yaml.Node, key string) *yaml.Node {
	_, v := keyValue(m, key)
	return v
}

func keyValue(m *yaml.Node, key string) (*yaml.Node, *yaml.Node) {
	if m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}
