// Package nodesdk lets Go tests drive the unmodified Azure IoT Node SDKs
// (device provisioning over HTTP/MQTT, provisioning service client) against
// edgeprov.
//
// The SDKs are pinned in testenv/node (package.json + package-lock.json).
// Ensure installs them with `npm ci`; RunDevice and RunService run
// testenv/node/device.js and service.js with one JSON argument and decode the
// one JSON line they print. An SDK failure is a result (OK == false, Error
// set), not a Go error: the Go error is reserved for the harness itself (node
// missing, bad arguments, a script that crashed or printed garbage).
//
// Trust: the scripts trust the PEM CA file given as caFile through
// NODE_EXTRA_CA_CERTS, and verify the server certificate against Host.
//
// Set DEBUG=azure-iot* in the environment of `go test` to get the SDKs' debug
// logs on the scripts' stderr (DeviceResult.Stderr, ServiceResult.Stderr).
package nodesdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// minNodeMajor is the oldest Node.js the scripts are written for (Debian 12
// ships 18; CI machines have 20).
const minNodeMajor = 18

// installHint is appended to every "tool missing" failure.
const installHint = "install the test prerequisites with `testenv/setup.sh` (as root), " +
	"or at least `apt-get install nodejs npm`"

// npmCITimeout bounds one `npm ci`.
const npmCITimeout = 10 * time.Minute

var (
	ensureMu  sync.Mutex
	ensureDir string // set once Ensure succeeded in this process
)

// Ensure makes sure node and npm are installed and the pinned SDKs are in
// testenv/node/node_modules, running `npm ci` when node_modules is missing or
// older than package-lock.json or package.json. It returns the absolute path
// of testenv/node. It is idempotent and safe to call from parallel tests and
// from several test binaries at once (a flock on testenv/node/.ensure.lock
// serialises the installs). It fails the test, with an install hint, when
// node or npm is missing; it never skips.
func Ensure(t testing.TB) string {
	t.Helper()
	dir, err := ensure(context.Background())
	if err != nil {
		t.Fatalf("nodesdk: %v", err)
	}
	return dir
}

func ensure(ctx context.Context) (string, error) {
	ensureMu.Lock()
	defer ensureMu.Unlock()
	if ensureDir != "" {
		return ensureDir, nil
	}

	dir, err := nodeDir()
	if err != nil {
		return "", err
	}
	if err := checkNode(ctx); err != nil {
		return "", err
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return "", fmt.Errorf("npm not found on PATH (%w): %s", err, installHint)
	}

	unlock, err := lockFile(filepath.Join(dir, ".ensure.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()

	stale, err := needsInstall(dir)
	if err != nil {
		return "", err
	}
	if stale {
		if err := npmCI(ctx, dir); err != nil {
			return "", err
		}
		if stale, err := needsInstall(dir); err != nil {
			return "", err
		} else if stale {
			return "", fmt.Errorf("npm ci in %s finished but node_modules/.package-lock.json is still missing or older than package-lock.json", dir)
		}
	}
	ensureDir = dir
	return dir, nil
}

// nodeDir finds testenv/node by walking up from the working directory (a
// test binary runs in its package's directory) to the directory holding
// go.mod.
func nodeDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("locating testenv/node: %w", err)
	}
	for d := wd; ; {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			dir := filepath.Join(d, "testenv", "node")
			if _, err := os.Stat(filepath.Join(dir, "package.json")); err != nil {
				return "", fmt.Errorf("module root %s has no testenv/node/package.json: %w", d, err)
			}
			return dir, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("locating testenv/node: no go.mod in %s or any parent directory", wd)
		}
		d = parent
	}
}

// checkNode requires node >= minNodeMajor on PATH.
func checkNode(ctx context.Context) error {
	if _, err := exec.LookPath("node"); err != nil {
		return fmt.Errorf("node not found on PATH (%w): %s", err, installHint)
	}
	out, err := exec.CommandContext(ctx, "node", "--version").Output()
	if err != nil {
		return fmt.Errorf("node --version: %w: %s", err, installHint)
	}
	v := strings.TrimSpace(string(out)) // "v20.20.2"
	major, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(v, "v"), ".", 2)[0])
	if err != nil {
		return fmt.Errorf("node --version printed %q, not vMAJOR.MINOR.PATCH", v)
	}
	if major < minNodeMajor {
		return fmt.Errorf("node %s is too old, need >= %d: %s", v, minNodeMajor, installHint)
	}
	return nil
}

// lockFile takes an exclusive flock on path, creating it, and returns the
// function that releases it.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// needsInstall reports whether npm ci has to run: node_modules/.package-lock.json
// (written by npm at the end of an install) is missing or older than the
// committed package-lock.json or package.json.
func needsInstall(dir string) (bool, error) {
	installed, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	for _, name := range []string{"package-lock.json", "package.json"} {
		src, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return false, err
		}
		if src.ModTime().After(installed.ModTime()) {
			return true, nil
		}
	}
	return false, nil
}

func npmCI(ctx context.Context, dir string) error {
	ctx, cancel := context.WithTimeout(ctx, npmCITimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("npm ci in %s: %w\n%s\n(npm needs the npm registry or a warm cache; %s)",
			dir, err, tail(out.String(), 4000), installHint)
	}
	return nil
}

// tail returns the last n bytes of s, marked as cut when it is.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "[...]" + s[len(s)-n:]
}
