package loadgen

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
)

// ListenCeiling opens the ceiling server's TLS listener on a loopback port.
// With clientCAs it demands and verifies a client certificate, as the device
// endpoint does for an X.509 device.
func ListenCeiling(cert tls.Certificate, clientCAs *x509.CertPool) (net.Listener, error) {
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAs != nil {
		tc.ClientCAs, tc.ClientAuth = clientCAs, tls.RequireAndVerifyClientCert
	}
	return tls.Listen("tcp", "127.0.0.1:0", tc)
}

// assigned is the ceiling's one answer: what a device reads when it is done.
const assigned = `{"operationId":"ceiling","status":"assigned","registrationState":{"registrationId":"x","assignedHub":"ceiling","deviceId":"x","status":"assigned"}}`

// ServeCeiling answers every HTTPS request with a small JSON body.
func ServeCeiling(ln net.Listener) error {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Write([]byte(assigned))
	}), ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

// ServeMQTTCeiling is the MQTT counterpart: the least an MQTT 3.1.1 server
// can do for a DPS device. It accepts CONNECT and SUBSCRIBE and answers each
// request PUBLISH with a 200 response on the device's response topic.
func ServeMQTTCeiling(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			// A broken client connection is the client's business.
			_ = mqttCeilingConn(c)
		}()
	}
}

// MQTT 3.1.1 control packet types (the high nibble of the first byte).
const (
	mqttConnect    = 1
	mqttConnack    = 2
	mqttPublish    = 3
	mqttPuback     = 4
	mqttSubscribe  = 8
	mqttSuback     = 9
	mqttPingreq    = 12
	mqttPingresp   = 13
	mqttDisconnect = 14
)

// maxCeilingPacket bounds what the ceiling reads: a DPS request is small.
const maxCeilingPacket = 64 << 10

func mqttCeilingConn(c net.Conn) error {
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	for {
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		first, err := r.ReadByte()
		if err != nil {
			return err
		}
		n, err := binary.ReadUvarint(r) // MQTT's remaining length is this varint
		if err != nil || n > maxCeilingPacket {
			return fmt.Errorf("bad remaining length")
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return err
		}
		switch first >> 4 {
		case mqttConnect:
			w.Write([]byte{mqttConnack << 4, 2, 0, 0})
		case mqttSubscribe:
			if len(body) < 2 {
				return errors.New("short SUBSCRIBE")
			}
			w.Write([]byte{mqttSuback << 4, 3, body[0], body[1], 1})
		case mqttPublish:
			if len(body) < 2 {
				return errors.New("short PUBLISH")
			}
			tl := int(binary.BigEndian.Uint16(body))
			if len(body) < 2+tl {
				return errors.New("short PUBLISH topic")
			}
			topic := string(body[2 : 2+tl])
			if qos := (first >> 1) & 3; qos > 0 {
				if len(body) < 4+tl {
					return errors.New("short PUBLISH packet ID")
				}
				w.Write([]byte{mqttPuback << 4, 2, body[2+tl], body[3+tl]})
			}
			rid := ""
			if _, q, ok := strings.Cut(topic, "?"); ok {
				for kv := range strings.SplitSeq(q, "&") {
					if v, ok := strings.CutPrefix(kv, "$rid="); ok {
						rid = v
					}
				}
			}
			writePublish(w, dpsapi.MQTTResponse{Status: http.StatusOK, RequestID: rid}.Topic(), []byte(assigned))
		case mqttPingreq:
			w.Write([]byte{mqttPingresp << 4, 0})
		case mqttDisconnect:
			return w.Flush()
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

// writePublish writes a QoS 0 PUBLISH.
func writePublish(w *bufio.Writer, topic string, payload []byte) {
	n := 2 + len(topic) + len(payload)
	w.WriteByte(mqttPublish << 4)
	w.Write(binary.AppendUvarint(nil, uint64(n)))
	w.Write(binary.BigEndian.AppendUint16(nil, uint16(len(topic))))
	w.WriteString(topic)
	w.Write(payload)
}
