package nodesdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// defaultScriptTimeout mirrors DEFAULT_TIMEOUT_MS in testenv/node/harness.js.
const defaultScriptTimeout = 60 * time.Second

// killGrace is how long past its own timeout a script may run before the Go
// side kills it (the script should have printed a HarnessTimeout result).
const killGrace = 15 * time.Second

// maxArgLen stays under Linux's 128 KiB limit for one argv string.
const maxArgLen = 120 << 10

// SDKError is an error as reported by the Node SDKs (see describeError in
// testenv/node/harness.js).
type SDKError struct {
	// Name is the JavaScript error class, e.g. "UnauthorizedError",
	// "ProvisioningRegistrationFailedError", "Error"; "HarnessTimeout" when
	// the script's own timeout fired, "HarnessMaxPages" for a query that
	// never ended.
	Name    string `json:"name"`
	Message string `json:"message"`
	// Code is Node's error code for system errors, e.g. "ECONNREFUSED",
	// "UNABLE_TO_VERIFY_LEAF_SIGNATURE".
	Code string `json:"code,omitempty"`
	// StatusCode is the HTTP status (or the status in the MQTT response
	// topic) of the response that caused the error, 0 if there was none.
	StatusCode int `json:"statusCode,omitempty"`
	// ResponseBody is the body of that response as text: as received over
	// HTTP, re-serialised JSON over MQTT and for a "failed" registration.
	ResponseBody string `json:"responseBody,omitempty"`
	// Cause is the transport error the SDK wrapped, if any (MQTT).
	Cause *SDKError `json:"cause,omitempty"`
	// Uncaught is set when the SDK threw instead of calling back (e.g. on a
	// response it could not parse); the stack is on the script's stderr.
	Uncaught bool `json:"uncaught,omitempty"`
}

func (e *SDKError) Error() string {
	var b strings.Builder
	b.WriteString(e.Name)
	b.WriteString(": ")
	b.WriteString(e.Message)
	if e.Code != "" {
		fmt.Fprintf(&b, " (code %s)", e.Code)
	}
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (status %d)", e.StatusCode)
	}
	if e.ResponseBody != "" {
		fmt.Fprintf(&b, " body: %s", e.ResponseBody)
	}
	if e.Cause != nil {
		fmt.Fprintf(&b, " cause: %v", e.Cause)
	}
	return b.String()
}

// runScript runs `node <script> <json(args)>` in testenv/node and decodes
// its one stdout line into out. timeout is the script's own timeout (0 means
// its default); the process is killed killGrace later, or when ctx ends.
func runScript(t testing.TB, ctx context.Context, script, caFile string, args any, timeout time.Duration, out any) (stderr string, err error) {
	t.Helper()
	dir := Ensure(t)

	env := withoutVar(os.Environ(), "NODE_EXTRA_CA_CERTS")
	if caFile != "" {
		abs, err := filepath.Abs(caFile)
		if err != nil {
			return "", fmt.Errorf("nodesdk: %s: CA file: %w", script, err)
		}
		if _, err := os.Stat(abs); err != nil {
			// Node would only print a warning and then fail TLS verification.
			return "", fmt.Errorf("nodesdk: %s: CA file: %w", script, err)
		}
		env = append(env, "NODE_EXTRA_CA_CERTS="+abs)
	}

	arg, err := json.Marshal(args)
	if err != nil {
		return "", fmt.Errorf("nodesdk: %s: encoding arguments: %w", script, err)
	}
	if len(arg) > maxArgLen {
		return "", fmt.Errorf("nodesdk: %s: arguments are %d bytes, more than the %d one command-line argument may hold", script, len(arg), maxArgLen)
	}

	if timeout <= 0 {
		timeout = defaultScriptTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+killGrace)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script, string(arg))
	cmd.Dir = dir
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	var stdoutBuf, stderrBuf bytes.Buffer
	cmd.Stdout = &stdoutBuf
	cmd.Stderr = &stderrBuf

	runErr := cmd.Run()
	stderr = stderrBuf.String()
	if runErr != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			runErr = fmt.Errorf("%w (%w)", runErr, ctxErr)
		}
		return stderr, fmt.Errorf("nodesdk: node %s: %w\nstdout:\n%s\nstderr:\n%s",
			script, runErr, tail(stdoutBuf.String(), 4000), tail(stderr, 8000))
	}

	line := strings.TrimSuffix(stdoutBuf.String(), "\n")
	if line == "" || strings.Contains(line, "\n") {
		return stderr, fmt.Errorf("nodesdk: node %s: want exactly one JSON line on stdout, got:\n%s\nstderr:\n%s",
			script, tail(stdoutBuf.String(), 4000), tail(stderr, 8000))
	}
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		return stderr, fmt.Errorf("nodesdk: node %s: decoding %s: %w\nstderr:\n%s", script, tail(line, 4000), err, tail(stderr, 8000))
	}
	return stderr, nil
}

// withoutVar returns env without any NAME=... entry.
func withoutVar(env []string, name string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// absPath makes a file path absolute, since the scripts run in testenv/node
// and not in the test's directory.
func absPath(p string) (string, error) {
	if p == "" {
		return "", errors.New("empty path")
	}
	return filepath.Abs(p)
}
