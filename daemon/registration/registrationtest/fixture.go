// Package registrationtest builds a real registration.Service (bbolt store,
// local hub driver, an in-memory catalog) for tests and benchmarks of the
// service and its transports.
package registrationtest

import (
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"maps"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/allocation"
	"github.com/edgeprov/edgeprov/daemon/attestation"
	"github.com/edgeprov/edgeprov/daemon/attestation/symkey"
	tpmattest "github.com/edgeprov/edgeprov/daemon/attestation/tpm"
	"github.com/edgeprov/edgeprov/daemon/attestation/x509chain"
	"github.com/edgeprov/edgeprov/daemon/dpsapi/sas"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/daemon/hub/local"
	"github.com/edgeprov/edgeprov/daemon/registration"
	"github.com/edgeprov/edgeprov/daemon/secrets"
	"github.com/edgeprov/edgeprov/daemon/store"
	"github.com/edgeprov/edgeprov/daemon/store/bolt"
)

// Scope is the fixture's ID scope.
const Scope = "0ne00FEED01"

// Hub host names of the fixture.
const (
	HubA = "hub-a.test"
	HubB = "hub-b.test"
)

// Keys of the fixture's enrollments.
var (
	IndividualKey = key(1) // "dev-individual", static to HubB, deviceId "custom-device"
	SecondaryKey  = key(2) // its secondary key
	GroupKey      = key(3) // group "grp" (prefix "grp-")
	DisabledKey   = key(4) // "dev-disabled", disabled
	OtherKey      = key(9) // enrolled nowhere
)

func key(b byte) []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = b
	}
	return k
}

// Fixture is a service over a real store.
type Fixture struct {
	Service *registration.Service
	Store   store.Store
	Hubs    *Hubs
	Set     *enrollment.Set
	// Sealer seals the device keys the local hubs keep.
	Sealer *secrets.Box
	// Local are the local hub drivers of HubA and HubB.
	Local map[string]*local.Driver
	// StorePath is the bbolt file.
	StorePath string
	// Enrollments replaces the enrollments .
	Enrollments *Enrollments
	// Now is the clock the service uses; tests may move it.
	Now atomic.Pointer[time.Time]
	cfg registration.Config
}

// Reconfigure rebuilds Service with the fixture's config changed by fn.
func (f *Fixture) Reconfigure(fn func(*registration.Config)) {
	cfg := f.cfg
	fn(&cfg)
	f.Service = registration.New(cfg)
}

// Hubs is a settable registration.Hubs.
type Hubs struct{ v atomic.Pointer[[]*hub.Linked] }

// Linked implements registration.Hubs.
func (h *Hubs) Linked() []*hub.Linked { return *h.v.Load() }

// Set replaces the linked hubs.
func (h *Hubs) Set(l []*hub.Linked) { h.v.Store(&l) }

// Options add to the fixture.
type Options struct {
	Individuals []*enrollment.Individual
	Groups      []*enrollment.Group
	// CAs resolves caReferences of X.509 groups.
	CAs x509chain.CAs
	// Issuer certifies CSRs.
	Issuer registration.CertIssuer
	// Hubs builds the linked hubs (default: local hubs HubA and HubB,
	// weight 1); f.LocalHub makes local ones.
	Hubs func(f *Fixture) []*hub.Linked
	// Policies are added to hashed and static.
	Policies      map[string]allocation.Policy
	DefaultPolicy string
	Logger        *slog.Logger
}

// New builds the fixture; extra groups are added to the catalog.
func New(tb testing.TB, extraGroups ...*enrollment.Group) *Fixture {
	tb.Helper()
	return NewWith(tb, Options{Groups: extraGroups})
}

