// Package serviceapi is the service operations endpoint: the DPS service REST
// API (2021-10-01, protocol.md §6) over the Directory and the store, with
// shared access policies and rights, plus a few edgeprov additions under
// /edgeprov/ (status, all registrations, the local hub registry).
//
// Choices where DPS is silent or unverified:
//   - GET, PUT and query responses omit symmetric keys ("symmetricKey": {}), as
//     DPS's examples do; POST …/attestationmechanism returns them. A PUT
//     without keys generates them (64 random bytes) on create and keeps the
//     stored ones on update, so get-modify-put never loses them.
//   - Catalog entries are listed and readable; their etag is a digest of the
//     entry; changing or deleting them is a 409 naming the catalog file.
//   - Bulk operations write the valid items in one transaction and report the
//     others (isSuccessful false); a body that cannot be parsed, an unknown
//     mode or an oversized request writes nothing.
//   - Queries support "everything" only ("*", SELECT * FROM x); anything else
//     is a 400 rather than a silently ignored filter.
package serviceapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/directory"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/store"
)

// Defaults.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// DefaultMaxBodyBytes bounds a request body: a 10,000-item bulk operation
	// of typical enrollments is about 4 MB.
	DefaultMaxBodyBytes = 16 << 20
	// DefaultMaxBulkItems bounds one bulk operation (DPS: 10).
	DefaultMaxBulkItems = 10000
)

// Header names.
const (
	hContinuation = "x-ms-continuation"
	hMaxItemCount = "x-ms-max-item-count"
	hItemType     = "x-ms-item-type"
	// HeaderSource (edgeprov) selects a listing's source on queries
	// ("catalog" or "api") and tells a GET's source in responses.
	HeaderSource = "x-edgeprov-source"
)

// Config builds a Handler.
type Config struct {
	Directory *directory.Directory
	Store     store.Store
	// Hubs are the host names of the linked hubs whose registry edgeprov keeps
	// (the local driver's).
	Hubs []string
	// Policies are the shared access policies.
	Policies []*Policy
	// HostNames are accepted as a token's sr host, besides the request's Host.
	HostNames []string
	// ContinuationKey signs continuation tokens (32 bytes or more).
	ContinuationKey []byte
	// Status, if set, answers GET /edgeprov/status.
	Status func(ctx context.Context) any
	// DeleteRegistration, if set, deletes a registration record whose etag is
	// etag together with the device's identity on its hub, so the device loses
	// access there (registration.Service.DeleteRegistration); it returns
	// store.ErrNotFound or store.ErrConflict (wrapped) when the record is gone
	// or changed. Unset, only the record is deleted, as in DPS.
	DeleteRegistration func(ctx context.Context, registrationID, etag string) error
	// Skew is how far past expiry a token is still accepted (default 5m).
	Skew         time.Duration
	MaxBodyBytes int64
	MaxBulkItems int
	Logger       *slog.Logger
	Now          func() time.Time
}

// Handler serves the service API.
type Handler struct {
	cfg       Config
	dir       *directory.Directory
	scope     string
	policies  map[string]*Policy
	hostNames []string
	paging    *Paging
	skew      time.Duration
	log       *slog.Logger
	now       func() time.Time
}

// New returns the handler.
func New(cfg Config) *Handler {
	h := &Handler{cfg: cfg, dir: cfg.Directory, scope: cfg.Directory.Scope(), policies: map[string]*Policy{},
		hostNames: cfg.HostNames, paging: NewPaging(cfg.ContinuationKey), skew: cfg.Skew, log: cfg.Logger, now: cfg.Now}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.skew == 0 {
		h.skew = skewDefault
	}
	if h.cfg.MaxBodyBytes == 0 {
		h.cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if h.cfg.MaxBulkItems == 0 {
		h.cfg.MaxBulkItems = DefaultMaxBulkItems
	}
	for _, p := range cfg.Policies {
		h.policies[strings.ToLower(p.Name)] = p
	}
	return h
}

// route is a resolved request.
type route struct {
	need     Right
	notFound int
	serve    func(w http.ResponseWriter, r *http.Request) error
}

// ServeHTTP routes case-insensitively (the Node SDK writes
// /enrollmentgroups/{id}/attestationmechanism) and tolerates a trailing slash
// (it POSTs bulk operations to /enrollments/).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-ms-request-id", newTrackingID())
	segs, ok := segments(r.URL.EscapedPath())
	if !ok {
		h.writeErr(w, r, fail(CodeRouteNotFound, "No such resource: "+r.URL.Path), 0)
		return
	}
	rt, allow := h.resolve(r.Method, segs)
	if rt == nil {
		if allow != "" {
			w.Header().Set("Allow", allow)
			h.writeErr(w, r, fail(dpsapi.CodeMethodNotAllowed, "Method "+r.Method+" is not allowed here; use "+allow), 0)
			return
		}
		h.writeErr(w, r, fail(CodeRouteNotFound, "No such resource: "+r.URL.Path), 0)
		return
	}
	if _, err := h.authorize(r, rt.need, segs); err != nil {
		h.writeErr(w, r, err, 0)
		return
	}
	if err := rt.serve(w, r); err != nil {
		h.writeErr(w, r, err, rt.notFound)
	}
}

