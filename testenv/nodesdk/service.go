package nodesdk

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// ProvisioningServiceClient methods that service.js can call, in the order
// of protocol.md §6.2. What ServiceOp.Arg holds for each is noted.
const (
	OpCreateOrUpdateIndividualEnrollment          = "createOrUpdateIndividualEnrollment"          // enrollment object; its etag becomes If-Match
	OpGetIndividualEnrollment                     = "getIndividualEnrollment"                     // registration ID
	OpDeleteIndividualEnrollment                  = "deleteIndividualEnrollment"                  // registration ID or enrollment object; ServiceOp.ETag
	OpGetIndividualEnrollmentAttestationMechanism = "getIndividualEnrollmentAttestationMechanism" // registration ID
	OpCreateIndividualEnrollmentQuery             = "createIndividualEnrollmentQuery"             // query spec, e.g. map[string]any{"query": "*"}
	OpRunBulkEnrollmentOperation                  = "runBulkEnrollmentOperation"                  // {"mode": ..., "enrollments": [...]}
	OpCreateOrUpdateEnrollmentGroup               = "createOrUpdateEnrollmentGroup"               // group object
	OpGetEnrollmentGroup                          = "getEnrollmentGroup"                          // group ID
	OpDeleteEnrollmentGroup                       = "deleteEnrollmentGroup"                       // group ID or group object; ServiceOp.ETag
	OpGetEnrollmentGroupAttestationMechanism      = "getEnrollmentGroupAttestationMechanism"      // group ID
	OpCreateEnrollmentGroupQuery                  = "createEnrollmentGroupQuery"                  // query spec
	OpGetDeviceRegistrationState                  = "getDeviceRegistrationState"                  // registration ID
	OpDeleteDeviceRegistrationState               = "deleteDeviceRegistrationState"               // registration ID or state object; ServiceOp.ETag
	// OpCreateEnrollmentGroupDeviceRegistrationStateQuery takes the query
	// spec in Arg and the group in ServiceOp.EnrollmentGroupID.
	OpCreateEnrollmentGroupDeviceRegistrationStateQuery = "createEnrollmentGroupDeviceRegistrationStateQuery"
)

// ServiceOp is one ProvisioningServiceClient call.
type ServiceOp struct {
	Op  string `json:"op"`
	Arg any    `json:"arg,omitempty"`
	// ETag is sent as If-Match by the delete ops (the SDK also sends an
	// etag found in an object Arg).
	ETag string `json:"etag,omitempty"`
	// EnrollmentGroupID is for OpCreateEnrollmentGroupDeviceRegistrationStateQuery.
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
	// PageSize is the queries' x-ms-max-item-count (0: none sent).
	PageSize int `json:"pageSize,omitempty"`
	// MaxPages stops draining a query after that many pages with an
	// "HarnessMaxPages" error (0: 1000).
	MaxPages int `json:"maxPages,omitempty"`
}

// ServiceArgs is the argument of testenv/node/service.js.
type ServiceArgs struct {
	// Host, if set, must equal the HostName in ConnectionString (the SDK
	// connects to that HostName; the server certificate must be valid for it).
	Host string `json:"host,omitempty"`
	// Port is the server port (0: 443, the SDK's only port); reached through
	// Node's global HTTPS agent.
	Port int `json:"port,omitempty"`
	// ConnectionString is "HostName=<bare host>;SharedAccessKeyName=<policy>;SharedAccessKey=<base64>".
	ConnectionString string      `json:"connectionString"`
	Ops              []ServiceOp `json:"ops"`
	// Timeout bounds the whole run inside the script (0: 60 s).
	Timeout time.Duration `json:"-"`
}

// MarshalJSON adds timeoutMs and sends a nil Ops as [].
func (a ServiceArgs) MarshalJSON() ([]byte, error) {
	type plain ServiceArgs
	if a.Ops == nil {
		a.Ops = []ServiceOp{}
	}
	return json.Marshal(struct {
		plain
		TimeoutMS int64 `json:"timeoutMs,omitempty"`
	}{plain(a), a.Timeout.Milliseconds()})
}

// ServiceResult is what service.js printed.
type ServiceResult struct {
	// OK is false only when the run as a whole failed (Error set): the
	// script's timeout, an exception thrown inside the SDK, or a connection
	// string the SDK rejected. Results then holds the ops finished so far.
	OK      bool       `json:"ok"`
	Results []OpResult `json:"results"`
	Error   *SDKError  `json:"error,omitempty"`
	// Stderr is everything the script wrote to stderr.
	Stderr string `json:"-"`
}

// OpResult is the outcome of one ServiceOp; a failed op does not stop the
// ones after it.
type OpResult struct {
	Op string `json:"op"`
	OK bool   `json:"ok"`
	// StatusCode is the HTTP status of a successful call (of the last page
	// for queries); the SDK does not expose it for deletes (0).
	StatusCode int `json:"statusCode,omitempty"`
	// Result is the parsed response body of a non-query call (absent for
	// deletes; "" if the response was not application/json).
	Result json.RawMessage `json:"result,omitempty"`
	// Items are the query results of all pages, Pages the number of pages.
	Items []json.RawMessage `json:"items,omitempty"`
	Pages int               `json:"pages,omitempty"`
	Error *SDKError         `json:"error,omitempty"`
}

// Decode unmarshals Result into v.
func (r OpResult) Decode(v any) error {
	if len(r.Result) == 0 {
		return fmt.Errorf("nodesdk: %s returned no result", r.Op)
	}
	return json.Unmarshal(r.Result, v)
}

// RunService runs args.Ops in order with the stock ProvisioningServiceClient,
// trusting the PEM CA in caFile. The error is non-nil only when the harness
// failed; SDK errors are in ServiceResult.Error and OpResult.Error.
func RunService(t testing.TB, ctx context.Context, caFile string, args ServiceArgs) (ServiceResult, error) {
	t.Helper()
	var res ServiceResult
	stderr, err := runScript(t, ctx, "service.js", caFile, args, args.Timeout, &res)
	res.Stderr = stderr
	if err != nil {
		return res, err
	}
	if res.OK == (res.Error != nil) || len(res.Results) > len(args.Ops) || (res.OK && len(res.Results) != len(args.Ops)) {
		return res, fmt.Errorf("nodesdk: service.js broke its contract: ok=%v error=%v %d results for %d ops\nstderr:\n%s",
			res.OK, res.Error, len(res.Results), len(args.Ops), tail(stderr, 8000))
	}
	for i, r := range res.Results {
		if r.Op != args.Ops[i].Op || r.OK == (r.Error != nil) {
			return res, fmt.Errorf("nodesdk: service.js broke its contract in result %d: %+v\nstderr:\n%s", i, r, tail(stderr, 8000))
		}
	}
	return res, nil
}
