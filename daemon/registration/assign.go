package registration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/edgeprov/edgeprov/daemon/allocation"
	"github.com/edgeprov/edgeprov/daemon/attestation"
	"github.com/edgeprov/edgeprov/daemon/dpsapi"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/daemon/store"
)

// assign runs steps 4 and 5 of the pipeline: allocate a hub, honouring the
// reprovision policy and the previous record, and create or update the identity
// there. It returns the new record; for drivers that write into edgeprov's
// store, the write to make in the registration's transaction; and what to do
// once the record is durable (remove the identity from a hub the device left).
//
// Reprovisioning follows DPS (protocol.md §6.7 and the DPS reprovisioning
// documentation):
//
//	first registration                      initialAssignment; twin := webhook's or enrollment's initial twin
//	updateHubAssignment=false               stays on its hub, identity refreshed, twin untouched, substatus kept
//	same hub, migrateDeviceData=true        twin untouched, substatus kept
//	same hub, migrateDeviceData=false       twin reset to the initial twin: deviceDataReset
//	new hub,  migrateDeviceData=true        twin and capabilities copied from the old hub: deviceDataMigrated
//	new hub,  migrateDeviceData=false       twin reset to the initial twin: deviceDataReset
//	back to the first hub it was assigned   as the two lines above, but reprovisionedToInitialAssignment
//
// A device that moves is removed from the hub it left. A webhook's initial twin
// is used where DPS uses it: initial assignment and reset, never over a
// migrated twin.
//
// issued says the device is being issued a certificate by edgeprov's CA,
// which it will then authenticate to the hub with.
func (s *Service) assign(ctx context.Context, scope, key string, req RegisterRequest, res *attestation.Result, prev *store.Record, now time.Time, issued bool) (*store.Record, func(store.Tx) error, func(context.Context), error) {
	c := res.Common()
	deviceID := res.DeviceID(key)
	linked := s.cfg.Hubs.Linked()

	// 4. Allocate.
	dec, stayed, err := s.allocate(ctx, key, req, res, prev, linked)
	if err != nil {
		return nil, nil, nil, allocationFailure(err)
	}
	h := dec.Hub
	moved := prev != nil && (!strings.EqualFold(prev.AssignedHub, h.HostName) || prev.DeviceID != deviceID)

	dev := deviceFor(res, deviceID, issued)
	substatus := dpsapi.SubstatusInitialAssignment
	initial := initialTwin(dec, c)
	switch {
	case prev == nil:
		dev.Twin = initial
	case stayed || !moved && migrate(c):
		substatus = prev.Substatus
	case !moved:
		substatus, dev.Twin = dpsapi.SubstatusDeviceDataReset, initial
	default:
		substatus = dpsapi.SubstatusDeviceDataReset
		if migrate(c) {
			substatus = dpsapi.SubstatusDeviceDataMigrated
			dev.Twin, dev.IoTEdge = s.migratedData(ctx, prev, linked, initial, dev.IoTEdge)
		} else {
			dev.Twin = initial
		}
		if strings.EqualFold(h.HostName, prev.InitialHub) {
			substatus = dpsapi.SubstatusReprovisionedToInitialAssignment
		}
	}
	if substatus == "" {
		substatus = dpsapi.SubstatusInitialAssignment
	}

	// 5. Create or update the identity (idempotent, so a retried registration
	// never makes a second one).
	var inTx func(store.Tx) error
	if td, ok := h.Driver.(TxDriver); ok {
		inTx = func(tx store.Tx) error { return td.EnsureDeviceTx(tx, dev, now) }
	} else if err := h.Driver.EnsureDevice(ctx, dev); err != nil {
		s.cfg.Observer.HubError(h.HostName)
		return nil, nil, nil, hubFailure(ctx, s.log, h, deviceID, err)
	}

	rec := &store.Record{Scope: scope, RegistrationID: key, DeviceID: deviceID, AssignedHub: h.HostName, InitialHub: h.HostName,
		Status: dpsapi.StatusAssigned, Substatus: substatus, Attestation: res.Type,
		EnrollmentGroupID: res.GroupID(), CreatedAt: now, UpdatedAt: now, ETag: newETag(), Payload: payloadOf(req.Body.Payload)}
	if res.Leaf != nil && res.Individual != nil {
		rec.CertificateInfo = dpsapi.NewX509CertificateInfo(res.Leaf)
	}
	if policyName(c, s.cfg.DefaultPolicy) == enrollment.AllocationCustom && !stayed {
		// The webhook's payload goes to the device, in place of the echo.
		rec.Payload = dec.Payload
	}
	var after func(context.Context)
	if prev != nil {
		rec.CreatedAt, rec.InitialHub = prev.CreatedAt, prev.InitialHub
		if moved {
			// The device moved: DPS removes it from the hub it left.
			after = func(ctx context.Context) { s.removeFrom(ctx, prev.AssignedHub, prev.DeviceID) }
		}
	}
	return rec, inTx, after, nil
}