// resolve maps method and path to a route; when only the method is wrong it
// returns the allowed one.
func (h *Handler) resolve(method string, s []string) (*route, string) {
	is := func(i int, word string) bool { return len(s) > i && strings.EqualFold(s[i], word) }
	pick := func(routes map[string]*route) (*route, string) {
		if rt := routes[method]; rt != nil {
			return rt, ""
		}
		var allow []string
		for m := range routes {
			allow = append(allow, m)
		}
		slices.Sort(allow)
		return nil, strings.Join(allow, ", ")
	}
	switch {
	case len(s) == 0:
		return nil, ""
	case is(0, "enrollments") || is(0, "enrollmentgroups"):
		group := is(0, "enrollmentgroups")
		switch {
		case len(s) == 1:
			return pick(map[string]*route{"POST": {EnrollmentWrite, 0, func(w http.ResponseWriter, r *http.Request) error { return h.bulk(w, r, group) }}})
		case len(s) == 2 && is(1, "query") && method == http.MethodPost:
			return &route{EnrollmentRead, 0, func(w http.ResponseWriter, r *http.Request) error { return h.queryEnrollments(w, r, group) }}, ""
		case len(s) == 2:
			id := s[1]
			return pick(map[string]*route{
				"GET":    {EnrollmentRead, CodeEnrollmentNotFound, func(w http.ResponseWriter, r *http.Request) error { return h.getEnrollment(w, r, group, id) }},
				"PUT":    {EnrollmentWrite, CodeEnrollmentNotFound, func(w http.ResponseWriter, r *http.Request) error { return h.putEnrollment(w, r, group, id) }},
				"DELETE": {EnrollmentWrite, CodeEnrollmentNotFound, func(w http.ResponseWriter, r *http.Request) error { return h.deleteEnrollment(w, r, group, id) }},
			})
		case len(s) == 3 && is(2, "attestationmechanism"):
			id := s[1]
			return pick(map[string]*route{"POST": {EnrollmentRead, CodeEnrollmentNotFound, func(w http.ResponseWriter, r *http.Request) error {
				return h.attestationMechanism(w, r, group, id)
			}}})
		}
	case is(0, "registrations"):
		switch {
		case len(s) == 2:
			id := s[1]
			return pick(map[string]*route{
				"GET":    {RegistrationStatusRead, CodeRegistrationNotFound, func(w http.ResponseWriter, r *http.Request) error { return h.getRegistration(w, r, id) }},
				"DELETE": {RegistrationStatusWrite, CodeRegistrationNotFound, func(w http.ResponseWriter, r *http.Request) error { return h.deleteRegistration(w, r, id) }},
			})
		case len(s) == 3 && is(2, "query"):
			group := s[1]
			return pick(map[string]*route{"POST": {RegistrationStatusRead, 0, func(w http.ResponseWriter, r *http.Request) error {
				return h.queryRegistrations(w, r, group)
			}}})
		}
	case is(0, "edgeprov"):
		switch {
		case len(s) == 2 && is(1, "status"):
			return pick(map[string]*route{"GET": {ServiceConfig, 0, h.status}})
		case len(s) == 3 && is(1, "registrations") && is(2, "query"):
			return pick(map[string]*route{"POST": {RegistrationStatusRead, 0, func(w http.ResponseWriter, r *http.Request) error {
				return h.queryRegistrations(w, r, "")
			}}})
		case len(s) == 2 && is(1, "hubs"):
			return pick(map[string]*route{"GET": {ServiceConfig, 0, h.listHubs}})
		case len(s) == 5 && is(1, "hubs") && is(3, "devices") && is(4, "query"):
			hub := s[2]
			return pick(map[string]*route{"POST": {ServiceConfig, CodeRouteNotFound, func(w http.ResponseWriter, r *http.Request) error { return h.queryDevices(w, r, hub) }}})
		case len(s) == 4 && is(1, "hubs") && is(3, "devices"):
			hub := s[2]
			return pick(map[string]*route{"GET": {ServiceConfig, CodeRouteNotFound, func(w http.ResponseWriter, r *http.Request) error { return h.queryDevices(w, r, hub) }}})
		case len(s) == 5 && is(1, "hubs") && is(3, "devices"):
			hub, id := s[2], s[4]
			return pick(map[string]*route{"GET": {ServiceConfig, CodeRouteNotFound, func(w http.ResponseWriter, r *http.Request) error { return h.getDevice(w, r, hub, id) }}})
		}
	}
	return nil, ""
}

