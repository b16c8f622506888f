package strictyaml_test

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/strictyaml"
)

// doc is decoded by the tests of Line and Annotate; its line numbers matter.
const doc = `version: 1
a:
  b:
    - c: 1
      d: 2
    - c: 3
  e: x
list: []
flow: {k: [v0, v1]}
`

type target struct {
	Version int `yaml:"version"`
	A       struct {
		B []struct {
			C int `yaml:"c"`
			D int `yaml:"d"`
		} `yaml:"b"`
		E string `yaml:"e"`
	} `yaml:"a"`
	List []string `yaml:"list"`
	Flow struct {
		K []string `yaml:"k"`
	} `yaml:"flow"`
}

func decodeDoc(t *testing.T) *strictyaml.Doc {
	t.Helper()
	var v target
	d, err := strictyaml.Decode("f.yaml", []byte(doc), &v, 1)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if len(v.A.B) != 2 || v.A.B[1].C != 3 || v.Flow.K[1] != "v1" {
		t.Fatalf("Decode filled %+v", v)
	}
	return d
}

func TestLine(t *testing.T) {
	d := decodeDoc(t)
	tests := []struct {
		name string
		path string
		want int
	}{
		{"ok/root", "", 1},
		{"ok/top-level-key", "version", 1},
		{"ok/nested-key", "a.b", 3},
		{"ok/sequence-item", "a.b[0]", 4},
		{"ok/key-in-first-item", "a.b[0].d", 5},
		{"ok/key-in-second-item", "a.b[1].c", 6},
		{"ok/sibling-after-sequence", "a.e", 7},
		{"ok/empty-sequence", "list", 8},
		{"ok/flow-item", "flow.k[1]", 9},
		{"ok/missing-key-falls-back-to-parent", "a.b[1].zz", 6},
		{"ok/missing-item-falls-back-to-sequence", "a.b[5]", 3},
		{"ok/missing-branch-falls-back-to-ancestor", "a.x.y.z", 2},
		{"ok/index-into-scalar-falls-back", "a.b[0].c[1]", 4},
		{"ok/index-into-empty-sequence", "list[0]", 8},
		{"ok/unknown-top-level", "nope", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := d.Line(tt.path); got != tt.want {
				t.Fatalf("Line(%q) = %d, want %d", tt.path, got, tt.want)
			}
		})
	}
	t.Run("ok/no-root", func(t *testing.T) {
		if got := (&strictyaml.Doc{File: "f.yaml"}).Line("a.b"); got != 0 {
			t.Fatalf("Line on a Doc without root = %d, want 0", got)
		}
	})
}

// otherPather is a Pather that is not a strictyaml.FieldError, as the
// enrollment package's errors are.
type otherPather struct{ path string }

func (e otherPather) Error() string     { return e.path + ": from another package" }
func (e otherPather) FieldPath() string { return e.path }

var errSentinel = errors.New("sentinel")