// allocate picks the hub: the previous one when the reprovision policy says not
// to move (and it is still linked), else the enrollment's policy. stayed
// reports the former.
func (s *Service) allocate(ctx context.Context, key string, req RegisterRequest, res *attestation.Result, prev *store.Record, linked []*hub.Linked) (*allocation.Decision, bool, error) {
	c := res.Common()
	if prev != nil && !updateHub(c) {
		if h := findLinked(linked, prev.AssignedHub); h != nil {
			return &allocation.Decision{Hub: h}, true, nil
		}
		s.log.LogAttrs(ctx, slog.LevelInfo, "the hub of a device that does not change hubs is no longer linked: allocating anew",
			slog.String("registrationId", key), slog.String("hub", prev.AssignedHub))
	}
	name := policyName(c, s.cfg.DefaultPolicy)
	p, ok := s.cfg.Policies[name]
	if !ok {
		return nil, false, fmt.Errorf("allocation policy %q is not available on this daemon", name)
	}
	cands, err := allocation.Candidates(linked, c, name)
	if err != nil {
		return nil, false, err
	}
	areq := allocation.Request{RegistrationID: key, Candidates: cands, Individual: res.Individual, Group: res.Group,
		Device: allocation.DeviceContext{RegistrationID: req.RegistrationID, Attestation: res.Type, TPM: req.Body.TPM, X509: res.Leaf, Payload: req.Body.Payload}}
	if res.Individual != nil {
		areq.Group = nil // an individual entry inside a group is what the device matched
	}
	if prev != nil {
		areq.Device.CurrentHub, areq.Device.CurrentDeviceID = prev.AssignedHub, prev.DeviceID
	}
	if d, ok := p.(allocation.Decider); ok {
		dec, err := d.Decide(ctx, areq)
		return dec, false, err
	}
	h, err := p.Allocate(ctx, areq)
	if err != nil {
		return nil, false, err
	}
	return &allocation.Decision{Hub: h}, false, nil
}

func policyName(c *enrollment.Common, def string) string {
	if c.AllocationPolicy != "" {
		return c.AllocationPolicy
	}
	return def
}

// allocationFailure turns an allocation error into the registration's failed
// outcome.
func allocationFailure(err error) error {
	switch {
	case errors.Is(err, allocation.ErrNoHub):
		return &failure{dpsapi.CodeNoHub, "No linked hub is available for this device: " + err.Error()}
	case errors.Is(err, allocation.ErrWebhookResponse):
		return &failure{dpsapi.CodeWebhookResponse, "Custom allocation failed: " + err.Error()}
	case errors.Is(err, allocation.ErrWebhookUnavailable):
		return &failure{dpsapi.CodeWebhookUnavailable, "Custom allocation failed: " + err.Error()}
	}
	return &failure{dpsapi.CodeAllocationFailed, "Allocation failed: " + err.Error()}
}

// hubFailure turns a driver error into the registration's failed outcome; the
// details go to the log only.
func hubFailure(ctx context.Context, log *slog.Logger, h *hub.Linked, deviceID string, err error) error {
	log.LogAttrs(ctx, slog.LevelWarn, "hub driver failed", slog.String("hub", h.HostName), slog.String("deviceId", deviceID), slog.Any("error", err))
	if errors.Is(err, hub.ErrRefused) {
		return &failure{dpsapi.CodeHubUnauthorized, "The linked hub rejected the device registration."}
	}
	return &failure{dpsapi.CodeInternal, "The linked hub could not be reached."}
}

// deviceFor is the hub identity of an attested device. Symmetric-key and TPM
// devices carry their key (drivers either register it or derive a password
// from it); X.509 devices are known by their certificate: its thumbprint
// (individual enrollments) or its CA (groups), and its CN.
func deviceFor(res *attestation.Result, deviceID string, issued bool) hub.Device {
	c := res.Common()
	dev := hub.Device{DeviceID: deviceID, AuthType: res.HubAuthType(), KeyRef: res.KeyRef, Key: res.DeviceKey}
	if c.Capabilities != nil {
		dev.IoTEdge = c.Capabilities.IoTEdge
	}
	if res.Leaf != nil {
		dev.CommonName = res.Leaf.Subject.CommonName
		if dev.AuthType == hub.AuthSelfSigned {
			_, dev.Thumbprint = dpsapi.Thumbprints(res.Leaf)
		}
	}
	if issued {
		// The device will authenticate to the hub with the certificate
		// edgeprov's CA issues it, whose CN is the device ID.
		dev.AuthType, dev.Thumbprint, dev.CommonName = hub.AuthCertificateAuthority, "", deviceID
	}
	return dev
}

