package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func collect(t *testing.T, read func(func(importRow) error) error) ([]importRow, error) {
	t.Helper()
	var rows []importRow
	err := read(func(r importRow) error { rows = append(rows, r); return nil })
	return rows, err
}

func TestImportReaders(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "g.key"), []byte("# group key\nZ3JvdXAga2V5IGdyb3VwIGtleSBncm91cCBrZXkgISE=\n"), 0o600)
	tests := []struct {
		name, format, in string
		wantRows         int
		wantErr          string // a fatal error
		check            func(t *testing.T, rows []importRow)
	}{
		{"ok/csv-columns", "csv", "RegistrationId,primaryKey,iotHubs,iotEdge,tags,desiredProperties\nd-1,a2V5,h1; h2,true,\"{\"\"a\"\":1}\",\"{\"\"t\"\":30}\"\n", 1, "", func(t *testing.T, rows []importRow) {
			e := rows[0].ind
			if rows[0].err != nil || rows[0].row != 2 || e.RegistrationID != "d-1" || strings.Join(e.IoTHubs, ",") != "h1,h2" || !e.Capabilities.IoTEdge ||
				e.InitialTwin.Tags["a"] != float64(1) || e.InitialTwin.Properties.Desired["t"] != float64(30) || e.Attestation.SymmetricKey.PrimaryKey != "a2V5" {
				t.Fatalf("row: %+v %v", e, rows[0].err)
			}
		}},
		{"ok/csv-bad-rows-fail-alone", "csv", "registrationId,attestationType,iotEdge,tags\n,,,\nd-2,x509,,\nd-3,,maybe,\nd-4,,,{\nd-5,tpm,,\n", 5, "", func(t *testing.T, rows []importRow) {
			for i, want := range []string{"empty", "X.509", "iotEdge", "tags", ""} {
				if got := rows[i].err; (want == "") != (got == nil) || (got != nil && !strings.Contains(got.Error(), want)) {
					t.Errorf("row %d: %v, want %q", rows[i].row, got, want)
				}
			}
		}},
		{"fail/csv-unknown-column", "csv", "registrationId,colour\nd-1,blue\n", 0, "unknown column", nil},
		{"fail/csv-no-registration-id", "csv", "deviceId\nx\n", 0, "registrationId column", nil},
		{"ok/json-array", "json", `[{"registrationId":"j-1","attestation":{"type":"symmetricKey"}},{"registrationId":5}]`, 2, "", func(t *testing.T, rows []importRow) {
			if rows[0].err != nil || rows[0].ind.RegistrationID != "j-1" || rows[1].err == nil {
				t.Fatalf("rows: %+v", rows)
			}
		}},
		{"ok/json-object", "json", `{"version":1,"enrollmentGroups":[{"enrollmentGroupId":"g"}],"enrollments":[{"registrationId":"j-2"}]}`, 2, "", func(t *testing.T, rows []importRow) {
			if rows[0].grp == nil || rows[0].grp.EnrollmentGroupID != "g" || rows[1].ind.RegistrationID != "j-2" {
				t.Fatalf("rows: %+v", rows)
			}
		}},
		{"fail/json-syntax", "json", `[{"registrationId":"j-1"},{`, 1, "JSON item 2", nil},
		{"fail/json-unknown-top-level", "json", `{"devices":[]}`, 0, "unknown field", nil},
		{"ok/yaml-catalog-with-key-file", "yaml", "version: 1\nenrollmentGroups:\n  - enrollmentGroupId: g\n    attestation: {type: symmetricKey, symmetricKey: {keyFile: g.key}}\nenrollments:\n  - registrationId: y-1\n    attestation: {type: symmetricKey, symmetricKey: {keyFile: missing.key}}\n", 2, "", func(t *testing.T, rows []importRow) {
			if rows[0].err != nil || rows[0].grp.Attestation.SymmetricKey.PrimaryKey == "" || rows[0].grp.Attestation.SymmetricKey.KeyFile != "" || rows[0].row != 3 {
				t.Fatalf("group row: %+v %v", rows[0].grp, rows[0].err)
			}
			if rows[1].err == nil || rows[1].row != 6 {
				t.Fatalf("missing key file: %+v", rows[1])
			}
		}},
		{"fail/yaml-unknown-field", "yaml", "version: 1\nenrollments:\n  - registrationId: y-1\n    colour: blue\n", 0, "colour", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := strings.NewReader(tt.in)
			var read func(func(importRow) error) error
			switch tt.format {
			case "csv":
				read = func(emit func(importRow) error) error { return readCSV(r, emit) }
			case "json":
				read = func(emit func(importRow) error) error { return readJSON(r, emit) }
			case "yaml":
				read = func(emit func(importRow) error) error { return readYAML(r, filepath.Join(dir, "in.yaml"), emit) }
			}
			rows, err := collect(t, read)
			if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if len(rows) != tt.wantRows {
				t.Fatalf("%d rows, want %d: %+v", len(rows), tt.wantRows, rows)
			}
			if tt.check != nil {
				tt.check(t, rows)
			}
		})
	}
}

// FuzzImportReaders: whatever a file holds, the readers end (a truncated JSON
// file once made the JSON reader loop) and never panic.
func FuzzImportReaders(f *testing.F) {
	for _, s := range []string{
		"registrationId,primaryKey\nd-1,a2V5\n",
		"registrationId,tags\nd,\"{\"\"a\"\":[1,2]}\"\n\"unterminated\n",
		`[{"registrationId":"j-1"},{"registrationId":5},{`,
		`{"enrollments":[{"registrationId":"a"}],"enrollmentGroups":[{"enrollmentGroupId":"g"}]}`,
		`{"enrollments":{"x":1}}`, `[`, `{`, `"`, ``,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, asJSON bool) {
		n := 0
		emit := func(importRow) error {
			if n++; n > len(data)+1 {
				t.Fatalf("more rows (%d) than bytes (%d)", n, len(data))
			}
			return nil
		}
		if asJSON {
			readJSON(strings.NewReader(string(data)), emit)
		} else {
			readCSV(strings.NewReader(string(data)), emit)
		}
	})
}
