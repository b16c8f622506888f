// Package https is the device provisioning endpoint over HTTPS, wire-compatible
// with DPS as the stock SDKs speak it (protocol.md §2, §10). It only adapts HTTP
// to registration.Service.
package https

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/endpoint/deviceerr"
	"github.com/edgeprov/edgeprov/daemon/registration"
)

// Registrar is the use case the endpoint adapts.
type Registrar interface {
	Register(ctx context.Context, req registration.RegisterRequest) (*dpsapi.RegistrationOperationStatus, error)
	OperationStatus(ctx context.Context, req registration.PollRequest) (*dpsapi.RegistrationOperationStatus, error)
	RegistrationStatus(ctx context.Context, req registration.StatusRequest) (*dpsapi.DeviceRegistrationResult, error)
}

// Handler serves the device API.
type Handler struct {
	reg        Registrar
	retryAfter int
	log        *slog.Logger
	now        func() time.Time
}

// NewHandler returns the device API handler. retryAfter is the integer number of
// seconds told to pollers (at least 1: the C SDK treats 0 as invalid).
func NewHandler(reg Registrar, retryAfter int, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if retryAfter < 1 {
		retryAfter = 1
	}
	return &Handler{reg: reg, retryAfter: retryAfter, log: log, now: time.Now}
}

// ServeHTTP routes /{idScope}/registrations/{registrationId}[/register | /operations/{operationId}].
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	trackingID := newTrackingID()
	w.Header().Set("x-ms-request-id", trackingID)
	ctx := r.Context()
	seg, ok := segments(r.URL.EscapedPath())
	if !ok || len(seg) < 3 || !strings.EqualFold(seg[1], "registrations") {
		h.writeError(w, dpsapi.CodeNotFound, "No such resource: "+r.URL.Path, trackingID)
		return
	}
	scope, regID := seg[0], seg[2]
	var route string
	switch {
	case len(seg) == 3:
		route = "status"
	case len(seg) == 4 && strings.EqualFold(seg[3], "register"):
		route = "register"
	case len(seg) == 5 && strings.EqualFold(seg[3], "operations"):
		route = "poll"
	default:
		h.writeError(w, dpsapi.CodeNotFound, "No such resource: "+r.URL.Path, trackingID)
		return
	}
	want := map[string]string{"status": http.MethodPost, "register": http.MethodPut, "poll": http.MethodGet}[route]
	if r.Method != want {
		w.Header().Set("Allow", want)
		h.writeError(w, dpsapi.CodeMethodNotAllowed, "Method "+r.Method+" is not allowed here; use "+want, trackingID)
		return
	}
	apiVersion := r.URL.Query().Get("api-version")
	if err := dpsapi.ValidateAPIVersion(apiVersion); err != nil {
		h.writeError(w, dpsapi.CodeInvalidAPIVersion, err.Error(), trackingID)
		return
	}
	body, code, msg := readBody(w, r, route != "poll")
	if code != 0 {
		h.writeError(w, code, msg, trackingID)
		return
	}
	auth := r.Header.Get("Authorization")
	// The server requests client certificates (tls.RequestClientCert) and
	// verifies them in the attestation step, against the enrollments.
	var certs []*x509.Certificate
	if r.TLS != nil {
		certs = r.TLS.PeerCertificates
	}

	switch route {
	case "register":
		res, err := h.reg.Register(ctx, registration.RegisterRequest{Scope: scope, RegistrationID: regID, APIVersion: apiVersion,
			Body: body, Authorization: auth, ClientCerts: certs})
		if err != nil {
			h.writeErr(w, r, err, trackingID)
			return
		}
		w.Header().Set("retry-after", strconv.Itoa(h.retryAfter))
		writeJSON(w, http.StatusAccepted, res)
	case "poll":
		res, err := h.reg.OperationStatus(ctx, registration.PollRequest{Scope: scope, RegistrationID: regID, OperationID: seg[4],
			Authorization: auth, ClientCerts: certs})
		if err != nil {
			h.writeErr(w, r, err, trackingID)
			return
		}
		status := http.StatusOK
		if res.Status == dpsapi.StatusAssigning || res.Status == dpsapi.StatusUnassigned {
			status = http.StatusAccepted
			w.Header().Set("retry-after", strconv.Itoa(h.retryAfter))
		}
		writeJSON(w, status, res)
	case "status":
		res, err := h.reg.RegistrationStatus(ctx, registration.StatusRequest{Scope: scope, RegistrationID: regID, Body: body,
			Authorization: auth, ClientCerts: certs})
		if err != nil {
			h.writeErr(w, r, err, trackingID)
			return
		}
		writeJSON(w, http.StatusOK, res)
	}
}

// readBody reads and decodes the (optional) JSON body. Polls may carry any body
// (Node sends "{}", C sends none): it is read within the limit and ignored.
func readBody(w http.ResponseWriter, r *http.Request, decode bool) (dpsapi.DeviceRegistration, int, string) {
	var reg dpsapi.DeviceRegistration
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, dpsapi.MaxMessageSize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return reg, dpsapi.CodeTooLarge, "The request body exceeds the 96 KB limit."
		}
		return reg, dpsapi.CodeBadRequest, "The request body could not be read."
	}
	if !decode || len(bytes.TrimSpace(data)) == 0 {
		return reg, 0, ""
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return reg, dpsapi.CodeUnsupportedMedia, "Content-Type must be application/json."
		}
	}
	if err := json.Unmarshal(data, &reg); err != nil {
		return reg, dpsapi.CodeInvalidBody, "The request body is not a valid DeviceRegistration: " + jsonErr(err)
	}
	return reg, 0, ""
}

func jsonErr(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "malformed JSON at byte " + strconv.FormatInt(se.Offset, 10)
	case errors.As(err, &te):
		return "field " + te.Field + " must be " + te.Type.String()
	}
	return "malformed JSON"
}

// segments splits an escaped path and decodes each segment (the C SDK
// URL-encodes scope, registration ID and operation ID).
func segments(escaped string) ([]string, bool) {
	parts := strings.Split(strings.Trim(escaped, "/"), "/")
	for i, p := range parts {
		d, err := url.PathUnescape(p)
		if err != nil || d == "" {
			return nil, false
		}
		parts[i] = d
	}
	return parts, true
}

func (h *Handler) writeErr(w http.ResponseWriter, r *http.Request, err error, trackingID string) {
	status, body := h.errorFor(r.Context(), err, trackingID)
	body.TimestampUTC = dpsapi.Time{Time: h.now()}
	if ra := deviceerr.RetryAfter(err); ra > 0 {
		w.Header().Set("retry-after", strconv.Itoa(ra))
	}
	w.Header().Set("x-ms-error-code", strconv.Itoa(body.ErrorCode))
	if ch := deviceerr.Challenge(err, body); ch != nil {
		writeJSON(w, status, ch)
		return
	}
	writeJSON(w, status, body)
}

func (h *Handler) writeError(w http.ResponseWriter, code int, msg, trackingID string) {
	w.Header().Set("x-ms-error-code", strconv.Itoa(code))
	writeJSON(w, deviceerr.Status(code), &dpsapi.ErrorDetails{ErrorCode: code, TrackingID: trackingID, Message: msg, TimestampUTC: dpsapi.Time{Time: h.now()}})
}

// writeJSON always sets the JSON content type: Node parses bodies only then.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"errorCode":500001,"message":"An internal error occurred."}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	w.Write(data)
}

func newTrackingID() string {
	var b [16]byte
	rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