// initialTwin is the twin a device starts with: the webhook's when it sent one,
// else the enrollment's; never nil, so that writing it replaces what the hub
// had.
func initialTwin(dec *allocation.Decision, c *enrollment.Common) *hub.Twin {
	t := dec.InitialTwin
	if t == nil {
		t = c.InitialTwin
	}
	out := &hub.Twin{}
	if t != nil {
		out.Tags = t.Tags
		if t.Properties != nil {
			out.Desired = t.Properties.Desired
		}
	}
	return out
}

// migratedData reads the device's twin and capabilities from the hub it
// leaves. When that hub is gone or cannot tell, the initial twin and the
// enrollment's capabilities stand in (and the log says so).
func (s *Service) migratedData(ctx context.Context, prev *store.Record, linked []*hub.Linked, initial *hub.Twin, iotEdge bool) (*hub.Twin, bool) {
	old := findLinked(linked, prev.AssignedHub)
	var why string
	switch r, ok := hubReader(old); {
	case old == nil:
		why = "the hub is no longer linked"
	case !ok:
		why = "its driver cannot read devices back"
	default:
		data, err := r.ReadDevice(ctx, prev.DeviceID)
		if err == nil {
			if data.IoTEdge != nil {
				iotEdge = *data.IoTEdge
			}
			return &data.Twin, iotEdge
		}
		why = err.Error()
	}
	s.log.LogAttrs(ctx, slog.LevelWarn, "device data not migrated from its previous hub: the initial twin is applied instead",
		slog.String("hub", prev.AssignedHub), slog.String("deviceId", prev.DeviceID), slog.String("reason", why))
	return initial, iotEdge
}

func hubReader(h *hub.Linked) (hub.Reader, bool) {
	if h == nil {
		return nil, false
	}
	r, ok := h.Driver.(hub.Reader)
	return r, ok
}

// removeFrom deletes a device's identity from a hub; failures are logged (the
// registration has succeeded by then).
func (s *Service) removeFrom(ctx context.Context, hostName, deviceID string) {
	h := findLinked(s.cfg.Hubs.Linked(), hostName)
	if h == nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "device left a hub that is no longer linked; its identity there was not removed",
			slog.String("hub", hostName), slog.String("deviceId", deviceID))
		return
	}
	if err := h.Driver.DeleteDevice(ctx, deviceID); err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "could not remove device from its previous hub", slog.String("hub", hostName),
			slog.String("deviceId", deviceID), slog.Any("error", err))
	}
}

// revoke disables, on its hub, the identity of a registered device whose
// enrollment is now disabled, so that it cannot connect any more.
func (s *Service) revoke(ctx context.Context, res *attestation.Result, prev *store.Record) {
	if prev == nil {
		return
	}
	h := findLinked(s.cfg.Hubs.Linked(), prev.AssignedHub)
	if h == nil {
		return
	}
	dev := deviceFor(res, prev.DeviceID, false)
	dev.Disabled = true
	if err := h.Driver.EnsureDevice(ctx, dev); err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "could not disable the device of a disabled enrollment on its hub", slog.String("hub", h.HostName),
			slog.String("deviceId", prev.DeviceID), slog.Any("error", err))
		return
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "device disabled on its hub: its enrollment is disabled", slog.String("hub", h.HostName),
		slog.String("deviceId", prev.DeviceID))
}

func findLinked(linked []*hub.Linked, hostName string) *hub.Linked {
	for _, h := range linked {
		if strings.EqualFold(h.HostName, hostName) {
			return h
		}
	}
	return nil
}

func updateHub(c *enrollment.Common) bool {
	return c.ReprovisionPolicy == nil || c.ReprovisionPolicy.UpdateHubAssignment == nil || *c.ReprovisionPolicy.UpdateHubAssignment
}

func migrate(c *enrollment.Common) bool {
	return c.ReprovisionPolicy == nil || c.ReprovisionPolicy.MigrateDeviceData == nil || *c.ReprovisionPolicy.MigrateDeviceData
}
