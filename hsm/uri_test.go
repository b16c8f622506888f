package hsm

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func ptr[T any](v T) *T { return &v }

func TestParseURI(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *URI
	}{
		{name: "ok/empty", in: "pkcs11:", want: &URI{}},
		{name: "ok/empty-query", in: "pkcs11:?", want: &URI{}},
		{
			name: "ok/agent-config",
			in:   "pkcs11:token=dev-agent;object=device-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/edgeprov/pin",
			want: &URI{Token: "dev-agent", Object: "device-key", ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINSource: "file:/etc/edgeprov/pin"},
		},
		{
			name: "ok/percent-encoded",
			in:   "pkcs11:token=My%20Token;object=a%2Fb%3Bc;id=%01%02%ff;type=private",
			want: &URI{Token: "My Token", Object: "a/b;c", ID: []byte{1, 2, 0xff}, Type: TypePrivate},
		},
		{
			name: "ok/id-unencoded-bytes",
			in:   "pkcs11:id=abc",
			want: &URI{ID: []byte("abc")},
		},
		{
			name: "ok/all-path-attributes",
			in: "pkcs11:token=t;manufacturer=SoftHSM%20project;serial=164dcf3b06af4e81;model=SoftHSM%20v2;" +
				"library-manufacturer=SoftHSM;library-description=Implementation%20of%20PKCS11;library-version=2.6;" +
				"slot-manufacturer=SoftHSM%20project;slot-description=SoftHSM%20slot%20ID%200x2;slot-id=112152193;" +
				"object=o;type=secret-key;id=%00",
			want: &URI{
				Token: "t", Manufacturer: "SoftHSM project", Serial: "164dcf3b06af4e81", Model: "SoftHSM v2",
				LibraryManufacturer: "SoftHSM", LibraryDescription: "Implementation of PKCS11", LibraryVersion: &Version{2, 6},
				SlotManufacturer: "SoftHSM project", SlotDescription: "SoftHSM slot ID 0x2", SlotID: ptr(uint(112152193)),
				Object: "o", Type: TypeSecretKey, ID: []byte{0},
			},
		},
		{name: "ok/library-version-major-only", in: "pkcs11:library-version=3", want: &URI{LibraryVersion: &Version{3, 0}}},
		{name: "ok/case-insensitive-names", in: "PKCS11:TOKEN=a;Type=Private?Module-Name=softhsm2", want: &URI{Token: "a", Type: TypePrivate, ModuleName: "softhsm2"}},
		{name: "ok/unknown-query-ignored", in: "pkcs11:token=a?x-vendor=1&x-vendor=2&foo=bar", want: &URI{Token: "a"}},
		{name: "ok/pin-source-env", in: "pkcs11:token=a?pin-source=env:EDGEPROV_PIN", want: &URI{Token: "a", PINSource: "env:EDGEPROV_PIN"}},
		{name: "ok/pin-source-file-url", in: "pkcs11:?pin-source=file:///etc/pin", want: &URI{PINSource: "file:///etc/pin"}},
		{name: "ok/module-path-cleaned", in: "pkcs11:?module-path=/usr/lib/../lib/x.so", want: &URI{ModulePath: "/usr/lib/x.so"}},
		{name: "ok/reserved-in-value", in: "pkcs11:object=a:b@c!$'()*+,=&d", want: &URI{Object: "a:b@c!$'()*+,=&d"}},
		{name: "ok/utf8", in: "pkcs11:token=%C3%A9t%C3%A9", want: &URI{Token: "été"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseURI(tc.in)
			if err != nil {
				t.Fatalf("ParseURI(%q): %v", tc.in, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseURI(%q)\n got %+v\nwant %+v", tc.in, got, tc.want)
			}
			again, err := ParseURI(got.String())
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("String() = %q does not parse back: %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestParseURIFails(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"fail/no-scheme", "token=a", `must start with "pkcs11:"`},
		{"fail/other-scheme", "file:/etc/x", `must start with "pkcs11:"`},
		{"fail/pin-value", "pkcs11:token=a?pin-value=1234", "pin-source=file:"},
		{"fail/pin-value-uppercase", "pkcs11:token=a?PIN-VALUE=1234", "pin-value is refused"},
		{"fail/pin-value-with-pin-source", "pkcs11:token=a?pin-source=file:/p&pin-value=1234", "pin-value is refused"},
		{"fail/unknown-path-attribute", "pkcs11:token=a;colour=blue", `unknown path attribute "colour"`},
		{"fail/vendor-path-attribute", "pkcs11:token=a;x-vendor=1", `unknown path attribute "x-vendor"`},
		{"fail/duplicate-path-attribute", "pkcs11:token=a;token=b", "more than once"},
		{"fail/duplicate-query-attribute", "pkcs11:?module-path=/a.so&module-path=/b.so", "more than once"},
		{"fail/empty-run", "pkcs11:token=a;;object=b", "stray separator"},
		{"fail/trailing-separator", "pkcs11:token=a;", "stray separator"},
		{"fail/empty-query-run", "pkcs11:?module-name=x&", "stray separator"},
		{"fail/no-equals", "pkcs11:token", "not name=value"},
		{"fail/no-name", "pkcs11:=a", "has no name"},
		{"fail/bad-name", "pkcs11:to.ken=a", "only letters"},
		{"fail/empty-value", "pkcs11:token=", "is empty"},
		{"fail/empty-id", "pkcs11:id=", "is empty"},
		{"fail/space", "pkcs11:token=My Token", "must be percent-encoded (%20)"},
		{"fail/slash-in-path", "pkcs11:object=a/b", "must be percent-encoded (%2F)"},
		{"fail/fragment", "pkcs11:token=a#frag", "must be percent-encoded (%23)"},
		{"fail/truncated-escape", "pkcs11:token=a%2", "truncated percent-escape"},
		{"fail/bad-escape", "pkcs11:token=a%zz", "bad percent-escape"},
		{"fail/not-utf8", "pkcs11:token=%ff", "not UTF-8"},
		{"fail/nul", "pkcs11:token=a%00", "NUL"},
		{"fail/type", "pkcs11:type=secret", `want public, private`},
		{"fail/slot-id", "pkcs11:slot-id=-1", "decimal number"},
		{"fail/slot-id-overflow", "pkcs11:slot-id=99999999999999999999999", "decimal number"},
		{"fail/library-version", "pkcs11:library-version=1.256", "M.N"},
		{"fail/library-version-empty-minor", "pkcs11:library-version=1.", "M.N"},
		{"fail/module-path-relative", "pkcs11:?module-path=lib/x.so", "not absolute"},
		{"fail/module-name-path", "pkcs11:?module-name=/usr/lib/x.so", "use module-path"},
		{"fail/pin-source-relative", "pkcs11:?pin-source=file:pin.txt", "must be absolute"},
		{"fail/pin-source-remote", "pkcs11:?pin-source=file://host/pin", "another host"},
		{"fail/pin-source-command", "pkcs11:?pin-source=|/usr/bin/getpin", "running a command is not supported"},
		{"fail/pin-source-scheme", "pkcs11:?pin-source=https://example.com/pin", "unsupported scheme"},
		{"fail/pin-source-env-name", "pkcs11:?pin-source=env:1BAD", "env:NAME"},
		{"fail/unknown-query-bad-char", "pkcs11:?x-a=b c", "must be percent-encoded"},
		{"fail/too-long", "pkcs11:token=" + strings.Repeat("a", maxURILen), "longer than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := ParseURI(tc.in)
			if err == nil {
				t.Fatalf("ParseURI(%q) = %+v, want an error", tc.in, u)
			}
			if !errors.Is(err, ErrInvalidURI) {
				t.Errorf("error %v does not wrap ErrInvalidURI", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestURIKeyRef(t *testing.T) {
	tests := []struct {
		name, in string
		want     KeyRef
		wantErr  bool
	}{
		{name: "ok/object", in: "pkcs11:token=a;object=k", want: KeyRef{Label: "k"}},
		{name: "ok/id", in: "pkcs11:id=%01%02", want: KeyRef{ID: []byte{1, 2}}},
		{name: "ok/both", in: "pkcs11:object=k;id=%01", want: KeyRef{Label: "k", ID: []byte{1}}},
		{name: "fail/none", in: "pkcs11:token=a", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := ParseURI(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := u.KeyRef()
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidURI) {
					t.Fatalf("KeyRef() error = %v, want ErrInvalidURI", err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("KeyRef() = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestURIMatch(t *testing.T) {
	tok := tokenInfo{slotID: 7, slotManufacturer: "SoftHSM project", slotDescription: "SoftHSM slot ID 0x7",
		label: "dev-agent", manufacturer: "SoftHSM project", model: "SoftHSM v2", serial: "0123"}
	lib := libraryInfo{manufacturer: "SoftHSM", description: "Implementation of PKCS11", version: Version{2, 6}}
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"ok/empty", "pkcs11:", true},
		{"ok/label", "pkcs11:token=dev-agent", true},
		{"ok/all", "pkcs11:token=dev-agent;serial=0123;model=SoftHSM%20v2;manufacturer=SoftHSM%20project;slot-id=7;" +
			"slot-description=SoftHSM%20slot%20ID%200x7;slot-manufacturer=SoftHSM%20project;" +
			"library-manufacturer=SoftHSM;library-version=2.6", true},
		{"ok/object-attributes-ignored", "pkcs11:token=dev-agent;object=x;type=private", true},
		{"fail/label", "pkcs11:token=other", false},
		{"fail/serial", "pkcs11:token=dev-agent;serial=9", false},
		{"fail/slot-id", "pkcs11:slot-id=8", false},
		{"fail/library-version", "pkcs11:library-version=2", false},
		{"fail/library-description", "pkcs11:library-description=x", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := ParseURI(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := u.matchesLibrary(lib) && u.matchesToken(tok); got != tc.want {
				t.Fatalf("match = %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzParseURI checks that ParseURI never panics and that whatever it
// accepts formats to a canonical string that parses back to the same URI.
// The seed corpus is in testdata/fuzz/FuzzParseURI.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"pkcs11:",
		"pkcs11:token=dev-agent;object=device-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/edgeprov/pin",
		"pkcs11:token=a;id=%01%02;type=private?pin-source=env:PIN",
		"pkcs11:slot-id=1;library-version=2.6;serial=x?module-name=softhsm2&x-y=z",
		"pkcs11:token=a?pin-value=1234",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidURI) {
				t.Fatalf("error %v does not wrap ErrInvalidURI", err)
			}
			return
		}
		c := u.String()
		again, err := ParseURI(c)
		if err != nil {
			t.Fatalf("ParseURI(%q) ok, but its String() %q fails: %v", s, c, err)
		}
		if !reflect.DeepEqual(again, u) {
			t.Fatalf("round trip of %q via %q:\n got %+v\nwant %+v", s, c, again, u)
		}
		if again.String() != c {
			t.Fatalf("String() not canonical: %q then %q", c, again.String())
		}
		if _, query, _ := strings.Cut(c, "?"); query != "" {
			for _, run := range strings.Split(query, "&") {
				if name, _, _ := strings.Cut(run, "="); strings.EqualFold(name, "pin-value") {
					t.Fatalf("String() %q carries a pin-value", c)
				}
			}
		}
	})
}

func TestReadPIN(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	plain := write("plain", "1234", 0o600)
	newline := write("newline", "1234\n", 0o600)
	crlf := write("crlf", "1234\r\n", 0o600)
	spaces := write("spaces", " 12 34 \n", 0o600)
	empty := write("empty", "\n", 0o600)
	big := write("big", strings.Repeat("1", maxPINFile+1), 0o600)
	open := write("open", "1234\n", 0o644)
	t.Setenv("EDGEPROV_TEST_PIN", "5678")
	t.Setenv("EDGEPROV_TEST_EMPTY_PIN", "")

	tests := []struct {
		name, source, want, wantErr, wantLog string
	}{
		{name: "ok/file", source: "file:" + plain, want: "1234"},
		{name: "ok/file-url", source: "file://" + plain, want: "1234"},
		{name: "ok/file-localhost", source: "file://localhost" + plain, want: "1234"},
		{name: "ok/trailing-newline", source: "file:" + newline, want: "1234"},
		{name: "ok/trailing-crlf", source: "file:" + crlf, want: "1234"},
		{name: "ok/spaces-kept", source: "file:" + spaces, want: " 12 34 "},
		{name: "ok/env", source: "env:EDGEPROV_TEST_PIN", want: "5678"},
		{name: "ok/group-readable-warns", source: "file:" + open, want: "1234", wantLog: "chmod 600"},
		{name: "fail/none", source: "", wantErr: "no pin-source"},
		{name: "fail/missing-file", source: "file:" + filepath.Join(dir, "missing"), wantErr: "no such file"},
		{name: "fail/directory", source: "file:" + dir, wantErr: "not a regular file"},
		{name: "fail/empty", source: "file:" + empty, wantErr: "empty PIN"},
		{name: "fail/too-big", source: "file:" + big, wantErr: "larger than"},
		{name: "fail/env-unset", source: "env:EDGEPROV_TEST_UNSET_PIN", wantErr: "is not set"},
		{name: "fail/env-empty", source: "env:EDGEPROV_TEST_EMPTY_PIN", wantErr: "empty PIN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			p, err := readPIN(&URI{PINSource: tc.source}, log)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrPIN) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("readPIN() error = %v, want ErrPIN containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.value() != tc.want {
				t.Errorf("PIN = %q, want %q", p.value(), tc.want)
			}
			if !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("log %q does not contain %q", logs.String(), tc.wantLog)
			}
			if strings.Contains(logs.String(), tc.want) {
				t.Errorf("log %q contains the PIN", logs.String())
			}
		})
	}
}

func TestPINRedacted(t *testing.T) {
	p := pin{b: []byte("s3cret-PIN")}
	holder := struct {
		Name string
		PIN  pin
	}{"x", p}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("test", "pin", p, "holder", holder)
	outputs := []string{
		fmt.Sprint(p), fmt.Sprintf("%v %+v %#v %s %q %x %X %d", p, p, p, p, p, p, p, p),
		fmt.Sprintf("%v %+v %#v", holder, holder, holder), logs.String(),
	}
	for _, out := range outputs {
		if strings.Contains(out, "s3cret") || strings.Contains(out, fmt.Sprintf("%x", "s3cret")) ||
			strings.Contains(strings.ToLower(out), strings.ToLower(fmt.Sprintf("%X", "s3cret"))) {
			t.Errorf("PIN leaked: %s", out)
		}
		if !strings.Contains(out, redacted) {
			t.Errorf("no %s in %s", redacted, out)
		}
	}
	p.wipe()
	if !bytes.Equal(p.b, make([]byte, len("s3cret-PIN"))) {
		t.Errorf("wipe left %q", p.b)
	}
}

func TestFindModule(t *testing.T) {
	root := t.TempDir()
	reg := filepath.Join(root, "p11-kit")
	libs := filepath.Join(root, "lib")
	other := filepath.Join(root, "elsewhere")
	for _, d := range []string{reg, libs, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	touch := func(p string) string {
		if err := os.WriteFile(p, []byte("ELF"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	viaRegistry := touch(filepath.Join(other, "libvendor.so"))
	if err := os.WriteFile(filepath.Join(reg, "Vendor.module"), []byte("# comment\nmodule: "+viaRegistry+"\ncritical: no\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(reg, "relative.module"), []byte("module: librelative.so\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	libFoo := touch(filepath.Join(libs, "libfoo.so"))
	bar := touch(filepath.Join(libs, "bar.so"))
	relative := touch(filepath.Join(libs, "librelative.so"))

	tests := []struct {
		name, module, want string
	}{
		{name: "ok/p11-kit-registry", module: "vendor", want: viaRegistry},
		{name: "ok/lib-prefix", module: "foo", want: libFoo},
		{name: "ok/no-prefix", module: "bar", want: bar},
		{name: "ok/relative-registry-entry-falls-back-to-dirs", module: "relative", want: relative},
		{name: "fail/unknown", module: "nope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := findModule(tc.module, []string{reg}, []string{libs})
			if tc.want == "" {
				if !errors.Is(err, ErrModuleNotFound) {
					t.Fatalf("findModule() = %q, %v; want ErrModuleNotFound", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("findModule() = %q, %v; want %q", got, err, tc.want)
			}
		})
	}

	// modulePath resolves symlinks, so two spellings give one path.
	link := filepath.Join(root, "link.so")
	if err := os.Symlink(libFoo, link); err != nil {
		t.Fatal(err)
	}
	a, err := modulePath(&URI{ModulePath: link}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := modulePath(&URI{ModulePath: libFoo}, nil)
	if err != nil || a != b {
		t.Fatalf("modulePath via symlink = %q, direct = %q (%v)", a, b, err)
	}
	for _, u := range []*URI{{}, {ModulePath: filepath.Join(root, "missing.so")}, {ModulePath: libs}} {
		if _, err := modulePath(u, nil); !errors.Is(err, ErrModuleNotFound) {
			t.Errorf("modulePath(%+v) error = %v, want ErrModuleNotFound", u, err)
		}
	}
}

func TestKeyKind(t *testing.T) {
	for _, k := range []KeyKind{ECDSAP256, RSA2048} {
		got, err := ParseKeyKind(k.String())
		if err != nil || got != k {
			t.Errorf("ParseKeyKind(%q) = %v, %v", k.String(), got, err)
		}
	}
	if _, err := ParseKeyKind("dsa-1024"); err == nil {
		t.Error("ParseKeyKind(dsa-1024) succeeded")
	}
}
