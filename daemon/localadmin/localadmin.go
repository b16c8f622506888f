// Package localadmin is edgeprovd's local admin endpoint: HTTP over a unix
// socket in the state directory, for operations that must go through the
// running daemon because it holds the store's lock (an online backup), and its
// health. Only root and the daemon's own user may use it: the socket is 0600 in
// a 0700 directory, and each connection's peer credentials are checked too.
package localadmin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Listen binds the socket at path. A socket left by a daemon that died is
// removed first: the caller holds the store's lock, so no live daemon owns it.
func Listen(path string) (net.Listener, error) {
	if st, err := os.Lstat(path); err == nil && st.Mode().Type() == os.ModeSocket {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return &peerListener{Listener: ln, uid: uint32(os.Getuid())}, nil
}

// peerListener drops connections from users other than root and the daemon's.
type peerListener struct {
	net.Listener
	uid uint32
}

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if uc, ok := c.(*net.UnixConn); ok {
			if uid, err := peerUID(uc); err == nil && (uid == 0 || uid == l.uid) {
				return c, nil
			}
		}
		c.Close()
	}
}

func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) { cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	return cred.Uid, nil
}

// Daemon is what the endpoint asks of edgeprovd.
type Daemon interface {
	// Backup writes a backup archive to w.
	Backup(w io.Writer) error
	// Health runs the health checks; Status is the current status line.
	Health(ctx context.Context) error
	Status() string
}

// Health is the answer of GET /v1/health.
type Health struct {
	Healthy bool   `json:"healthy"`
	Error   string `json:"error,omitempty"`
	Status  string `json:"status"`
}

// NewServer returns the endpoint's server; its timeouts leave room for a
// backup of a large store.
func NewServer(d Daemon, log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/backup", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-tar")
		if err := d.Backup(w); err != nil {
			log.Error("online backup failed", "error", err)
			// Headers and part of the archive may be out: abort the connection
			// so the client sees a broken transfer, never a short archive.
			panic(http.ErrAbortHandler)
		}
		log.Info("online backup written")
	})
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		h := Health{Healthy: true}
		if err := d.Health(ctx); err != nil {
			h = Health{Error: err.Error()}
		}
		h.Status = d.Status()
		w.Header().Set("Content-Type", "application/json")
		if !h.Healthy {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(h)
	})
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Minute,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// ErrNotRunning means no daemon answers on the socket.
var ErrNotRunning = errors.New("no edgeprovd answers on the admin socket")

// Client talks to the endpoint at a socket path.
type Client struct{ hc *http.Client }

// NewClient returns a client of the socket at path.
func NewClient(path string) *Client {
	return &Client{hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", path)
			if err != nil && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)) {
				return nil, fmt.Errorf("%w (%s)", ErrNotRunning, path)
			}
			return c, err
		},
	}}}
}

func (c *Client) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://edgeprovd"+path, nil)
	if err != nil {
		return nil, err
	}
	return c.hc.Do(req)
}

// Backup streams a backup archive from the daemon into w.
func (c *Client) Backup(ctx context.Context, w io.Writer) error {
	resp, err := c.get(ctx, "/v1/backup")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("online backup: %s: %s", resp.Status, b)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("online backup: %w", err)
	}
	return nil
}

// Health asks the daemon to run its health checks.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	resp, err := c.get(ctx, "/v1/health")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var h Health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return nil, fmt.Errorf("health: %s: %w", resp.Status, err)
	}
	return &h, nil
}
