package registrationtest

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/hub"
	"github.com/edgeprov/edgeprov/daemon/hub/local"
)

// Enrollments is a registration.Enrollments whose enrollments a test can
// replace (disable an entry, say) while the service runs.
type Enrollments struct {
	v atomic.Pointer[enrollment.Set]
}

// Lookup implements registration.Enrollments.
func (e *Enrollments) Lookup(_ context.Context, scope, _ string) (enrollment.Lookup, error) {
	if scope == Scope {
		return e.v.Load(), nil
	}
	return nil, nil
}

// Replace validates and swaps in new enrollments.
func (e *Enrollments) Replace(tb testing.TB, individuals []*enrollment.Individual, groups []*enrollment.Group) {
	tb.Helper()
	for _, x := range individuals {
		if err := x.Validate("test"); err != nil {
			tb.Fatal(err)
		}
	}
	for _, g := range groups {
		if err := g.Validate("test"); err != nil {
			tb.Fatal(err)
		}
	}
	set, err := enrollment.NewSet(individuals, groups)
	if err != nil {
		tb.Fatal(err)
	}
	e.v.Store(set)
}

// LocalHub is a linked hub on the embedded driver, over the fixture's store
// and sealer.
func (f *Fixture) LocalHub(name, hostName string, weight int) *hub.Linked {
	return &hub.Linked{Name: name, HostName: hostName, Weight: weight, ApplyAllocationPolicy: true, Driver: local.New(hostName, f.Store, f.Sealer)}
}
