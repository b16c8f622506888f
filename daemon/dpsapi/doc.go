// Package dpsapi holds the device-facing wire types of the Azure IoT Hub Device
// Provisioning Service (DPS) protocol as stock SDKs speak it, the status and error
// code vocabulary, and the registration ID rules. It is standard-library only so
// that the daemon and the device agent share one definition of the wire.
package dpsapi
