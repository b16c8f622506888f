'use strict';
// device.js registers one device with the stock Azure Node provisioning SDK.
//
// Argument (one JSON object):
//   {
//     "host": "localhost",              // DNS name the server certificate is valid for
//     "port": 8443,                     // http: via https.globalAgent.defaultPort; mqtt: host:port;
//                                       // mqttws: must be absent or 443 (the SDK hard-codes 443)
//     "idScope": "0ne00ABCDEF",
//     "registrationId": "my-device-01",
//     "transport": "http" | "mqtt" | "mqttws",
//     "symmetricKey": "<base64 device key>",           // exactly one of symmetricKey
//     "x509": {"certFile": "...", "keyFile": "..."},   // and x509
//     "payload": <any JSON>,            // optional, setProvisioningPayload (the SDK drops falsy values)
//     "timeoutMs": 60000                // optional overall timeout
//   }
//
// Output (one line): {"ok":true,"result":<registrationState from register()>}
//                 or {"ok":false,"error":{name,message,code?,statusCode?,responseBody?,cause?,uncaught?}}

const fs = require('fs');
const h = require('./harness');

const args = h.readArgs();

for (const field of ['host', 'idScope', 'registrationId', 'transport']) {
  if (typeof args[field] !== 'string' || args[field] === '') {
    h.harnessError(`"${field}" must be a non-empty string`);
  }
}
if ((args.symmetricKey === undefined) === (args.x509 === undefined)) {
  h.harnessError('give exactly one of "symmetricKey" and "x509"');
}

let host = args.host;
let Transport;
switch (args.transport) {
  case 'http':
    // Node's HTTP transport passes the host to https.request without a port:
    // redirect the global agent instead (protocol.md §9.1).
    h.setHttpsPort(args.port);
    Transport = require('azure-iot-provisioning-device-http').Http;
    break;
  case 'mqtt':
    // The MQTT transport connects to 'mqtts://' + host, so host:port works.
    if (args.port !== undefined && args.port !== null && args.port !== 0) {
      if (!Number.isInteger(args.port) || args.port < 1 || args.port > 65535) {
        h.harnessError(`port must be an integer in 1..65535, got ${JSON.stringify(args.port)}`);
      }
      host = `${args.host}:${args.port}`;
    }
    Transport = require('azure-iot-provisioning-device-mqtt').Mqtt;
    break;
  case 'mqttws':
    // 'wss://' + host + ':443/$iothub/websocket': no way to change the port.
    if (args.port !== undefined && args.port !== null && args.port !== 0 && args.port !== 443) {
      h.harnessError(`transport mqttws always uses port 443 (got port ${args.port}); run the server on 443`);
    }
    Transport = require('azure-iot-provisioning-device-mqtt').MqttWs;
    break;
  default:
    h.harnessError(`"transport" must be "http", "mqtt" or "mqttws", got ${JSON.stringify(args.transport)}`);
}

let securityClient;
if (args.symmetricKey !== undefined) {
  if (typeof args.symmetricKey !== 'string' || args.symmetricKey === '') {
    h.harnessError('"symmetricKey" must be a non-empty base64 string');
  }
  const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
  securityClient = new SymmetricKeySecurityClient(args.registrationId, args.symmetricKey);
} else {
  const x = args.x509;
  if (x === null || typeof x !== 'object' || typeof x.certFile !== 'string' || typeof x.keyFile !== 'string') {
    h.harnessError('"x509" must be {"certFile": "...", "keyFile": "..."}');
  }
  let cert;
  let key;
  try {
    cert = fs.readFileSync(x.certFile, 'utf8');
    key = fs.readFileSync(x.keyFile, 'utf8');
  } catch (e) {
    h.harnessError(`reading x509 files: ${e.message}`);
  }
  const { X509Security } = require('azure-iot-security-x509');
  securityClient = new X509Security(args.registrationId, { cert, key });
}

const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');

const fail = (error) => ({ ok: false, error });
h.startTimeout(args.timeoutMs, (ms) => fail(h.timeoutError(ms)));

let client;
try {
  client = ProvisioningDeviceClient.create(host, args.idScope, new Transport(), securityClient);
} catch (e) {
  // create() only validates its arguments: a throw here is our fault.
  h.harnessError(`ProvisioningDeviceClient.create: ${e.stack || e}`);
}
if (args.payload !== undefined) {
  client.setProvisioningPayload(args.payload);
}

h.sdkStarted(fail);
client.register((err, result) => {
  if (err) {
    h.emit(fail(h.describeError(err)));
  } else {
    h.emit({ ok: true, result: result === undefined ? null : result });
  }
});
