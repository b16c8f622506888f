'use strict';
// Plumbing shared by device.js and service.js.
//
// Contract (see testenv/nodesdk): a script takes exactly one argument, a JSON
// object, and prints exactly one JSON line on stdout, then exits 0 -- whether
// the SDK call succeeded or not. A non-zero exit (2) means the harness itself
// was misused or broken (bad argument, unknown op, exception in this code);
// the reason is on stderr.

const path = require('path');

const DEFAULT_TIMEOUT_MS = 60000;

const script = path.basename(process.argv[1] || 'harness');

// stdout carries the single result line; whatever the SDKs or their
// dependencies log goes to stderr instead.
console.log = console.error;
console.info = console.error;
console.debug = console.error;

let emitted = false;

// harnessError reports a bug in the harness or its caller and exits 2.
function harnessError(message) {
  process.stderr.write(`${script}: harness error: ${message}\n`);
  process.exit(2);
}

// emit prints obj as the one stdout line and exits 0 once it is flushed.
// Later calls are ignored (e.g. an SDK callback firing after the timeout).
function emit(obj) {
  if (emitted) {
    return;
  }
  emitted = true;
  let line;
  try {
    line = JSON.stringify(obj);
  } catch (e) {
    harnessError(`cannot serialise result: ${e.message}`);
  }
  process.stdout.write(line + '\n', () => process.exit(0));
}

// readArgs parses argv[2] as a JSON object.
function readArgs() {
  if (process.argv.length !== 3) {
    harnessError(`usage: node ${script} '<json>' (got ${process.argv.length - 2} arguments)`);
  }
  let args;
  try {
    args = JSON.parse(process.argv[2]);
  } catch (e) {
    harnessError(`argument is not JSON: ${e.message}`);
  }
  if (args === null || typeof args !== 'object' || Array.isArray(args)) {
    harnessError('argument must be a JSON object');
  }
  return args;
}

// startTimeout makes the script give up after timeoutMs (default 60 s):
// onTimeout() returns the object to print; it should report ok:false.
function startTimeout(timeoutMs, onTimeout) {
  const ms = timeoutMs === undefined ? DEFAULT_TIMEOUT_MS : timeoutMs;
  if (typeof ms !== 'number' || !(ms > 0)) {
    harnessError(`timeoutMs must be a positive number, got ${JSON.stringify(timeoutMs)}`);
  }
  const timer = setTimeout(() => emit(onTimeout(ms)), ms);
  timer.unref();
}

// timeoutError is the error object printed when startTimeout fires.
function timeoutError(ms) {
  return { name: 'HarnessTimeout', message: `${script}: no result within ${ms} ms` };
}

// setHttpsPort points every request that goes through Node's global HTTPS
// agent (which is what the Azure SDKs' HTTP code uses) at port instead of
// 443. The SDKs splice a "host:port" into the host name, so this is the only
// way to reach another port without modifying them (protocol.md §9.1).
function setHttpsPort(port) {
  if (port === undefined || port === null || port === 0) {
    return;
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    harnessError(`port must be an integer in 1..65535, got ${JSON.stringify(port)}`);
  }
  require('https').globalAgent.defaultPort = port;
}

// describeError turns anything the SDKs hand to a callback into
// {name, message, code?, statusCode?, responseBody?, cause?}.
//
//   - HTTP errors (azure-iot-http-base RestApiClient.translateError) carry
//     err.response (the IncomingMessage) and err.responseBody (raw text).
//   - MQTT errors (azure-iot-provisioning-device translateError) carry
//     err.transportObject = {topic, payload} and err.result (parsed body);
//     the status is only in the topic "$dps/registrations/res/<status>/?...".
//   - DeviceRegistrationFailedError (a 2xx body with status "failed") carries
//     err.result, the parsed operation status; it has no status code.
//   - mqtt-base wraps mqtt.js/socket errors and keeps them in err.transportError.
function describeError(err) {
  if (!(err instanceof Object)) {
    return { name: 'Error', message: String(err) };
  }
  const out = {
    name: err.name || (err.constructor && err.constructor.name) || 'Error',
    message: err.message === undefined ? String(err) : String(err.message),
  };
  if (err.code !== undefined && err.code !== null) {
    out.code = String(err.code);
  }
  if (err.response && typeof err.response.statusCode === 'number') {
    out.statusCode = err.response.statusCode;
  } else if (err.transportObject && typeof err.transportObject.statusCode === 'number') {
    out.statusCode = err.transportObject.statusCode;
  } else if (err.transportObject && typeof err.transportObject.topic === 'string') {
    const m = /^\$dps\/registrations\/res\/(\d+)\//.exec(err.transportObject.topic);
    if (m) {
      out.statusCode = Number(m[1]);
    }
  }
  if (typeof err.responseBody === 'string') {
    out.responseBody = err.responseBody;
  } else if (err.result !== undefined) {
    out.responseBody = typeof err.result === 'string' ? err.result : JSON.stringify(err.result);
  }
  const cause = err.transportError || err.cause;
  if (cause instanceof Object && cause !== err) {
    out.cause = {
      name: cause.name || 'Error',
      message: String(cause.message === undefined ? cause : cause.message),
    };
    if (cause.code !== undefined && cause.code !== null) {
      out.cause.code = String(cause.code);
    }
  }
  return out;
}

// Until sdkStarted() is called, an exception nobody caught is a harness bug
// (exit 2). After it, it is what the SDK did with the server's answer (e.g.
// the HTTP transport throws a TypeError on a non-JSON poll response,
// protocol.md §2.7): the failure handler given to sdkStarted turns it into
// the printed result, with error.uncaught = true and the stack on stderr.
let uncaughtHandler = null;

function sdkStarted(onFailure) {
  uncaughtHandler = onFailure;
}

function onUncaught(kind, err) {
  if (uncaughtHandler === null) {
    harnessError(`${kind}: ${err && err.stack ? err.stack : err}`);
  }
  process.stderr.write(`${script}: ${kind} inside the SDK: ${err && err.stack ? err.stack : err}\n`);
  emit(uncaughtHandler(Object.assign(describeError(err), { uncaught: true })));
}

process.on('uncaughtException', (err) => onUncaught('uncaught exception', err));
process.on('unhandledRejection', (err) => onUncaught('unhandled rejection', err));

module.exports = {
  describeError,
  emit,
  harnessError,
  readArgs,
  sdkStarted,
  setHttpsPort,
  startTimeout,
  timeoutError,
};
