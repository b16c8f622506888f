// Package postgres starts a private PostgreSQL server (Debian's postgresql
// package) for a test: initdb in a temporary directory, listening only on a
// unix socket inside it, stopped when the test ends.
package postgres

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// InstallHint tells how to get the server.
const InstallHint = "apt-get install postgresql (or run testenv/setup.sh)"

// Server is a running PostgreSQL.
type Server struct {
	Dir    string
	Socket string
	cmd    *exec.Cmd
	done   chan struct{}
}

// DSN returns a connection string for database db (created by CreateDB).
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("host=%s user=edgeprov dbname=%s sslmode=disable", s.Socket, db)
}

// binDir finds the newest /usr/lib/postgresql/<v>/bin holding initdb.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL server binaries not found under /usr/lib/postgresql: %s", InstallHint)
}

// Start initialises and starts a server for t.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func start() (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	// A short path: the socket name must fit in 107 bytes.
	dir, err := os.MkdirTemp("", "pg")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, Socket: dir, done: make(chan struct{})}
	cred, err := credential(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "edgeprov", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	var log bytes.Buffer
	s.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", dir, "-c", "listen_addresses=",
		"-c", "max_connections=200", "-c", "shared_buffers=64MB")
	s.cmd.Stdout, s.cmd.Stderr = &log, &log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("postgres: %w", err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	sock := filepath.Join(dir, ".s.PGSQL.5432")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		select {
		case <-s.done:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("postgres exited before accepting connections:\n%s", log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("postgres not ready after 30 s:\n%s", log.String())
		}
	}
	// The socket accepts before the server finishes recovery; wait for a query.
	for {
		psql := exec.Command(filepath.Join(bin, "psql"), "-h", dir, "-U", "edgeprov", "-d", "postgres", "-Atc", "select 1")
		if out, err := psql.CombinedOutput(); err == nil && bytes.Equal(bytes.TrimSpace(out), []byte("1")) {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("postgres not answering after 30 s:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// CreateDB creates an empty database and returns its DSN. CREATE DATABASE
// forces a checkpoint; tests that need many stores use CreateSchema.
func (s *Server) CreateDB(t testing.TB, name string) string {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "psql"), "-h", s.Socket, "-U", "edgeprov", "-d", "postgres",
		"-v", "ON_ERROR_STOP=1", "-c", "CREATE DATABASE "+name).CombinedOutput()
	if err != nil {
		t.Fatalf("create database %s: %v\n%s", name, err, out)
	}
	return s.DSN(name)
}

// CreateSchema creates an empty schema in the postgres database and returns a
// DSN whose search_path is that schema: a cheap, isolated store per test.
func (s *Server) CreateSchema(t testing.TB, name string) string {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "psql"), "-h", s.Socket, "-U", "edgeprov", "-d", "postgres",
		"-v", "ON_ERROR_STOP=1", "-c", "CREATE SCHEMA "+name).CombinedOutput()
	if err != nil {
		t.Fatalf("create schema %s: %v\n%s", name, err, out)
	}
	return s.DSN("postgres") + " search_path=" + name
}

// Query runs one SQL statement in database db with psql and returns
// its unaligned output.
func (s *Server) Query(db, sql string) (string, error) {
	bin, err := binDir()
	if err != nil {
		return "", err
	}
	out, err := exec.Command(filepath.Join(bin, "psql"), "-h", s.Socket, "-U", "edgeprov", "-d", db, "-Atc", sql).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql: %w\n%s", err, out)
	}
	return string(out), nil
}

// Stop stops the server (fast shutdown) and removes its files.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	}
	os.RemoveAll(s.Dir)
}

// Kill stops the server abruptly (SIGKILL), as a crash would.
func (s *Server) Kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		<-s.done
	}
}

// credential returns the postgres user's credentials when running as root
// (initdb and postgres refuse to run as root) and hands it the directory.
func credential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs the postgres user: %w (%s)", err, InstallHint)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
