'use strict';
// service.js runs a list of stock ProvisioningServiceClient calls in order.
//
// Argument (one JSON object):
//   {
//     "host": "localhost",     // optional; if given it must equal the connection string's HostName
//     "port": 8443,            // optional; via https.globalAgent.defaultPort (the SDK is fixed to 443)
//     "connectionString": "HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=<b64>",
//     "ops": [ {"op": "<ProvisioningServiceClient method>", "arg": ..., ...}, ... ],
//     "timeoutMs": 60000       // optional overall timeout
//   }
//
// Ops and their fields:
//   createOrUpdateIndividualEnrollment       arg: enrollment object (its etag, if any, becomes If-Match)
//   getIndividualEnrollment                  arg: registration ID
//   deleteIndividualEnrollment               arg: registration ID or enrollment object; etag?: If-Match
//   getIndividualEnrollmentAttestationMechanism arg: registration ID
//   runBulkEnrollmentOperation               arg: {mode, enrollments: [...]}
//   createOrUpdateEnrollmentGroup            arg: group object
//   getEnrollmentGroup                       arg: group ID
//   deleteEnrollmentGroup                    arg: group ID or group object; etag?
//   getEnrollmentGroupAttestationMechanism   arg: group ID
//   getDeviceRegistrationState               arg: registration ID
//   deleteDeviceRegistrationState            arg: registration ID or state object; etag?
//   createIndividualEnrollmentQuery          arg: query spec, e.g. {"query": "*"}; pageSize?
//   createEnrollmentGroupQuery               arg: query spec; pageSize?
//   createEnrollmentGroupDeviceRegistrationStateQuery arg: query spec; enrollmentGroupId; pageSize?
//   (queries also take maxPages?, default 1000, a guard against a server that never ends paging)
//
// Output (one line): {"ok":true,"results":[r, ...]}, one r per op, in order:
//   {"op", "ok":true, "statusCode", "result"}                  plain calls (no result for deletes)
//   {"op", "ok":true, "statusCode", "items":[...], "pages":n}  queries, drained page by page
//   {"op", "ok":false, "error":{name,message,code?,statusCode?,responseBody?,cause?}}
// A failing op does not stop the list. Top-level "ok":false (with "error"
// and the "results" so far) only when the whole run fails: the timeout, an
// exception thrown inside the SDK, or a client that cannot be built from the
// connection string.

const h = require('./harness');

const DEFAULT_MAX_PAGES = 1000;

const args = h.readArgs();

if (typeof args.connectionString !== 'string' || args.connectionString === '') {
  h.harnessError('"connectionString" must be a non-empty string');
}
if (!Array.isArray(args.ops)) {
  h.harnessError('"ops" must be an array');
}
if (args.host !== undefined) {
  const m = /(?:^|;)HostName=([^;]*)/.exec(args.connectionString);
  if (!m || m[1] !== args.host) {
    h.harnessError(`"host" ${JSON.stringify(args.host)} differs from the connection string's HostName ` +
      `${JSON.stringify(m ? m[1] : null)} (give the bare host there; the port goes in "port")`);
  }
}
h.setHttpsPort(args.port);

// The methods that take (arg, callback(err, result, response)).
const plainOps = new Set([
  'createOrUpdateIndividualEnrollment',
  'getIndividualEnrollment',
  'getIndividualEnrollmentAttestationMechanism',
  'runBulkEnrollmentOperation',
  'createOrUpdateEnrollmentGroup',
  'getEnrollmentGroup',
  'getEnrollmentGroupAttestationMechanism',
  'getDeviceRegistrationState',
]);
// The methods that take (idOrObject, [etag,] callback(err)).
const deleteOps = new Set([
  'deleteIndividualEnrollment',
  'deleteEnrollmentGroup',
  'deleteDeviceRegistrationState',
]);
// The methods that return a Query.
const queryOps = new Set([
  'createIndividualEnrollmentQuery',
  'createEnrollmentGroupQuery',
  'createEnrollmentGroupDeviceRegistrationStateQuery',
]);

