package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

const (
	// DefaultPath is the kernel's TPM resource manager device, used when
	// Open is given an empty path.
	DefaultPath = "/dev/tpmrm0"

	headerSize = 10 // tag(2) size(4) code(4), commands and responses alike
	// maxMessageSize bounds a command or response on a socket. TPMs use at
	// most 4 KiB (MAX_COMMAND_SIZE/MAX_RESPONSE_SIZE); be generous.
	maxMessageSize = 64 << 10
	// commandTimeout bounds one command on a socket. swtpm answers within
	// milliseconds (RSA key generation: well under a second); a stall
	// almost always means swtpm is busy serving another connection.
	commandTimeout = 30 * time.Second
)

// OpenTransport opens a go-tpm transport to the TPM at path:
//
//   - "/dev/tpmrm0", "/dev/tpm0" or another TPM character device ("" means
//     DefaultPath);
//   - "unix:/path/to/swtpm.sock", a swtpm `--server type=unixio` socket;
//   - "tcp:host:port", a swtpm `--server type=tcp` port.
//
// Sockets carry raw TPM command/response frames over one persistent
// connection. swtpm serves one connection at a time and has no resource
// manager, so close the transport before another client uses that swtpm.
func OpenTransport(path string) (transport.TPMCloser, error) {
	if path == "" {
		path = DefaultPath
	}
	var network, addr string
	switch {
	case strings.HasPrefix(path, "unix:"):
		network, addr = "unix", strings.TrimPrefix(path, "unix:")
	case strings.HasPrefix(path, "tcp:"):
		network, addr = "tcp", strings.TrimPrefix(path, "tcp:")
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("tpm: open %q: want tcp:host:port: %w", path, err)
		}
	default:
		t, err := linuxtpm.Open(path)
		if err != nil {
			return nil, fmt.Errorf("tpm: open %s: %w", path, err)
		}
		return t, nil
	}
	if addr == "" {
		return nil, fmt.Errorf("tpm: open %q: empty address", path)
	}
	c, err := net.Dial(network, addr)
	if err != nil {
		return nil, fmt.Errorf("tpm: open %s: %w", path, err)
	}
	return &socketTransport{conn: c, addr: path}, nil
}

// socketTransport sends raw TPM frames over a persistent stream connection.
type socketTransport struct {
	mu     sync.Mutex
	conn   net.Conn
	addr   string
	broken error // set after an I/O error: the framing is lost for good
}

var errClosed = errors.New("transport closed")

// Send implements transport.TPM.
func (s *socketTransport) Send(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil {
		return nil, fmt.Errorf("tpm: %s: %w", s.addr, s.broken)
	}
	if len(cmd) < headerSize || len(cmd) > maxMessageSize {
		return nil, fmt.Errorf("tpm: %s: command of %d bytes is out of bounds", s.addr, len(cmd))
	}
	rsp, err := s.roundTrip(cmd)
	if err != nil {
		s.broken = err
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("tpm: %s: no answer within %v (swtpm serves one connection at a time: is another client connected?): %w",
				s.addr, commandTimeout, err)
		}
		return nil, fmt.Errorf("tpm: %s: %w", s.addr, err)
	}
	return rsp, nil
}

func (s *socketTransport) roundTrip(cmd []byte) ([]byte, error) {
	if err := s.conn.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
		return nil, err
	}
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("write command: %w", err)
	}
	hdr := make([]byte, headerSize)
	if _, err := io.ReadFull(s.conn, hdr); err != nil {
		return nil, fmt.Errorf("read response header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[2:6])
	if n < headerSize || n > maxMessageSize {
		return nil, fmt.Errorf("response size %d is out of bounds", n)
	}
	rsp := make([]byte, n)
	copy(rsp, hdr)
	if _, err := io.ReadFull(s.conn, rsp[headerSize:]); err != nil {
		return nil, fmt.Errorf("read response body: %w", err)
	}
	return rsp, nil
}

// Close implements io.Closer.
func (s *socketTransport) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken == errClosed {
		return nil
	}
	s.broken = errClosed
	return s.conn.Close()
}
