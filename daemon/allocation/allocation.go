// Package allocation chooses the linked hub a device is assigned to: DPS's four
// policies. This file holds the contract and the policies that need no outside
// party, evenly weighted (hashed) and static; latency.go the lowest-latency
// policy and its prober; webhook.go custom allocation.
package allocation

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/hub"
)

// ErrNoHub is returned when no linked hub can take the device.
var ErrNoHub = errors.New("no linked hub available")

// Request is what a policy decides on.
type Request struct {
	// RegistrationID is the normalized (lower-case) registration ID.
	RegistrationID string
	// Candidates are the linked hubs the enrollment allows, in config order.
	Candidates []*hub.Linked

	// The rest is what DPS tells a custom allocation webhook: the enrollment
	// the device matched (one of the two) and the device's side.
	Individual *enrollment.Individual
	Group      *enrollment.Group
	Device     DeviceContext
}

// DeviceContext describes the registering device.
type DeviceContext struct {
	// RegistrationID as the device sent it.
	RegistrationID string
	// CurrentHub and CurrentDeviceID are set when the device was assigned
	// before (re-provisioning).
	CurrentHub, CurrentDeviceID string
	// Attestation is the mechanism the device proved itself with
	// (enrollment.AttestationSymmetricKey, ...X509, ...TPM).
	Attestation string
	// TPM holds the EK and SRK a TPM device presented.
	TPM *dpsapi.TPMAttestation
	// X509 is the device's verified leaf certificate (X.509 attestation).
	X509 *x509.Certificate
	// Payload is the device's registration payload, as sent.
	Payload json.RawMessage
}

// Policy picks a hub.
type Policy interface {
	Allocate(ctx context.Context, req Request) (*hub.Linked, error)
}

// Decision is a hub and, from a custom allocation webhook, what it asked for
// besides.
type Decision struct {
	Hub *hub.Linked
	// InitialTwin, when set, is the twin the webhook wants the device to start
	// with (used where DPS uses it: initial assignment and reset).
	InitialTwin *enrollment.InitialTwin
	// Payload is returned to the device in registrationState.payload.
	Payload json.RawMessage
}

// Decider is a Policy whose answer carries more than a hub (custom
// allocation). The registration service asks Decide when a policy has it.
type Decider interface {
	Decide(ctx context.Context, req Request) (*Decision, error)
}

// Candidates filters the linked hubs by the enrollment's iotHubs list (all
// linked hubs when empty) and, except for static allocation, by
// applyAllocationPolicy.
func Candidates(linked []*hub.Linked, c *enrollment.Common, policy string) ([]*hub.Linked, error) {
	allowed := c.IoTHubs
	if len(allowed) == 0 && c.IoTHubHostName != "" {
		allowed = []string{c.IoTHubHostName}
	}
	var out []*hub.Linked
	for _, h := range linked {
		if len(allowed) > 0 && !containsFold(allowed, h.HostName) && !containsFold(allowed, h.Name) {
			continue
		}
		if policy != enrollment.AllocationStatic && !h.ApplyAllocationPolicy {
			continue
		}
		out = append(out, h)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: none of the enrollment's hubs is linked and accepting devices", ErrNoHub)
	}
	return out, nil
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// Hashed is DPS's "evenly weighted distribution": weighted rendezvous hashing of
// the registration ID. A device always lands on the same hub while the hub set is
// unchanged, and adding a hub of weight w moves only about w/(total weight) of
// the devices (those the new hub now wins), never devices between old hubs.
type Hashed struct{}

// Allocate implements Policy.
func (Hashed) Allocate(_ context.Context, req Request) (*hub.Linked, error) {
	var best *hub.Linked
	bestScore := math.Inf(-1)
	id := strings.ToLower(req.RegistrationID)
	for _, h := range req.Candidates {
		w := h.Weight
		if w <= 0 {
			continue
		}
		// Score = -w / ln(u) with u uniform in (0,1) from hash(id, hub): the
		// hub with the highest score wins, with probability proportional to w.
		sum := sha256.Sum256([]byte(id + "\x00" + strings.ToLower(h.HostName)))
		u := (float64(binary.BigEndian.Uint64(sum[:8])>>11) + 0.5) / (1 << 53)
		score := -float64(w) / math.Log(u)
		if score > bestScore {
			best, bestScore = h, score
		}
	}
	if best == nil {
		return nil, ErrNoHub
	}
	return best, nil
}

// Static assigns the enrollment's single hub.
type Static struct{}

// Allocate implements Policy.
func (Static) Allocate(_ context.Context, req Request) (*hub.Linked, error) {
	if len(req.Candidates) != 1 {
		return nil, fmt.Errorf("%w: static allocation needs exactly one hub, the enrollment allows %d", ErrNoHub, len(req.Candidates))
	}
	return req.Candidates[0], nil
}