// segments splits an escaped path and decodes each segment (IDs arrive
// encodeURIComponent-encoded).
func segments(escaped string) ([]string, bool) {
	t := strings.Trim(escaped, "/")
	if t == "" {
		return nil, true
	}
	parts := strings.Split(t, "/")
	for i, p := range parts {
		d, err := url.PathUnescape(p)
		if err != nil || d == "" {
			return nil, false
		}
		parts[i] = d
	}
	return parts, true
}

// --- enrollments and groups ---

func (h *Handler) getEnrollment(w http.ResponseWriter, r *http.Request, group bool, id string) error {
	if group {
		g, src, err := h.dir.Group(r.Context(), id)
		if err != nil {
			return err
		}
		w.Header().Set(HeaderSource, string(src))
		writeJSON(w, http.StatusOK, publicGroup(g, src))
		return nil
	}
	e, src, err := h.dir.Individual(r.Context(), id)
	if err != nil {
		return err
	}
	w.Header().Set(HeaderSource, string(src))
	writeJSON(w, http.StatusOK, publicIndividual(e, src))
	return nil
}

func (h *Handler) putEnrollment(w http.ResponseWriter, r *http.Request, group bool, id string) error {
	ifMatch := r.Header.Get("If-Match")
	if group {
		var g enrollment.Group
		if err := readJSON(w, r, h.cfg.MaxBodyBytes, &g, false); err != nil {
			return err
		}
		if err := sameID("enrollmentGroupId", &g.EnrollmentGroupID, id); err != nil {
			return err
		}
		out, _, err := h.dir.PutGroup(r.Context(), &g, ifMatch)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, publicGroup(out, directory.SourceAPI))
		return nil
	}
	var e enrollment.Individual
	if err := readJSON(w, r, h.cfg.MaxBodyBytes, &e, false); err != nil {
		return err
	}
	if err := sameID("registrationId", &e.RegistrationID, id); err != nil {
		return err
	}
	out, _, err := h.dir.PutIndividual(r.Context(), &e, ifMatch)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, publicIndividual(out, directory.SourceAPI))
	return nil
}

// sameID fills the body's ID from the path, or refuses a different one.
func sameID(field string, body *string, path string) error {
	if err := dpsapi.ValidateRegistrationID(path); err != nil {
		return fail(dpsapi.CodeInvalidRegistration, err.Error())
	}
	if *body == "" {
		*body = path
	} else if !strings.EqualFold(*body, path) {
		return fail(dpsapi.CodeIDMismatch, field+" "+strconv.Quote(*body)+" in the body differs from "+strconv.Quote(path)+" in the path")
	}
	return nil
}

func (h *Handler) deleteEnrollment(w http.ResponseWriter, r *http.Request, group bool, id string) error {
	var err error
	if group {
		err = h.dir.DeleteGroup(r.Context(), id, r.Header.Get("If-Match"))
	} else {
		err = h.dir.DeleteIndividual(r.Context(), id, r.Header.Get("If-Match"))
	}
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) attestationMechanism(w http.ResponseWriter, r *http.Request, group bool, id string) error {
	var a enrollment.Attestation
	if group {
		g, _, err := h.dir.Group(r.Context(), id)
		if err != nil {
			return err
		}
		a = g.Attestation
	} else {
		e, _, err := h.dir.Individual(r.Context(), id)
		if err != nil {
			return err
		}
		a = e.Attestation
	}
	h.log.Info("attestation mechanism read", "enrollment", id, "group", group) // an audit trail of key reads
	writeJSON(w, http.StatusOK, a)
	return nil
}

