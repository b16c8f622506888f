package e2e_test

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/testenv/e2e"
	"github.com/edgeprov/edgeprov/testenv/nodesdk"
)

func newServiceDaemon(t *testing.T) *e2e.Daemon {
	d := e2e.NewDaemon(t, e2e.Options{Catalog: catalog, Service: true, CatalogFiles: map[string]string{
		"group.key":   b64(groupKey) + "\n",
		"blocked.key": b64(sas.DeriveDeviceKey(groupKey, "line-blocked")) + "\n",
	}})
	d.Start(t)
	return d
}

// runService runs ops with the stock Node service SDK against d, as a client
// that only knows HostName=localhost (the port goes through Node's global agent).
func runService(t *testing.T, d *e2e.Daemon, ops ...nodesdk.ServiceOp) []nodesdk.OpResult {
	t.Helper()
	port, err := strconv.Atoi(d.ServicePort())
	if err != nil {
		t.Fatal(err)
	}
	res, err := nodesdk.RunService(t, t.Context(), d.CACert, nodesdk.ServiceArgs{Host: "localhost", Port: port,
		ConnectionString: d.ConnectionString(t, "localhost"), Ops: ops})
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK {
		t.Fatalf("service.js run failed: %+v\n%s", res.Error, res.Stderr)
	}
	return res.Results
}

func mustOK(t *testing.T, r nodesdk.OpResult) {
	t.Helper()
	if !r.OK {
		t.Fatalf("%s failed: %+v", r.Op, r.Error)
	}
}

func mustStatus(t *testing.T, r nodesdk.OpResult, status int) {
	t.Helper()
	if r.OK || r.Error == nil || r.Error.StatusCode != status {
		t.Fatalf("%s: ok=%v error=%+v, want HTTP %d", r.Op, r.OK, r.Error, status)
	}
}

type enrollmentJSON struct {
	RegistrationID     string `json:"registrationId"`
	EnrollmentGroupID  string `json:"enrollmentGroupId"`
	ETag               string `json:"etag"`
	ProvisioningStatus string `json:"provisioningStatus"`
	Attestation        struct {
		Type         string `json:"type"`
		SymmetricKey *struct {
			PrimaryKey   string `json:"primaryKey"`
			SecondaryKey string `json:"secondaryKey"`
		} `json:"symmetricKey"`
	} `json:"attestation"`
}

func decode(t *testing.T, r nodesdk.OpResult) enrollmentJSON {
	t.Helper()
	mustOK(t, r)
	var e enrollmentJSON
	if err := r.Decode(&e); err != nil {
		t.Fatal(err)
	}
	return e
}

func symEnrollment(id, key string) map[string]any {
	return map[string]any{"registrationId": id, "attestation": map[string]any{"type": "symmetricKey",
		"symmetricKey": map[string]any{"primaryKey": key, "secondaryKey": key}}}
}