// NewWith builds the fixture with more enrollments, CAs and an issuer.
func NewWith(tb testing.TB, opts Options) *Fixture {
	tb.Helper()
	extraGroups := opts.Groups
	storePath := filepath.Join(tb.TempDir(), "edgeprov.db")
	st, err := bolt.Open(storePath, bolt.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	b64 := base64.StdEncoding.EncodeToString
	individuals := []*enrollment.Individual{
		{RegistrationID: "dev-individual", DeviceID: "custom-device", Common: enrollment.Common{
			Attestation:      enrollment.Attestation{Type: "symmetricKey", SymmetricKey: &enrollment.SymmetricKeyAttestation{PrimaryKey: b64(IndividualKey), SecondaryKey: b64(SecondaryKey)}},
			AllocationPolicy: "static", IoTHubs: []string{HubB},
			InitialTwin: &enrollment.InitialTwin{Tags: map[string]any{"site": "w7"}}}},
		{RegistrationID: "dev-disabled", Common: enrollment.Common{ProvisioningStatus: "disabled",
			Attestation: enrollment.Attestation{Type: "symmetricKey", SymmetricKey: &enrollment.SymmetricKeyAttestation{PrimaryKey: b64(DisabledKey)}}}},
		// Blocks one device of the group: its key is the group-derived one.
		{RegistrationID: "grp-blocked", Common: enrollment.Common{ProvisioningStatus: "disabled",
			Attestation: enrollment.Attestation{Type: "symmetricKey", SymmetricKey: &enrollment.SymmetricKeyAttestation{PrimaryKey: b64(sas.DeriveDeviceKey(GroupKey, "grp-blocked"))}}}},
		{RegistrationID: "dev-nohub", Common: enrollment.Common{IoTHubs: []string{"unlinked.test"},
			Attestation: enrollment.Attestation{Type: "symmetricKey", SymmetricKey: &enrollment.SymmetricKeyAttestation{PrimaryKey: b64(OtherKey)}}}},
	}
	individuals = append(individuals, opts.Individuals...)
	groups := append([]*enrollment.Group{
		{EnrollmentGroupID: "grp", RegistrationIDPrefixes: []string{"grp-"}, Common: enrollment.Common{
			Attestation: enrollment.Attestation{Type: "symmetricKey", SymmetricKey: &enrollment.SymmetricKeyAttestation{PrimaryKey: b64(GroupKey)}}}},
	}, extraGroups...)
	ens := &Enrollments{}
	ens.Replace(tb, individuals, groups)
	set := ens.v.Load()
	dataKey := make([]byte, secrets.KeySize)
	_, _ = rand.Read(dataKey)
	box, err := secrets.New(dataKey)
	if err != nil {
		tb.Fatal(err)
	}
	f := &Fixture{Store: st, Hubs: &Hubs{}, Set: set, Enrollments: ens, Sealer: box, StorePath: storePath, Local: map[string]*local.Driver{
		HubA: local.New(HubA, st, box), HubB: local.New(HubB, st, box)}}
	now := time.Now()
	f.Now.Store(&now)
	if opts.Hubs != nil {
		f.Hubs.Set(opts.Hubs(f))
	} else {
		f.Hubs.Set([]*hub.Linked{
			{Name: "a", HostName: HubA, Weight: 1, ApplyAllocationPolicy: true, Driver: f.Local[HubA]},
			{Name: "b", HostName: HubB, Weight: 1, ApplyAllocationPolicy: true, Driver: f.Local[HubB]},
		})
	}
	policies := map[string]allocation.Policy{enrollment.AllocationHashed: allocation.Hashed{}, enrollment.AllocationStatic: allocation.Static{}}
	maps.Copy(policies, opts.Policies)
	clock := func() time.Time { return *f.Now.Load() }
	f.cfg = registration.Config{
		Store: st, Enrollments: ens, Hubs: f.Hubs, Issuer: opts.Issuer, DefaultPolicy: opts.DefaultPolicy, Logger: opts.Logger,
		Verifier: &attestation.Verifier{Symkey: &symkey.Verifier{Skew: 5 * time.Minute}, X509: &x509chain.Verifier{CAs: opts.CAs},
			TPM: &tpmattest.Verifier{Store: st, Sealer: box, Skew: 5 * time.Minute}, Now: clock},
		Policies: policies,
		Scopes:   []string{Scope}, Now: clock,
	}
	f.Service = registration.New(f.cfg)
	return f
}

// Token returns a device SAS token for regID signed with k, valid for an hour
// from the fixture's clock.
func (f *Fixture) Token(regID string, k []byte) string {
	return sas.Build(k, sas.DeviceResource(Scope, regID), f.Now.Load().Add(time.Hour), "registration")
}

// GroupToken is Token with the key derived from GroupKey.
func (f *Fixture) GroupToken(regID string) string {
	return f.Token(regID, sas.DeriveDeviceKey(GroupKey, regID))
}
