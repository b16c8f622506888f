package dpsapi

// Error codes: six digits whose first three are the HTTP status, as DPS and the
// Embedded C SDK (errorCode/1000) expect.
const (
	CodeBadRequest          = 400001
	CodeInvalidRegistration = 400002 // malformed or invalid registration ID
	CodeInvalidAPIVersion   = 400003
	CodeInvalidBody         = 400004 // malformed JSON or wrong field types
	CodeIDMismatch          = 400005 // registration ID in body differs from path
	CodeInvalidCSR          = 400006 // csr not allowed, malformed, bad signature or subject
	CodeInvalidAttestation  = 400007 // malformed TPM EK/SRK or EK certificate
	CodeNoHub               = 400208 // no linked hub available (C SDK knows it)
	CodeHubUnauthorized     = 400209 // the linked hub refused the device (C SDK knows it)
	CodeAllocationFailed    = 400210
	CodeUnauthorized        = 401002 // unknown device, bad proof, wrong scope: one answer
	CodeEnrollmentDisabled  = 401003
	CodeNotFound            = 404201
	CodeMethodNotAllowed    = 405001
	CodeConflict            = 409001
	CodePreconditionFailed  = 412001
	CodeTooLarge            = 413001
	CodeUnsupportedMedia    = 415001
	CodeThrottled           = 429001
	CodeInternal            = 500001
)

// HTTPStatus is the HTTP status an error code stands for.
func HTTPStatus(code int) int { return code / 1000 }

// Custom allocation outcomes. DPS's own codes for them are not documented
// (protocol.md §11); these keep the HTTP-like first three digits.
const (
	// CodeWebhookResponse: the allocation webhook answered something unusable
	// (a 4xx, a body that is no AllocationResponse, a hub it was not offered).
	CodeWebhookResponse = 400211
	// CodeWebhookUnavailable: the allocation webhook did not answer (unreachable,
	// timed out, 5xx) on any attempt.
	CodeWebhookUnavailable = 500211
)