// TestNodeServiceSDKEnrollments: create, get, update with the etag, a stale
// etag refused, attestation mechanism, delete, for both kinds, with the stock
// azure-iot-provisioning-service client.
func TestNodeServiceSDKEnrollments(t *testing.T) {
	t.Parallel()
	nodesdk.Ensure(t)
	d := newServiceDaemon(t)
	key := b64([]byte("node service sdk test key 32 byt"))

	// Individual enrollments.
	res := runService(t, d,
		nodesdk.ServiceOp{Op: nodesdk.OpCreateOrUpdateIndividualEnrollment, Arg: symEnrollment("Node-Dev-1", key)},
		nodesdk.ServiceOp{Op: nodesdk.OpGetIndividualEnrollment, Arg: "node-dev-1"},
		nodesdk.ServiceOp{Op: nodesdk.OpGetIndividualEnrollmentAttestationMechanism, Arg: "node-dev-1"},
		nodesdk.ServiceOp{Op: nodesdk.OpCreateOrUpdateIndividualEnrollment, Arg: symEnrollment("node-dev-1", key)}, // exists, no etag
		nodesdk.ServiceOp{Op: nodesdk.OpGetIndividualEnrollment, Arg: "solo-01"},                                   // a catalog entry
		nodesdk.ServiceOp{Op: nodesdk.OpDeleteIndividualEnrollment, Arg: "solo-01"},
	)
	created, got := decode(t, res[0]), decode(t, res[1])
	if created.ETag == "" || !strings.HasPrefix(created.ETag, `"`) || got.ETag != created.ETag || got.RegistrationID != "Node-Dev-1" {
		t.Fatalf("created %+v, got %+v", created, got)
	}
	if got.Attestation.SymmetricKey == nil || got.Attestation.SymmetricKey.PrimaryKey != "" {
		t.Fatalf("GET shows keys or no symmetricKey object: %s", res[1].Result)
	}
	var mech struct {
		Type         string
		SymmetricKey struct{ PrimaryKey, SecondaryKey string }
	}
	mustOK(t, res[2])
	if err := res[2].Decode(&mech); err != nil || mech.Type != "symmetricKey" || mech.SymmetricKey.PrimaryKey != key {
		t.Fatalf("attestation mechanism: %s %v", res[2].Result, err)
	}
	mustStatus(t, res[3], 409)
	if cat := decode(t, res[4]); cat.RegistrationID != "solo-01" || cat.ETag == "" {
		t.Fatalf("catalog entry: %s", res[4].Result)
	}
	mustStatus(t, res[5], 409)
	if !strings.Contains(res[5].Error.ResponseBody, "enrollments.yaml") {
		t.Fatalf("the catalog refusal does not name the file: %s", res[5].Error.ResponseBody)
	}

	// Get-modify-put with the etag; then the old etag is stale.
	update := symEnrollment("node-dev-1", "")
	update["attestation"] = map[string]any{"type": "symmetricKey", "symmetricKey": map[string]any{}}
	update["provisioningStatus"] = "disabled"
	update["etag"] = created.ETag
	stale := symEnrollment("node-dev-1", key)
	stale["etag"] = created.ETag
	res = runService(t, d,
		nodesdk.ServiceOp{Op: nodesdk.OpCreateOrUpdateIndividualEnrollment, Arg: update},
		nodesdk.ServiceOp{Op: nodesdk.OpCreateOrUpdateIndividualEnrollment, Arg: stale},
		nodesdk.ServiceOp{Op: nodesdk.OpGetIndividualEnrollmentAttestationMechanism, Arg: "node-dev-1"},
		nodesdk.ServiceOp{Op: nodesdk.OpDeleteIndividualEnrollment, Arg: "node-dev-1", ETag: created.ETag},
	)
	updated := decode(t, res[0])
	if updated.ETag == created.ETag || updated.ProvisioningStatus != "disabled" {
		t.Fatalf("update: %+v", updated)
	}
	mustStatus(t, res[1], 412)
	mustOK(t, res[2])
	if !strings.Contains(string(res[2].Result), key) {
		t.Fatalf("keys lost by an update without keys: %s", res[2].Result)
	}
	mustStatus(t, res[3], 412)
	res = runService(t, d,
		nodesdk.ServiceOp{Op: nodesdk.OpDeleteIndividualEnrollment, Arg: "node-dev-1", ETag: updated.ETag},
		nodesdk.ServiceOp{Op: nodesdk.OpGetIndividualEnrollment, Arg: "node-dev-1"},
	)
	mustOK(t, res[0])
	mustStatus(t, res[1], 404)

	// Enrollment groups (the SDK reads their attestation mechanism through
	// /enrollmentgroups/, lower-case g).
	group := map[string]any{"enrollmentGroupId": "node-grp", "attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]any{}}}
	res = runService(t, d,
		nodesdk.ServiceOp{Op: nodesdk.OpCreateOrUpdateEnrollmentGroup, Arg: group},
		nodesdk.ServiceOp{Op: nodesdk.OpGetEnrollmentGroup, Arg: "node-grp"},
		nodesdk.ServiceOp{Op: nodesdk.OpGetEnrollmentGroupAttestationMechanism, Arg: "node-grp"},
		nodesdk.ServiceOp{Op: nodesdk.OpCreateOrUpdateEnrollmentGroup, Arg: group},
		nodesdk.ServiceOp{Op: nodesdk.OpCreateEnrollmentGroupQuery, Arg: map[string]any{"query": "*"}},
	)
	g := decode(t, res[0])
	if g.EnrollmentGroupID != "node-grp" || g.ETag == "" || decode(t, res[1]).ETag != g.ETag {
		t.Fatalf("group: %s / %s", res[0].Result, res[1].Result)
	}
	mustOK(t, res[2])
	if err := res[2].Decode(&mech); err != nil || len(mech.SymmetricKey.PrimaryKey) != 88 {
		t.Fatalf("generated group keys: %s", res[2].Result)
	}
	mustStatus(t, res[3], 409)
	mustOK(t, res[4])
	if len(res[4].Items) != 2 { // the catalog's "line" and node-grp
		t.Fatalf("group query: %d items", len(res[4].Items))
	}
	groupUpdate := map[string]any{"enrollmentGroupId": "node-grp", "etag": g.ETag, "provisioningStatus": "disabled",
		"attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]any{}}}
	res = runService(t, d,
		nodesdk.ServiceOp{Op: nodesdk.OpCreateOrUpdateEnrollmentGroup, Arg: groupUpdate},
		nodesdk.ServiceOp{Op: nodesdk.OpCreateOrUpdateEnrollmentGroup, Arg: groupUpdate}, // now stale
		nodesdk.ServiceOp{Op: nodesdk.OpDeleteEnrollmentGroup, Arg: "node-grp"},
		nodesdk.ServiceOp{Op: nodesdk.OpGetEnrollmentGroup, Arg: "node-grp"},
	)
	if u := decode(t, res[0]); u.ETag == g.ETag || u.ProvisioningStatus != "disabled" {
		t.Fatalf("group update: %s", res[0].Result)
	}
	mustStatus(t, res[1], 412)
	mustOK(t, res[2])
	mustStatus(t, res[3], 404)
}

// TestNodeServiceSDKBulkAndQueries: bulk create of more than DPS's 10 items,
// queries paged to the end (no continuation on the last page), bulk delete.
func TestNodeServiceSDKBulkAndQueries(t *testing.T) {
	t.Parallel()
	nodesdk.Ensure(t)
	d := newServiceDaemon(t)
	key := b64([]byte("node service sdk bulk key 32 byt"))
	var items, deletes []any
	var want []string
	for i := range 25 {
		id := fmt.Sprintf("bulk-%03d", i)
		items = append(items, symEnrollment(id, key))
		deletes = append(deletes, map[string]any{"registrationId": id})
		want = append(want, id)
	}
	want = append(want, "line-blocked", "solo-01") // the catalog's, listed too
	sort.Strings(want)
	res := runService(t, d,
		nodesdk.ServiceOp{Op: nodesdk.OpRunBulkEnrollmentOperation, Arg: map[string]any{"mode": "create", "enrollments": items}},
		nodesdk.ServiceOp{Op: nodesdk.OpRunBulkEnrollmentOperation, Arg: map[string]any{"mode": "create", "enrollments": items[:2]}},
		nodesdk.ServiceOp{Op: nodesdk.OpCreateIndividualEnrollmentQuery, Arg: map[string]any{"query": "*"}, PageSize: 4},
		nodesdk.ServiceOp{Op: nodesdk.OpCreateIndividualEnrollmentQuery, Arg: map[string]any{"query": "SELECT * FROM enrollments"}},
	)
	var bulk struct {
		IsSuccessful bool
		Errors       []struct {
			RegistrationID string
			ErrorCode      int
		}
	}
	mustOK(t, res[0])
	if err := res[0].Decode(&bulk); err != nil || !bulk.IsSuccessful || len(bulk.Errors) != 0 {
		t.Fatalf("bulk create: %s", res[0].Result)
	}
	mustOK(t, res[1])
	if err := res[1].Decode(&bulk); err != nil || bulk.IsSuccessful || len(bulk.Errors) != 2 || bulk.Errors[0].ErrorCode != 409001 {
		t.Fatalf("bulk create of existing ones: %s", res[1].Result)
	}
	mustOK(t, res[2])
	if res[2].Pages != 7 {
		t.Fatalf("paged query: %d pages, want 7 of at most 4", res[2].Pages)
	}
	var got []string
	for _, raw := range res[2].Items {
		var e enrollmentJSON
		json.Unmarshal(raw, &e)
		if e.Attestation.SymmetricKey != nil && e.Attestation.SymmetricKey.PrimaryKey != "" {
			t.Fatalf("query result shows keys: %s", raw)
		}
		got = append(got, e.RegistrationID)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("query returned\n%v\nwant\n%v", got, want)
	}
	mustOK(t, res[3])
	if res[3].Pages != 1 || len(res[3].Items) != len(want) {
		t.Fatalf("unpaged query: %d pages, %d items", res[3].Pages, len(res[3].Items))
	}

	res = runService(t, d,
		nodesdk.ServiceOp{Op: nodesdk.OpRunBulkEnrollmentOperation, Arg: map[string]any{"mode": "delete", "enrollments": deletes}},
		nodesdk.ServiceOp{Op: nodesdk.OpCreateIndividualEnrollmentQuery, Arg: map[string]any{"query": "*"}, PageSize: 10},
	)
	mustOK(t, res[0])
	if err := res[0].Decode(&bulk); err != nil || !bulk.IsSuccessful {
		t.Fatalf("bulk delete: %s", res[0].Result)
	}
	mustOK(t, res[1])
	if len(res[1].Items) != 2 || res[1].Pages != 1 {
		t.Fatalf("after bulk delete: %d items in %d pages", len(res[1].Items), res[1].Pages)
	}
}

// TestNodeServiceSDKRegistrationStates: a device registers with the stock
// device SDK; the service SDK reads its registration state (and through the
// group query), deletes it with a stale and then the right etag.
func TestNodeServiceSDKRegistrationStates(t *testing.T) {
	t.Parallel()
	nodesdk.Ensure(t)
	d := newServiceDaemon(t)
	port, err := strconv.Atoi(d.Port())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"line-svc-1", "line-svc-2"} {
		dev, err := nodesdk.RunDevice(t, t.Context(), d.CACert, nodesdk.DeviceArgs{Host: "localhost", Port: port, IDScope: d.IDScope,
			RegistrationID: id, Transport: nodesdk.HTTP, SymmetricKey: b64(sas.DeriveDeviceKey(groupKey, id))})
		if err != nil || !dev.OK {
			t.Fatalf("device registration of %s: %v %+v", id, err, dev.Error)
		}
	}
	res := runService(t, d,
		nodesdk.ServiceOp{Op: nodesdk.OpGetDeviceRegistrationState, Arg: "line-svc-1"},
		nodesdk.ServiceOp{Op: nodesdk.OpCreateEnrollmentGroupDeviceRegistrationStateQuery, Arg: map[string]any{"query": "*"}, EnrollmentGroupID: "line", PageSize: 1},
		nodesdk.ServiceOp{Op: nodesdk.OpCreateEnrollmentGroupDeviceRegistrationStateQuery, Arg: map[string]any{"query": "*"}, EnrollmentGroupID: "other"},
		nodesdk.ServiceOp{Op: nodesdk.OpDeleteDeviceRegistrationState, Arg: "line-svc-1", ETag: "c3RhbGU="},
	)
	var state struct{ RegistrationID, AssignedHub, DeviceID, Status, Substatus, ETag string }
	mustOK(t, res[0])
	if err := res[0].Decode(&state); err != nil || state.Status != "assigned" || state.DeviceID != "line-svc-1" ||
		!strings.HasSuffix(state.AssignedHub, ".e2e.local") || state.ETag == "" || state.Substatus != "initialAssignment" {
		t.Fatalf("registration state: %s", res[0].Result)
	}
	mustOK(t, res[1])
	if len(res[1].Items) != 2 || res[1].Pages != 2 {
		t.Fatalf("group registration query: %d items in %d pages", len(res[1].Items), res[1].Pages)
	}
	mustOK(t, res[2])
	if len(res[2].Items) != 0 {
		t.Fatalf("another group's query: %d items", len(res[2].Items))
	}
	mustStatus(t, res[3], 412)
	res = runService(t, d,
		nodesdk.ServiceOp{Op: nodesdk.OpDeleteDeviceRegistrationState, Arg: "line-svc-1", ETag: state.ETag},
		nodesdk.ServiceOp{Op: nodesdk.OpGetDeviceRegistrationState, Arg: "line-svc-1"},
		nodesdk.ServiceOp{Op: nodesdk.OpGetDeviceRegistrationState, Arg: "line-svc-2"},
	)
	mustOK(t, res[0])
	mustStatus(t, res[1], 404)
	mustOK(t, res[2])
}

// An API-made enrollment provisions a device through the stock device SDK.
func TestAPIEnrollmentProvisions(t *testing.T) {
	t.Parallel()
	nodesdk.Ensure(t)
	d := newServiceDaemon(t)
	key := b64([]byte("api-made enrollment key 32 bytes"))
	e := symEnrollment("api-dev-7", key)
	e["iotHubs"] = []string{"hub-a.e2e.local"}
	e["allocationPolicy"] = "static"
	mustOK(t, runService(t, d, nodesdk.ServiceOp{Op: nodesdk.OpCreateOrUpdateIndividualEnrollment, Arg: e})[0])
	port, _ := strconv.Atoi(d.Port())
	dev, err := nodesdk.RunDevice(t, t.Context(), d.CACert, nodesdk.DeviceArgs{Host: "localhost", Port: port, IDScope: d.IDScope,
		RegistrationID: "api-dev-7", Transport: nodesdk.HTTP, SymmetricKey: key})
	if err != nil || !dev.OK || dev.Result.AssignedHub != "hub-a.e2e.local" {
		t.Fatalf("device of an API-made enrollment: %v %+v %+v", err, dev.Result, dev.Error)
	}
}
