// Package mqtt is the device provisioning endpoint over MQTT 3.1.1, on its own
// TLS listener and over WebSockets, wire-compatible with DPS as the stock SDKs
// speak it (protocol.md §3, §10). It embeds the mochi-mqtt server for the MQTT
// codec and session handling and only adapts its hooks to registration.Service:
// no message is ever routed between clients, every request is answered to the
// connection that sent it, and no session state outlives a connection.
package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/registration"
)

// Registrar is the use case the endpoint adapts (the same one HTTPS adapts).
type Registrar interface {
	Register(ctx context.Context, req registration.RegisterRequest) (*dpsapi.RegistrationOperationStatus, error)
	OperationStatus(ctx context.Context, req registration.PollRequest) (*dpsapi.RegistrationOperationStatus, error)
}

// Limits protect the daemon from clients; zero fields take the defaults.
type Limits struct {
	// MaxConnections caps connected clients; the next CONNECT is answered
	// "server unavailable". Default 10000.
	MaxConnections int
	// ConnectTimeout bounds the TLS handshake plus the CONNECT packet. Default 10 s.
	ConnectTimeout time.Duration
	// MaxKeepAlive replaces a client's keep-alive of 0 or above it (the
	// connection is dropped after 1.5 times that without a packet). Default 5 min.
	MaxKeepAlive time.Duration
	// PacketRate and PacketBurst bound the packets one connection may send
	// (a token bucket); a client over the limit is disconnected. Defaults 10/s, 40.
	PacketRate  float64
	PacketBurst int
	// RequestTimeout bounds one register or poll. Default 30 s.
	RequestTimeout time.Duration
}

func (l *Limits) defaults() {
	if l.MaxConnections <= 0 {
		l.MaxConnections = 10000
	}
	if l.ConnectTimeout <= 0 {
		l.ConnectTimeout = 10 * time.Second
	}
	if l.MaxKeepAlive <= 0 {
		l.MaxKeepAlive = 5 * time.Minute
	}
	// Whole seconds, as MQTT counts them: 0 would mean no deadline at all.
	l.MaxKeepAlive = min(max(l.MaxKeepAlive, time.Second), 65535*time.Second)
	if l.PacketRate <= 0 {
		l.PacketRate = 10
	}
	if l.PacketBurst <= 0 {
		l.PacketBurst = 40
	}
	if l.RequestTimeout <= 0 {
		l.RequestTimeout = 30 * time.Second
	}
}

// MaxPacketSize is the largest MQTT packet accepted: DPS's 96 KB message limit.
const MaxPacketSize = dpsapi.MaxMessageSize

// Config builds a Server.
type Config struct {
	Registrar Registrar
	// TLS serves the MQTT/TLS listener. Request client certificates
	// (tls.RequestClientCert) so that X.509 devices can present theirs.
	TLS *tls.Config
	// RetryAfter is the integer number of seconds told to pollers (at least 1).
	RetryAfter int
	Limits     Limits
	Logger     *slog.Logger
}

// Server is the MQTT device endpoint.
type Server struct {
	cfg    Config
	log    *slog.Logger
	broker *mochi.Server
	hook   *hook
	ws     *wsListener
	ctx    context.Context
	cancel context.CancelFunc
	conns  *connSet
	state  atomic.Int32 // 0 new, 1 serving, 2 closed
}

// Listener IDs inside the broker.
const (
	tlsListenerID = "mqtts"
	wsListenerID  = "wss"
)

// New builds the endpoint; Start serves it.
func New(cfg Config) (*Server, error) {
	if cfg.Registrar == nil {
		return nil, errors.New("mqtt endpoint: no registrar")
	}
	if cfg.RetryAfter < 1 {
		cfg.RetryAfter = 1
	}
	cfg.Limits.defaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// Sockets that have not finished CONNECT count too, with room for a burst
	// of legitimate handshakes: beyond it a socket is closed at once.
	s.conns = newConnSet(2 * cfg.Limits.MaxConnections)

	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumClients = int64(cfg.Limits.MaxConnections)
	caps.MaximumPacketSize = MaxPacketSize
	caps.MaximumClientWritesPending = 64
	caps.MaximumSessionExpiryInterval = 0
	caps.ReceiveMaximum = 16
	caps.MaximumInflight = 16
	caps.TopicAliasMaximum = 0
	caps.SharedSubAvailable = 0
	caps.SubIDAvailable = 0
	caps.MinimumProtocolVersion = 4 // MQTT 3.1.1, what DPS speaks
	caps.MaximumQos = 1
	caps.RetainAvailable = 0
	s.broker = mochi.New(&mochi.Options{
		Capabilities: caps,
		Logger:       slog.New(&brokerLogHandler{inner: log.With("component", "mqtt").Handler()}),
		// $SYS topics are published to nobody (no client may subscribe to
		// them); publish them rarely.
		SysTopicResendInterval: 3600,
	})
	s.hook = &hook{srv: s}
	if err := s.broker.AddHook(s.hook, nil); err != nil {
		return nil, fmt.Errorf("mqtt endpoint: %w", err)
	}
	s.ws = &wsListener{id: wsListenerID, srv: s}
	if err := s.broker.AddListener(s.ws); err != nil {
		return nil, fmt.Errorf("mqtt endpoint: %w", err)
	}
	return s, nil
}

// Start serves MQTT over TLS on ln (nil: WebSockets only) and starts answering
// on the WebSocket handler. It returns at once.
func (s *Server) Start(ln net.Listener) error {
	if !s.state.CompareAndSwap(0, 1) {
		return errors.New("mqtt endpoint: already started")
	}
	if ln != nil {
		if s.cfg.TLS == nil {
			return errors.New("mqtt endpoint: no TLS configuration for the MQTT listener")
		}
		if err := s.broker.AddListener(&tlsListener{id: tlsListenerID, ln: ln, srv: s}); err != nil {
			return fmt.Errorf("mqtt endpoint: %w", err)
		}
	}
	return s.broker.Serve()
}

// WebSocket serves MQTT over WebSockets (subprotocol "mqtt", any case) for
// mounting on the HTTPS device listener at /$iothub/websocket.
func (s *Server) WebSocket() http.Handler { return s.ws }

// WebSocketPath is where DPS serves MQTT (and AMQP) over WebSockets.
const WebSocketPath = "/$iothub/websocket"

// Close stops the listeners, disconnects every client and waits for them.
func (s *Server) Close() error {
	if s.state.Swap(2) != 1 {
		s.cancel()
		return nil
	}
	// The listeners close every socket; the broker waits for its clients, and
	// the sockets' goroutines end after them.
	err := s.broker.Close()
	s.conns.closeAll()
	s.conns.wg.Wait()
	s.cancel()
	return err
}

// Connections is the number of open connections (those still in the TLS
// handshake or CONNECT included).
func (s *Server) Connections() int { return s.conns.len() }