func TestAnnotate(t *testing.T) {
	d := decodeDoc(t)
	tests := []struct {
		name string
		err  error
		want string // "" for a nil result
	}{
		{"ok/nil", nil, ""},
		{"ok/join-of-nils", errors.Join(nil, nil), ""},
		{"ok/one-field-error", strictyaml.Errorf("a.b[1].c", "bad %d", 3), "f.yaml:6: a.b[1].c: bad 3"},
		{"ok/plain-error-gets-file-only", errors.New("plain"), "f.yaml: plain"},
		{"ok/other-pather", otherPather{"a.e"}, "f.yaml:7: a.e: from another package"},
		{"ok/wrapped-pather", fmt.Errorf("context: %w", strictyaml.Errorf("list", "x")), "f.yaml:8: context: list: x"},
		{
			"ok/joined-and-nested-joins-flattened-in-order",
			errors.Join(
				strictyaml.Errorf("a.b[0].d", "first"),
				errors.Join(strictyaml.Errorf("version", "second"), nil, errors.Join(otherPather{"flow.k[0]"})),
				errors.New("third"),
				strictyaml.Errorf("missing.path", "fourth"),
			),
			"f.yaml:5: a.b[0].d: first\n" +
				"f.yaml:1: version: second\n" +
				"f.yaml:9: flow.k[0]: from another package\n" +
				"f.yaml: third\n" +
				"f.yaml:1: missing.path: fourth",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := d.Annotate(tt.err)
			if tt.want == "" {
				if got != nil {
					t.Fatalf("Annotate = %q, want nil", got)
				}
				return
			}
			if got == nil || got.Error() != tt.want {
				t.Fatalf("Annotate =\n%v\nwant\n%s", got, tt.want)
			}
		})
	}
	t.Run("ok/keeps-error-chain", func(t *testing.T) {
		got := d.Annotate(errors.Join(
			&strictyaml.FieldError{Path: "a", Err: fmt.Errorf("wrapped: %w", errSentinel)},
			fmt.Errorf("plain: %w", fs.ErrNotExist),
		))
		if !errors.Is(got, errSentinel) || !errors.Is(got, fs.ErrNotExist) {
			t.Fatalf("Annotate lost the wrapped errors: %v", got)
		}
		var fe *strictyaml.FieldError
		if !errors.As(got, &fe) || fe.FieldPath() != "a" {
			t.Fatalf("errors.As(FieldError) = %v, %+v", errors.As(got, &fe), fe)
		}
	})
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		version int
		want    string // exact error text; "" for success
	}{
		{"ok/minimal", "version: 1\n", 1, ""},
		{"ok/version-2", "version: 2\na: {e: y}\n", 2, ""},
		{"ok/comments-and-document-marker", "# header\n---\nversion: 1 # trailing\n", 1, ""},
		{"fail/empty", "", 1, "f.yaml: empty document (want a mapping with version: 1)"},
		{"fail/only-comments", "# nothing here\n\n", 1, "f.yaml: empty document (want a mapping with version: 1)"},
		{"fail/sequence-document", "\n- version: 1\n", 1, "f.yaml:2: the document must be a mapping"},
		{"fail/scalar-document", "hello\n", 1, "f.yaml:1: the document must be a mapping"},
		{"fail/missing-version", "a:\n  e: x\n", 1, "f.yaml:1: version: required (this edgeprov reads version 1)"},
		{"fail/wrong-version", "a: {e: x}\nversion: 2\n", 1, `f.yaml:2: version: "2" is not supported (this edgeprov reads version 1)`},
		{"fail/non-numeric-version", "version: one\n", 1, `f.yaml:1: version: "one" is not supported (this edgeprov reads version 1)`},
		{"fail/nested-version-does-not-count", "a:\n  version: 1\n", 1, "f.yaml:1: version: required (this edgeprov reads version 1)"},
		{"fail/syntax", "version: 1\na: [\n", 1, "f.yaml:2: did not find expected node content"},
		// yaml.v3 numbers the lines of parser errors from 0; Decode corrects them.
		{"fail/unclosed-flow-mapping", "version: 1\nb: 2\na: {x: 1\nc: 3\n", 1, "f.yaml:3: did not find expected ',' or '}'"},
		{"fail/unclosed-flow-mapping-first-line", "{version: 1, c\n", 1, "f.yaml:1: did not find expected ',' or '}'"},
		{"fail/sequence-item-bad-indent", "version: 1\nl:\n  - a: 1\n   b: 2\n", 1, "f.yaml:3: did not find expected '-' indicator"},
		{"fail/sequence-after-mapping", "version: 1\n- b\n", 1, "f.yaml:2: did not find expected key"},
		{"fail/mapping-after-sequence", "- a\nb: c\n", 1, "f.yaml:2: did not find expected '-' indicator"},
		{"fail/end-of-stream-no-newline", "version: 1\na: [x,", 1, "f.yaml:2: did not find expected node content"},
		{"fail/end-of-stream-stays-on-last-line", "version: 1\na: [x,\n", 1, "f.yaml:2: did not find expected node content"},
		{"fail/undefined-tag-handle", "version: 1\nb: !foo!bar x\n", 1, "f.yaml:2: found undefined tag handle"},
		{"fail/scanner-error-line-unchanged", "version: 1\nb: @x\n", 1, "f.yaml:2: found character that cannot start any token"},
		{"fail/tab-indent", "version: 1\na:\n\te: x\n", 1, "f.yaml:3: found character that cannot start any token"},
		{"fail/duplicate-key", "version: 1\na: {}\na: {}\n", 1, `f.yaml:3: mapping key "a" already defined at line 2`},
		{"fail/unknown-top-level-field", "version: 1\nzz: 1\n", 1, "f.yaml:2: field zz not found"},
		{
			"fail/unknown-nested-field-and-type-error-together",
			"version: 1\na:\n  b:\n    - c: one\n      zz: 2\n  e: x\nlist: {}\n", 1,
			"f.yaml:4: cannot unmarshal !!str `one` into int\n" +
				"f.yaml:5: field zz not found\n" +
				"f.yaml:7: cannot unmarshal !!map into []string",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v target
			d, err := strictyaml.Decode("f.yaml", []byte(tt.in), &v, tt.version)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if d == nil || d.Root == nil || d.File != "f.yaml" || v.Version != tt.version {
					t.Fatalf("Decode = %+v, version %d", d, v.Version)
				}
				return
			}
			if err == nil {
				t.Fatalf("Decode succeeded, want %q", tt.want)
			}
			if err.Error() != tt.want {
				t.Fatalf("Decode error =\n%v\nwant\n%s", err, tt.want)
			}
			if d != nil {
				t.Fatalf("Decode returned a Doc with an error")
			}
		})
	}
}

func TestDecodeOversized(t *testing.T) {
	// The bytes are never touched (the size check comes first), so the
	// allocation stays virtual.
	data := make([]byte, strictyaml.MaxFileSize+1)
	var v target
	_, err := strictyaml.Decode("big.yaml", data, &v, 1)
	want := fmt.Sprintf("big.yaml: file is larger than %d bytes", strictyaml.MaxFileSize)
	if err == nil || err.Error() != want {
		t.Fatalf("Decode of %d bytes = %v, want %q", len(data), err, want)
	}
	// Exactly MaxFileSize is not refused for its size.
	_, err = strictyaml.Decode("big.yaml", data[:strictyaml.MaxFileSize], &v, 1)
	if err != nil && strings.Contains(err.Error(), "larger than") {
		t.Fatalf("Decode of exactly MaxFileSize bytes refused for size: %v", err)
	}
}
