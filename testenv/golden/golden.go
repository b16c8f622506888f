// Package golden compares test output with files under testdata/: `go test
// -update` rewrites them, and NoOrphans keeps every input file in its test's
// table. Test packages share it so that the -update flag means one thing.
package golden

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ instead of comparing with them")

// Check compares got with the file at path, or writes it with -update.
func Check(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it)\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// NoOrphans fails for each testdata/*/*.ext input that is not named (as
// "dir/base", without the extension) in tests, so that a case cannot be added
// or renamed without being run.
func NoOrphans(t testing.TB, ext string, tests []string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*", "*."+ext))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.ToSlash(strings.TrimPrefix(f, "testdata"+string(filepath.Separator))), "."+ext)
		if !slices.Contains(tests, name) {
			t.Errorf("%s is not in the test table", f)
		}
	}
}
