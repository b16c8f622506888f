package serviceapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/edgeprov/edgeprov/daemon/directory"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/store"
)

// QuerySpecification is the body of a query.
type QuerySpecification struct {
	Query string `json:"query"`
}

// BulkEnrollmentOperation is the body of POST /enrollments.
type BulkEnrollmentOperation struct {
	Mode        string                   `json:"mode"`
	Enrollments []*enrollment.Individual `json:"enrollments"`
}

// BulkEnrollmentGroupOperation is the body of POST /enrollmentGroups.
type BulkEnrollmentGroupOperation struct {
	Mode             string              `json:"mode"`
	EnrollmentGroups []*enrollment.Group `json:"enrollmentGroups"`
}

// BulkEnrollmentOperationResult answers a bulk operation.
type BulkEnrollmentOperationResult struct {
	IsSuccessful bool                           `json:"isSuccessful"`
	Errors       []BulkEnrollmentOperationError `json:"errors"`
}

// BulkEnrollmentOperationError is one failed item.
type BulkEnrollmentOperationError struct {
	RegistrationID    string `json:"registrationId,omitempty"`
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
	ErrorCode         int    `json:"errorCode"`
	ErrorStatus       string `json:"errorStatus"`
}

// DeviceRegistrationState is the service view of a registration record.
type DeviceRegistrationState struct {
	RegistrationID         string          `json:"registrationId"`
	CreatedDateTimeUTC     *dpsapi.Time    `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string          `json:"assignedHub,omitempty"`
	DeviceID               string          `json:"deviceId,omitempty"`
	Status                 string          `json:"status"`
	Substatus              string          `json:"substatus,omitempty"`
	ErrorCode              int             `json:"errorCode,omitempty"`
	ErrorMessage           string          `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUTC *dpsapi.Time    `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag                   string          `json:"etag,omitempty"`
	Payload                json.RawMessage `json:"payload,omitempty"`
	// EnrollmentGroupID is an edgeprov addition: the group the device
	// registered through, if any.
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
}

func stateOf(r *store.Record) *DeviceRegistrationState {
	return &DeviceRegistrationState{RegistrationID: r.RegistrationID, CreatedDateTimeUTC: dpsapi.NewTime(r.CreatedAt),
		AssignedHub: r.AssignedHub, DeviceID: r.DeviceID, Status: r.Status, Substatus: r.Substatus,
		LastUpdatedDateTimeUTC: dpsapi.NewTime(r.UpdatedAt), ETag: r.ETag, Payload: r.Payload, EnrollmentGroupID: r.EnrollmentGroupID}
}

// withoutKeys returns the attestation as GET, PUT and query responses show it:
// symmetric keys omitted, as DPS does (protocol.md §6.6, §11); they are read
// through attestationmechanism.
func withoutKeys(a enrollment.Attestation) enrollment.Attestation {
	if a.SymmetricKey != nil {
		a.SymmetricKey = &enrollment.SymmetricKeyAttestation{}
	}
	return a
}

func publicIndividual(e *enrollment.Individual, src directory.Source) *enrollment.Individual {
	out := *e
	if src == directory.SourceCatalog && out.ETag == "" {
		out.ETag = directory.CatalogETag(e)
	}
	out.Attestation = withoutKeys(e.Attestation)
	return &out
}

func publicGroup(g *enrollment.Group, src directory.Source) *enrollment.Group {
	out := *g
	if src == directory.SourceCatalog && out.ETag == "" {
		out.ETag = directory.CatalogETag(g)
	}
	out.Attestation = withoutKeys(g.Attestation)
	return &out
}

// readJSON reads a JSON body within limit into v. An empty body is allowed
// only when optional.
func readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any, optional bool) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fail(dpsapi.CodeTooLarge, "The request body exceeds the limit of "+strconv.FormatInt(limit, 10)+" bytes.")
		}
		return fail(dpsapi.CodeBadRequest, "The request body could not be read.")
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if optional {
			return nil
		}
		return fail(dpsapi.CodeInvalidBody, "A JSON request body is required.")
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return fail(dpsapi.CodeUnsupportedMedia, "Content-Type must be application/json.")
		}
	}
	return decodeJSON(data, v)
}

// decodeJSON decodes one JSON value; trailing data is refused.
func decodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return fail(dpsapi.CodeInvalidBody, "The request body is not valid: "+jsonErr(err))
	}
	if dec.More() {
		return fail(dpsapi.CodeInvalidBody, "The request body holds more than one JSON value.")
	}
	if _, err := dec.Token(); err != io.EOF {
		return fail(dpsapi.CodeInvalidBody, "The request body holds data after the JSON value.")
	}
	return nil
}

func jsonErr(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "malformed JSON at byte " + strconv.FormatInt(se.Offset, 10)
	case errors.As(err, &te):
		return "field " + te.Field + " must be " + te.Type.String()
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	}
	return "malformed JSON"
}

// selectAll matches the queries that mean "everything": "*" (Node samples) and
// SELECT * FROM <collection>, with no WHERE clause.
var selectAll = regexp.MustCompile(`(?i)^\s*(\*|select\s+\*\s+from\s+[a-z0-9_]+)\s*$`)

func checkQuery(q *QuerySpecification) error {
	if strings.TrimSpace(q.Query) == "" || selectAll.MatchString(q.Query) {
		return nil
	}
	return fail(CodeUnsupportedQuery, "Only queries that return everything are supported (\"*\" or \"SELECT * FROM enrollments\"); filter on the client.")
}

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