args.ops.forEach((o, i) => {
  if (o === null || typeof o !== 'object' || typeof o.op !== 'string') {
    h.harnessError(`ops[${i}] must be an object with a string "op"`);
  }
  if (!plainOps.has(o.op) && !deleteOps.has(o.op) && !queryOps.has(o.op)) {
    h.harnessError(`ops[${i}]: unknown op ${JSON.stringify(o.op)}`);
  }
  if (o.etag !== undefined && (!deleteOps.has(o.op) || typeof o.etag !== 'string')) {
    h.harnessError(`ops[${i}]: "etag" is a string and only for delete ops`);
  }
  for (const f of ['pageSize', 'maxPages']) {
    if (o[f] !== undefined && (!queryOps.has(o.op) || !Number.isInteger(o[f]) || o[f] < 1)) {
      h.harnessError(`ops[${i}]: "${f}" is a positive integer and only for query ops`);
    }
  }
  if (o.enrollmentGroupId !== undefined && o.op !== 'createEnrollmentGroupDeviceRegistrationStateQuery') {
    h.harnessError(`ops[${i}]: "enrollmentGroupId" is only for createEnrollmentGroupDeviceRegistrationStateQuery`);
  }
});

const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');

const results = [];
const fail = (error) => ({ ok: false, error, results });
h.startTimeout(args.timeoutMs, (ms) => fail(h.timeoutError(ms)));

let client;
try {
  client = ProvisioningServiceClient.fromConnectionString(args.connectionString);
} catch (e) {
  h.emit(fail(h.describeError(e)));
  return;
}

const statusOf = (response) => (response && typeof response.statusCode === 'number' ? response.statusCode : undefined);

// Every method is called with a callback: runBulkEnrollmentOperation's
// promise form never settles (it only calls back when the caller passed a
// callback).
function runPlain(o, done) {
  client[o.op](o.arg, (err, result, response) => {
    if (err) {
      done({ op: o.op, ok: false, error: h.describeError(err) });
    } else {
      done({ op: o.op, ok: true, statusCode: statusOf(response), result: result === undefined ? null : result });
    }
  });
}

function runDelete(o, done) {
  const cb = (err) => {
    if (err) {
      done({ op: o.op, ok: false, error: h.describeError(err) });
    } else {
      done({ op: o.op, ok: true });
    }
  };
  if (o.etag !== undefined) {
    client[o.op](o.arg, o.etag, cb);
  } else {
    client[o.op](o.arg, cb);
  }
}

function runQuery(o, done) {
  const query = o.op === 'createEnrollmentGroupDeviceRegistrationStateQuery' ?
    client[o.op](o.arg, o.enrollmentGroupId, o.pageSize) :
    client[o.op](o.arg, o.pageSize);
  const maxPages = o.maxPages === undefined ? DEFAULT_MAX_PAGES : o.maxPages;
  const items = [];
  let pages = 0;
  let statusCode;
  const nextPage = () => {
    query.next((err, page, response) => {
      if (err) {
        done({ op: o.op, ok: false, error: h.describeError(err), items, pages });
        return;
      }
      pages++;
      statusCode = statusOf(response);
      if (Array.isArray(page)) {
        items.push(...page);
      } else {
        // Not a JSON array (e.g. no application/json content type): keep it
        // visible rather than dropping it.
        items.push(page);
      }
      if (!query.hasMoreResults) {
        done({ op: o.op, ok: true, statusCode, items, pages });
      } else if (pages >= maxPages) {
        done({
          op: o.op,
          ok: false,
          error: { name: 'HarnessMaxPages', message: `still more results after ${pages} pages` },
          items,
          pages,
        });
      } else {
        nextPage();
      }
    });
  };
  nextPage();
}

h.sdkStarted(fail);

function runOp(i) {
  if (i === args.ops.length) {
    h.emit({ ok: true, results });
    return;
  }
  const o = args.ops[i];
  const done = (r) => {
    results.push(r);
    runOp(i + 1);
  };
  try {
    if (plainOps.has(o.op)) {
      runPlain(o, done);
    } else if (deleteOps.has(o.op)) {
      runDelete(o, done);
    } else {
      runQuery(o, done);
    }
  } catch (e) {
    // The SDK validates arguments synchronously (e.g. a missing ID).
    done({ op: o.op, ok: false, error: h.describeError(e) });
  }
}

runOp(0);