func (h *Handler) bulk(w http.ResponseWriter, r *http.Request, group bool) error {
	var mode string
	var ids []string
	var errs []directory.ItemError
	var err error
	if group {
		var op BulkEnrollmentGroupOperation
		if err := readJSON(w, r, h.cfg.MaxBodyBytes, &op, false); err != nil {
			return err
		}
		if mode, err = h.checkBulk(op.Mode, len(op.EnrollmentGroups)); err != nil {
			return err
		}
		for _, g := range op.EnrollmentGroups {
			ids = append(ids, idOrEmpty(g, func(g *enrollment.Group) string { return g.EnrollmentGroupID }))
		}
		errs, err = h.dir.BulkGroups(r.Context(), mode, op.EnrollmentGroups)
	} else {
		var op BulkEnrollmentOperation
		if err := readJSON(w, r, h.cfg.MaxBodyBytes, &op, false); err != nil {
			return err
		}
		if mode, err = h.checkBulk(op.Mode, len(op.Enrollments)); err != nil {
			return err
		}
		for _, e := range op.Enrollments {
			ids = append(ids, idOrEmpty(e, func(e *enrollment.Individual) string { return e.RegistrationID }))
		}
		errs, err = h.dir.BulkIndividuals(r.Context(), mode, op.Enrollments)
	}
	if err != nil {
		return err
	}
	res := BulkEnrollmentOperationResult{IsSuccessful: len(errs) == 0, Errors: []BulkEnrollmentOperationError{}}
	for _, e := range errs {
		code, msg := h.codeFor(r.Context(), e.Err, CodeEnrollmentNotFound, w.Header().Get("x-ms-request-id"))
		item := BulkEnrollmentOperationError{ErrorCode: code, ErrorStatus: msg}
		if group {
			item.EnrollmentGroupID = ids[e.Index]
		} else {
			item.RegistrationID = ids[e.Index]
		}
		res.Errors = append(res.Errors, item)
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func idOrEmpty[T any](x *T, id func(*T) string) string {
	if x == nil {
		return ""
	}
	return id(x)
}

func (h *Handler) checkBulk(mode string, n int) (string, error) {
	m, ok := directory.ParseMode(mode)
	if !ok {
		return "", fail(dpsapi.CodeInvalidBody, "mode "+strconv.Quote(mode)+" is not create, update, updateIfMatchETag or delete")
	}
	if n == 0 {
		return "", fail(dpsapi.CodeInvalidBody, "the bulk operation has no items")
	}
	if n > h.cfg.MaxBulkItems {
		return "", fail(dpsapi.CodeTooLarge, "the bulk operation has "+strconv.Itoa(n)+" items; the limit is "+strconv.Itoa(h.cfg.MaxBulkItems))
	}
	return m, nil
}

// --- queries ---

// pageRequest reads the query body and paging headers; after is where to
// continue for query q.
func (h *Handler) pageRequest(w http.ResponseWriter, r *http.Request, q string) (after string, size int, err error) {
	var spec QuerySpecification
	if err := readJSON(w, r, 64<<10, &spec, true); err != nil {
		return "", 0, err
	}
	if err := checkQuery(&spec); err != nil {
		return "", 0, err
	}
	size = DefaultPageSize
	if v := r.Header.Get(hMaxItemCount); v != "" {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 {
			return "", 0, fail(CodeBadHeader, hMaxItemCount+" must be a positive integer")
		}
		size = min(n, MaxPageSize)
	}
	if tok := r.Header.Get(hContinuation); tok != "" {
		if after, err = h.paging.Decode(tok, q, h.now()); err != nil {
			return "", 0, err
		}
	}
	return after, size, nil
}

// writePage answers a query; x-ms-continuation is present only when another
// page follows (an empty one makes the Node SDK loop forever).
func (h *Handler) writePage(w http.ResponseWriter, q, itemType, next string, size int, items any) {
	w.Header().Set(hItemType, itemType)
	w.Header().Set(hMaxItemCount, strconv.Itoa(size))
	if next != "" {
		w.Header().Set(hContinuation, h.paging.Encode(q, next, h.now()))
	}
	writeJSON(w, http.StatusOK, items)
}

func sourceFilter(r *http.Request) (directory.Filter, error) {
	switch strings.ToLower(r.Header.Get(HeaderSource)) {
	case "":
		return directory.All, nil
	case string(directory.SourceCatalog):
		return directory.OnlyCatalog, nil
	case string(directory.SourceAPI):
		return directory.OnlyAPI, nil
	}
	return 0, fail(CodeBadHeader, HeaderSource+" must be catalog or api")
}

func (h *Handler) queryEnrollments(w http.ResponseWriter, r *http.Request, group bool) error {
	f, err := sourceFilter(r)
	if err != nil {
		return err
	}
	q := "enrollments/" + r.Header.Get(HeaderSource)
	if group {
		q = "enrollmentGroups/" + r.Header.Get(HeaderSource)
	}
	after, size, err := h.pageRequest(w, r, strings.ToLower(q))
	if err != nil {
		return err
	}
	if group {
		p, err := h.dir.Groups(r.Context(), after, size, f)
		if err != nil {
			return err
		}
		out := make([]*enrollment.Group, len(p.Items))
		for i, g := range p.Items {
			out[i] = publicGroup(g, p.Sources[i])
		}
		h.writePage(w, strings.ToLower(q), "EnrollmentGroup", p.Next, size, out)
		return nil
	}
	p, err := h.dir.Individuals(r.Context(), after, size, f)
	if err != nil {
		return err
	}
	out := make([]*enrollment.Individual, len(p.Items))
	for i, e := range p.Items {
		out[i] = publicIndividual(e, p.Sources[i])
	}
	h.writePage(w, strings.ToLower(q), "Enrollment", p.Next, size, out)
	return nil
}

// maxScan bounds the records one page of a group's registrations reads, so a
// small group among millions of records answers in bounded time (with a
// shorter page and a continuation).
const maxScan = 20000

func (h *Handler) queryRegistrations(w http.ResponseWriter, r *http.Request, group string) error {
	q := "registrations/" + strings.ToLower(group)
	after, size, err := h.pageRequest(w, r, q)
	if err != nil {
		return err
	}
	out := []*DeviceRegistrationState{}
	next := ""
	err = h.cfg.Store.View(r.Context(), func(tx store.Tx) error {
		out, next = out[:0], ""
		cursor, scanned := after, 0
		for len(out) < size && scanned < maxScan {
			recs, err := tx.Records(h.scope, cursor, min(1000, maxScan-scanned))
			if err != nil {
				return err
			}
			for _, rec := range recs {
				scanned++
				cursor = rec.RegistrationID
				if group == "" || strings.EqualFold(rec.EnrollmentGroupID, group) {
					out = append(out, stateOf(rec))
					if len(out) == size {
						break
					}
				}
			}
			if len(recs) == 0 {
				return nil // the end: no continuation
			}
		}
		// Is there anything after cursor? One record of look-ahead.
		more, err := tx.Records(h.scope, cursor, 1)
		if err != nil {
			return err
		}
		if len(more) > 0 {
			next = cursor
		}
		return nil
	})
	if err != nil {
		return err
	}
	h.writePage(w, q, "DeviceRegistration", next, size, out)
	return nil
}

func (h *Handler) getRegistration(w http.ResponseWriter, r *http.Request, id string) error {
	var rec *store.Record
	err := h.cfg.Store.View(r.Context(), func(tx store.Tx) error {
		var err error
		rec, err = tx.Record(h.scope, dpsapi.NormalizeRegistrationID(id))
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return fail(CodeRegistrationNotFound, "No registration record for "+strconv.Quote(id))
	} else if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, stateOf(rec))
	return nil
}

func (h *Handler) deleteRegistration(w http.ResponseWriter, r *http.Request, id string) error {
	ifMatch := r.Header.Get("If-Match")
	key := dpsapi.NormalizeRegistrationID(id)
	if h.cfg.DeleteRegistration != nil {
		return h.deleteRegistrationAndAccess(w, r, id, key, ifMatch)
	}
	err := h.cfg.Store.Update(r.Context(), func(tx store.Tx) error {
		rec, err := tx.Record(h.scope, key)
		if errors.Is(err, store.ErrNotFound) {
			return fail(CodeRegistrationNotFound, "No registration record for "+strconv.Quote(id))
		} else if err != nil {
			return err
		}
		if ifMatch != "" && !directory.ETagMatches(ifMatch, rec.ETag) {
			return fail(dpsapi.CodePreconditionFailed, "The registration record has etag "+rec.ETag+", not "+ifMatch)
		}
		return tx.DeleteRecord(h.scope, key, "")
	})
	if err != nil {
		return err
	}
	h.log.Info("registration record deleted", "registrationId", key)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteRegistrationAndAccess checks the record and If-Match here, then has
// the registration service delete the record and the hub identity, with the
// record's etag so that a re-registration in between is not lost.
func (h *Handler) deleteRegistrationAndAccess(w http.ResponseWriter, r *http.Request, id, key, ifMatch string) error {
	var rec *store.Record
	err := h.cfg.Store.View(r.Context(), func(tx store.Tx) error {
		var err error
		rec, err = tx.Record(h.scope, key)
		return err
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fail(CodeRegistrationNotFound, "No registration record for "+strconv.Quote(id))
	case err != nil:
		return err
	case ifMatch != "" && !directory.ETagMatches(ifMatch, rec.ETag):
		return fail(dpsapi.CodePreconditionFailed, "The registration record has etag "+rec.ETag+", not "+ifMatch)
	}
	err = h.cfg.DeleteRegistration(r.Context(), key, rec.ETag)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fail(CodeRegistrationNotFound, "No registration record for "+strconv.Quote(id))
	case errors.Is(err, store.ErrConflict):
		return fail(dpsapi.CodePreconditionFailed, "The registration record changed while it was being deleted; read it again")
	case err != nil:
		return err
	}
	h.log.Info("registration record deleted, and the device removed from its hub", "registrationId", key, "hub", rec.AssignedHub)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- edgeprov additions ---

func (h *Handler) status(w http.ResponseWriter, r *http.Request) error {
	if h.cfg.Status == nil {
		return fail(CodeRouteNotFound, "No status is available.")
	}
	writeJSON(w, http.StatusOK, h.cfg.Status(r.Context()))
	return nil
}

func (h *Handler) listHubs(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"hubs": h.cfg.Hubs})
	return nil
}

func (h *Handler) hub(name string) (string, error) {
	for _, n := range h.cfg.Hubs {
		if strings.EqualFold(n, name) {
			return n, nil
		}
	}
	return "", fail(CodeRouteNotFound, "No linked hub "+strconv.Quote(name)+" keeps its registry in edgeprov (local driver).")
}

func (h *Handler) queryDevices(w http.ResponseWriter, r *http.Request, hubName string) error {
	hub, err := h.hub(hubName)
	if err != nil {
		return err
	}
	q := "devices/" + hub
	after, size, err := h.pageRequest(w, r, q)
	if err != nil {
		return err
	}
	var ids []*store.Identity
	err = h.cfg.Store.View(r.Context(), func(tx store.Tx) error {
		var err error
		ids, err = tx.Identities(hub, after, size+1)
		return err
	})
	if err != nil {
		return err
	}
	next := ""
	if len(ids) > size {
		ids = ids[:size]
		next = ids[size-1].DeviceID
	}
	if ids == nil {
		ids = []*store.Identity{}
	}
	for _, id := range ids {
		id.SealedKey = nil // sealed or not, keys never leave the daemon
	}
	h.writePage(w, q, "DeviceIdentity", next, size, ids)
	return nil
}

func (h *Handler) getDevice(w http.ResponseWriter, r *http.Request, hubName, id string) error {
	hub, err := h.hub(hubName)
	if err != nil {
		return err
	}
	var d *store.Identity
	err = h.cfg.Store.View(r.Context(), func(tx store.Tx) error {
		var err error
		d, err = tx.Identity(hub, id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return fail(CodeRouteNotFound, "No device "+strconv.Quote(id)+" on "+hub)
	} else if err != nil {
		return err
	}
	d.SealedKey = nil
	writeJSON(w, http.StatusOK, d)
	return nil
}

func newTrackingID() string {
	var b [16]byte
	rand.Read(b[:])
	x := hex.EncodeToString(b[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}
