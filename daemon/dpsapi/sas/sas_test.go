package sas

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func TestVerify(t *testing.T) {
	const scope, id = "0ne00ABCDEF", "my-device-01"
	exp := time.Now().Add(time.Hour)
	raw := DeviceResource(scope, id)
	enc := strings.ReplaceAll(url.PathEscape(raw), "/", "%2F")
	other := []byte("another key of 32 bytes........")
	tests := []struct {
		name  string
		token string
		keys  [][]byte
		want  error
	}{
		{"ok/node-raw-sr", Build(testKey, raw, exp, "registration"), [][]byte{testKey}, nil},
		{"ok/python-encoded-sr", Build(testKey, enc, exp, "registration"), [][]byte{testKey}, nil},
		{"ok/embedded-c-lower-hex-no-skn", Build(testKey, lowerHex(enc), exp, ""), [][]byte{testKey}, nil},
		{"ok/aziot-lowercased", Build(testKey, strings.ToLower(raw), exp, "registration"), [][]byte{testKey}, nil},
		{"ok/secondary-key", Build(testKey, raw, exp, ""), [][]byte{other, testKey}, nil},
		{"fail/wrong-key", Build(other, raw, exp, ""), [][]byte{testKey}, ErrSignature},
		{"fail/no-keys", Build(testKey, raw, exp, ""), nil, ErrSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := Parse(tt.token)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !strings.EqualFold(tok.Resource, raw) {
				t.Fatalf("Resource = %q, want %q", tok.Resource, raw)
			}
			if err := tok.Verify(tt.keys...); !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	sig := url.QueryEscape(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)))
	tests := []struct {
		name    string
		token   string
		wantErr bool
	}{
		{"ok/any-order", "SharedAccessSignature se=1795646830&skn=registration&sig=" + sig + "&sr=a%2Fb", false},
		{"ok/unknown-field", "SharedAccessSignature sr=a&sig=" + sig + "&se=1&foo=bar", false},
		{"fail/no-prefix", "sr=a&sig=" + sig + "&se=1", true},
		{"fail/missing-se", "SharedAccessSignature sr=a&sig=" + sig, true},
		{"fail/bad-se", "SharedAccessSignature sr=a&sig=" + sig + "&se=soon", true},
		{"fail/short-sig", "SharedAccessSignature sr=a&sig=AAAA&se=1", true},
		{"fail/bad-escape", "SharedAccessSignature sr=%zz&sig=" + sig + "&se=1", true},
		{"fail/dup-sr", "SharedAccessSignature sr=a&sr=b&sig=" + sig + "&se=1", true},
		{"fail/field-without-value", "SharedAccessSignature sr&sig=" + sig + "&se=1", true},
		{"fail/too-long", "SharedAccessSignature sr=" + strings.Repeat("a", MaxTokenLen) + "&sig=" + sig + "&se=1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.token)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Parse error = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
		})
	}
}

func TestCheckExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tok, err := Parse(Build(testKey, "r", now.Add(-time.Minute), ""))
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.CheckExpiry(now, 5*time.Minute); err != nil {
		t.Errorf("within skew: %v", err)
	}
	if err := tok.CheckExpiry(now, 30*time.Second); !errors.Is(err, ErrExpired) {
		t.Errorf("beyond skew: %v, want ErrExpired", err)
	}
}

func TestDeriveDeviceKey(t *testing.T) {
	// Vector computed with the documented formula (openssl dgst -sha256 -mac HMAC
	// -macopt hexkey:<group key> over the registration ID).
	group, _ := base64.StdEncoding.DecodeString("J6tqrdWVvM2vF5ehHbPjzE+DDqczOC5VWN9dUW+3eZ2Os9GhjaNA6zrr8aSyaH2sJ8itUv1YEeoThusp3J+c4A==")
	got := base64.StdEncoding.EncodeToString(DeriveDeviceKey(group, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"))
	if got != wantDerived {
		t.Fatalf("derived key = %s, want %s", got, wantDerived)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Build(testKey, "0ne00ABCDEF/registrations/dev", time.Unix(1795646830, 0), "registration"))
	f.Add("SharedAccessSignature sr=0ne00ABCDEF%2Fregistrations%2Fdev&sig=abc%3D&se=1&skn=registration")
	f.Add("SharedAccessSignature ")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if len(tok.Signature) != 32 || tok.ResourceRaw == "" && tok.Resource != "" {
			t.Fatalf("inconsistent token %+v", tok)
		}
		_ = tok.Verify(testKey)
	})
}

func BenchmarkVerify(b *testing.B) {
	tok, err := Parse(Build(testKey, "0ne00ABCDEF/registrations/my-device-01", time.Now().Add(time.Hour), "registration"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := tok.Verify(testKey); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseAndVerify(b *testing.B) {
	s := Build(testKey, "0ne00ABCDEF/registrations/my-device-01", time.Now().Add(time.Hour), "registration")
	b.ReportAllocs()
	for b.Loop() {
		tok, err := Parse(s)
		if err != nil {
			b.Fatal(err)
		}
		if err := tok.Verify(testKey); err != nil {
			b.Fatal(err)
		}
	}
}

const wantDerived = "fsdqlFN4ByYYXr/LGuXen0znvdGfwNpiAcDmqFnpmek="

// TestBuildWithMAC checks the signing hook TPM and HSM keys use: it is
// handed exactly the string to sign, its MAC becomes sig, and its error is
// returned.
func TestBuildWithMAC(t *testing.T) {
	exp := time.Unix(1795646830, 0)
	res := url.QueryEscape(DeviceResource("0ne00ABCDEF", "my-device-01"))
	var signed []byte
	tok, err := BuildWithMAC(func(s []byte) ([]byte, error) {
		signed = bytes.Clone(s)
		return Sign(testKey, res, "1795646830"), nil
	}, res, exp, DeviceKeyName)
	if err != nil {
		t.Fatal(err)
	}
	if string(signed) != "0ne00ABCDEF%2Fregistrations%2Fmy-device-01\n1795646830" {
		t.Fatalf("signed %q", signed)
	}
	if want := Build(testKey, res, exp, DeviceKeyName); tok != want {
		t.Fatalf("BuildWithMAC = %q, Build = %q", tok, want)
	}
	boom := errors.New("TPM says no")
	if tok, err := BuildWithMAC(func([]byte) ([]byte, error) { return nil, boom }, res, exp, ""); !errors.Is(err, boom) || tok != "" {
		t.Fatalf("BuildWithMAC with a failing signer = %q, %v", tok, err)
	}
}
