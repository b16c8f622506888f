package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
)

// MQTTPasswordLabel prefixes the device ID in the MQTT password derivation.
const MQTTPasswordLabel = "edgeprov-mqtt-password:"

// MQTTPassword is the password a symmetric-key or TPM device logs in to an
// MQTT broker with, on hubs where edgeprov manages the broker's users
// (mosquitto, webhook): base64(HMAC-SHA256(deviceKey, "edgeprov-mqtt-password:"
// + deviceID)), standard base64 with padding. The device computes it from the
// key it already holds (a TPM computes the HMAC with the imported hub key,
// which never leaves it) and edgeprov from the key it verified, so the key
// itself never travels to the broker.
func MQTTPassword(deviceKey []byte, deviceID string) string {
	m := hmac.New(sha256.New, deviceKey)
	m.Write([]byte(MQTTPasswordLabel + deviceID))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}
