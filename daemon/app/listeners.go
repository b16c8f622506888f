package app

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/edgeprov/edgeprov/daemon/systemd"
)

// Listener names. They are the FileDescriptorName= of the .socket units in
// packaging/ (LISTEN_FDNAMES): an endpoint serves the sockets systemd passed
// under its name, else binds its configured address.
const (
	ListenerDevice  = "device-https"  // device endpoint, HTTPS: 443 under systemd
	ListenerMQTT    = "device-mqtt"   // device endpoint, MQTT over TLS: 8883 (needs an mqtt: section)
	ListenerMetrics = "metrics"       // /metrics, /healthz, /readyz (plain HTTP)
	ListenerService = "service-https" // service operations API, HTTPS: 9443
)

// knownListeners are the names this build serves.
var knownListeners = []string{ListenerDevice, ListenerMQTT, ListenerMetrics, ListenerService}

// ListenerNames are the socket names (FileDescriptorName=) this build serves.
func ListenerNames() []string { return append([]string(nil), knownListeners...) }

// listen returns the endpoint's listener: the sockets passed as name (merged
// into one listener when there are several), else one bound to addr.
func listen(inherited *systemd.Listeners, name, addr string) (net.Listener, bool, error) {
	if inherited != nil {
		if ls := inherited.Take(name); len(ls) > 0 {
			return merge(ls), true, nil
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", name, err)
	}
	return ln, false, nil
}

// listenOptional is listen for an endpoint that is off unless configured or
// given a socket: nil, nil when neither.
func listenOptional(inherited *systemd.Listeners, name, addr string) (net.Listener, error) {
	if inherited != nil {
		if ls := inherited.Take(name); len(ls) > 0 {
			return merge(ls), nil
		}
	}
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return ln, nil
}

// merge serves several sockets (e.g. one socket unit listening on an IPv4 and
// an IPv6 address) as one listener.
func merge(ls []net.Listener) net.Listener {
	if len(ls) == 1 {
		return ls[0]
	}
	m := &multiListener{ls: ls, conns: make(chan accepted), done: make(chan struct{})}
	for _, l := range ls {
		go m.loop(l)
	}
	return m
}

type accepted struct {
	c   net.Conn
	err error
}

type multiListener struct {
	ls    []net.Listener
	conns chan accepted
	done  chan struct{}
	once  sync.Once
}

func (m *multiListener) loop(l net.Listener) {
	for {
		c, err := l.Accept()
		select {
		case m.conns <- accepted{c, err}:
		case <-m.done:
			if c != nil {
				c.Close()
			}
			return
		}
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return
			}
		}
	}
}

func (m *multiListener) Accept() (net.Conn, error) {
	select {
	case a := <-m.conns:
		return a.c, a.err
	case <-m.done:
		return nil, net.ErrClosed
	}
}

func (m *multiListener) Close() error {
	m.once.Do(func() {
		close(m.done)
		for _, l := range m.ls {
			l.Close()
		}
	})
	return nil
}

func (m *multiListener) Addr() net.Addr { return m.ls[0].Addr() }

// addrs lists every socket's address.
func addrs(l net.Listener) []net.Addr {
	if m, ok := l.(*multiListener); ok {
		out := make([]net.Addr, len(m.ls))
		for i, x := range m.ls {
			out[i] = x.Addr()
		}
		return out
	}
	return []net.Addr{l.Addr()}
}
