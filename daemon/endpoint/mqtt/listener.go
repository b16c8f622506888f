package mqtt

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
)

// connSet holds the open sockets of both listeners: it caps them (a socket over
// the cap is closed before any TLS work), closes them all at shutdown and waits
// for their goroutines.
type connSet struct {
	mu     sync.Mutex
	max    int
	closed bool
	m      map[net.Conn]struct{}
	wg     sync.WaitGroup // one per socket added and not yet removed
}

func newConnSet(max int) *connSet { return &connSet{max: max, m: map[net.Conn]struct{}{}} }

func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.m) >= s.max {
		return false
	}
	s.m[c] = struct{}{}
	s.wg.Add(1) // under the lock, so never after closeAll
	return true
}

// remove is called once for every socket add accepted, when its goroutine is done.
func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := make([]net.Conn, 0, len(s.m))
	for c := range s.m {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (s *connSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// tlsListener is MQTT over TLS on its own socket: it performs the handshake
// under the CONNECT deadline and hands the connection to the broker.
type tlsListener struct {
	id     string
	ln     net.Listener
	srv    *Server
	closed atomic.Bool
}

var _ listeners.Listener = (*tlsListener)(nil)

func (l *tlsListener) ID() string                { return l.id }
func (l *tlsListener) Address() string           { return l.ln.Addr().String() }
func (l *tlsListener) Protocol() string          { return "mqtts" }
func (l *tlsListener) Init(_ *slog.Logger) error { return nil }

// Serve accepts until Close.
func (l *tlsListener) Serve(establish listeners.EstablishFn) {
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if l.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.srv.log.Warn("mqtt accept", "error", err)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !l.srv.conns.add(c) {
			l.srv.log.Warn("mqtt connection refused: too many open connections", "remote", c.RemoteAddr().String())
			c.Close()
			continue
		}
		go l.serveConn(c, establish)
	}
}

func (l *tlsListener) serveConn(c net.Conn, establish listeners.EstablishFn) {
	defer l.srv.conns.remove(c)
	defer c.Close()
	tc := tls.Server(c, l.srv.cfg.TLS)
	// The deadline covers the handshake and the CONNECT packet; the broker
	// replaces it with the keep-alive once connected.
	tc.SetDeadline(time.Now().Add(l.srv.cfg.Limits.ConnectTimeout))
	if err := tc.Handshake(); err != nil {
		l.srv.log.Debug("mqtt TLS handshake failed", "remote", c.RemoteAddr().String(), "error", err)
		return
	}
	if err := establish(l.id, tc); err != nil {
		l.srv.log.Debug("mqtt connection ended", "remote", c.RemoteAddr().String(), "error", err)
	}
}

// Close stops accepting and closes every socket.
func (l *tlsListener) Close(closeClients listeners.CloseFn) {
	l.closed.Store(true)
	l.ln.Close()
	l.srv.conns.closeAll()
	closeClients(l.id)
}

// wsListener serves MQTT over WebSockets as an http.Handler mounted on the
// HTTPS device listener; to the broker it is a listener like the TLS one.
type wsListener struct {
	id        string
	srv       *Server
	establish atomic.Pointer[listeners.EstablishFn]
	closed    atomic.Bool
}

var _ listeners.Listener = (*wsListener)(nil)

func (l *wsListener) ID() string                { return l.id }
func (l *wsListener) Address() string           { return WebSocketPath }
func (l *wsListener) Protocol() string          { return "wss" }
func (l *wsListener) Init(_ *slog.Logger) error { return nil }

// Serve arms the handler; connections arrive through ServeHTTP.
func (l *wsListener) Serve(establish listeners.EstablishFn) { l.establish.Store(&establish) }

// Close refuses new upgrades and closes every socket.
func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.closed.Store(true)
	l.srv.conns.closeAll()
	closeClients(l.id)
}

var upgrader = websocket.Upgrader{
	// Devices are not browsers and nothing here rides on cookies: an Origin
	// header, if any, grants nothing.
	CheckOrigin: func(*http.Request) bool { return true },
}

// ServeHTTP upgrades to a WebSocket speaking the "mqtt" subprotocol (the C SDK
// spells it "MQTT") and serves the MQTT session on it until it ends.
func (l *wsListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	establish := l.establish.Load()
	if establish == nil || l.closed.Load() {
		wsError(w, http.StatusServiceUnavailable, dpsapi.CodeInternal, "The MQTT endpoint is not serving.")
		return
	}
	proto := ""
	for _, p := range websocket.Subprotocols(r) {
		if strings.EqualFold(p, "mqtt") {
			proto = p
			break
		}
	}
	if !websocket.IsWebSocketUpgrade(r) || proto == "" {
		wsError(w, http.StatusBadRequest, dpsapi.CodeBadRequest, "This path serves MQTT over WebSockets: upgrade with the subprotocol mqtt.")
		return
	}
	// Echo the client's own spelling: some clients compare it exactly.
	ws, err := upgrader.Upgrade(w, r, http.Header{"Sec-Websocket-Protocol": {proto}})
	if err != nil {
		return // the upgrader has answered
	}
	c := &wsConn{ws: ws, tls: r.TLS}
	if !l.srv.conns.add(c) {
		l.srv.log.Warn("mqtt connection refused: too many open connections", "remote", r.RemoteAddr)
		c.Close()
		return
	}
	defer l.srv.conns.remove(c)
	defer c.Close()
	// A WebSocket message may hold a whole MQTT packet and its framing.
	ws.SetReadLimit(MaxPacketSize + 1024)
	c.SetDeadline(time.Now().Add(l.srv.cfg.Limits.ConnectTimeout))
	if err := (*establish)(l.id, c); err != nil {
		l.srv.log.Debug("mqtt connection ended", "remote", r.RemoteAddr, "error", err)
	}
}

func wsError(w http.ResponseWriter, status, code int, msg string) {
	data, _ := json.Marshal(&dpsapi.ErrorDetails{ErrorCode: code, TrackingID: newTrackingID(), Message: msg, TimestampUTC: dpsapi.Time{Time: time.Now()}})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(data)
}

// wsConn is a WebSocket as the byte stream the broker reads: binary messages
// concatenated, each write one binary message.
type wsConn struct {
	ws  *websocket.Conn
	tls *tls.ConnectionState
	r   io.Reader // the current message
}

var errTextFrame = errors.New("MQTT over WebSockets uses binary messages only")

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errTextFrame
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// Write sends p as one message; the broker serialises its writes per client.
func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error         { return c.ws.Close() }
func (c *wsConn) LocalAddr() net.Addr  { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }
func (c *wsConn) SetDeadline(t time.Time) error {
	return errors.Join(c.ws.SetReadDeadline(t), c.ws.SetWriteDeadline(t))
}
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }

// ConnectionState is the TLS state of the HTTPS connection the WebSocket rides
// on (its client certificates, for X.509 devices).
func (c *wsConn) ConnectionState() tls.ConnectionState {
	if c.tls == nil {
		return tls.ConnectionState{}
	}
	return *c.tls
}
