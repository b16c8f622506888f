package postgres

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartCreateDB(t *testing.T) {
	s := Start(t)
	dsn := s.CreateDB(t, "smoke")
	if !strings.Contains(dsn, "dbname=smoke") {
		t.Fatalf("dsn %q", dsn)
	}
	bin, _ := binDir()
	out, err := exec.Command(filepath.Join(bin, "psql"), "-h", s.Socket, "-U", "edgeprov", "-d", "smoke", "-Atc", "show fsync").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "on" {
		t.Fatalf("fsync must stay on for durability tests: %s %v", out, err)
	}
}
