package allocation_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/edgeprov/daemon/allocation"
	"github.com/edgeprov/edgeprov/daemon/enrollment"
	"github.com/edgeprov/edgeprov/daemon/hub"
)

const devices = 10000

// sigmas is the tolerance of the statistical checks. The hash is deterministic,
// so these tests cannot flake; the bound says how far from the expected count a
// correct weighted hash may land for some set of IDs.
const sigmas = 5

func linked(name string, weight int) *hub.Linked {
	return &hub.Linked{Name: name, HostName: name + ".edgeprov.test", Weight: weight, ApplyAllocationPolicy: true}
}

func regIDs() []string {
	ids := make([]string, devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("line7-sensor-%05d", i)
	}
	return ids
}

// assign maps every registration ID to the host name Hashed picks.
func assign(t *testing.T, ids []string, hubs []*hub.Linked) map[string]string {
	t.Helper()
	out := make(map[string]string, len(ids))
	for _, id := range ids {
		h, err := allocation.Hashed{}.Allocate(context.Background(), allocation.Request{RegistrationID: id, Candidates: hubs})
		if err != nil {
			t.Fatalf("Allocate(%s): %v", id, err)
		}
		out[id] = h.HostName
	}
	return out
}

// within fails unless count is within sigmas binomial standard deviations of
// n*p.
func within(t *testing.T, what string, count, n int, p float64) {
	t.Helper()
	mean := float64(n) * p
	tol := sigmas * math.Sqrt(float64(n)*p*(1-p))
	if math.Abs(float64(count)-mean) > tol {
		t.Errorf("%s: %d of %d, want %.0f ± %.0f (p = %.3f)", what, count, n, mean, tol, p)
	} else {
		t.Logf("%s: %d of %d, expected %.0f ± %.0f", what, count, n, mean, tol)
	}
}

func TestHashedWeightedShares(t *testing.T) {
	hubs := []*hub.Linked{linked("w1", 1), linked("w2", 2), linked("w3", 3)}
	got := assign(t, regIDs(), hubs)
	counts := map[string]int{}
	for _, h := range got {
		counts[h]++
	}
	total := 6.0
	for _, h := range hubs {
		within(t, h.Name, counts[h.HostName], devices, float64(h.Weight)/total)
	}
}

func TestHashedStability(t *testing.T) {
	ids := regIDs()
	base := []*hub.Linked{linked("w1", 1), linked("w2", 2), linked("w3", 3)}
	before := assign(t, ids, base)

	for _, w := range []int{1, 3, 6} {
		t.Run(fmt.Sprintf("ok/add-hub-of-weight-%d", w), func(t *testing.T) {
			added := linked("new", w)
			after := assign(t, ids, append(slices.Clone(base), added))
			moved := 0
			for _, id := range ids {
				if after[id] == before[id] {
					continue
				}
				moved++
				if after[id] != added.HostName {
					t.Fatalf("%s moved from %s to %s, an old hub", id, before[id], after[id])
				}
			}
			within(t, "moved to the new hub", moved, devices, float64(w)/float64(6+w))
		})
	}

	for _, gone := range base {
		t.Run("ok/remove-"+gone.Name, func(t *testing.T) {
			var rest []*hub.Linked
			restWeight := 0
			for _, h := range base {
				if h != gone {
					rest = append(rest, h)
					restWeight += h.Weight
				}
			}
			after := assign(t, ids, rest)
			movedTo := map[string]int{}
			orphans := 0
			for _, id := range ids {
				if before[id] != gone.HostName {
					if after[id] != before[id] {
						t.Fatalf("%s moved from %s to %s although its hub stays", id, before[id], after[id])
					}
					continue
				}
				orphans++
				movedTo[after[id]]++
			}
			// The removed hub's devices spread over the others by weight.
			for _, h := range rest {
				within(t, "orphans to "+h.Name, movedTo[h.HostName], orphans, float64(h.Weight)/float64(restWeight))
			}
		})
	}

	t.Run("ok/change-weight-moves-only-to-or-from-that-hub", func(t *testing.T) {
		heavier := []*hub.Linked{linked("w1", 1), linked("w2", 4), linked("w3", 3)}
		after := assign(t, ids, heavier)
		moved := 0
		for _, id := range ids {
			if after[id] != before[id] {
				moved++
				if after[id] != "w2.edgeprov.test" {
					t.Fatalf("%s moved from %s to %s when only w2 grew", id, before[id], after[id])
				}
			}
		}
		// w2's share grows from 2/6 to 4/8.
		within(t, "moved to w2", moved, devices, 4.0/8-2.0/6)
	})
}

func TestHashedDeterministic(t *testing.T) {
	hubs := []*hub.Linked{linked("a", 1), linked("b", 2), linked("c", 3), linked("d", 1)}
	ids := regIDs()[:2000]
	first := assign(t, ids, hubs)

	t.Run("ok/same-answer-twice", func(t *testing.T) {
		again := assign(t, ids, hubs)
		for _, id := range ids {
			if again[id] != first[id] {
				t.Fatalf("%s: %s then %s", id, first[id], again[id])
			}
		}
	})
	t.Run("ok/candidate-order-does-not-matter", func(t *testing.T) {
		rev := slices.Clone(hubs)
		slices.Reverse(rev)
		got := assign(t, ids, rev)
		for _, id := range ids {
			if got[id] != first[id] {
				t.Fatalf("%s: %s in config order, %s reversed", id, first[id], got[id])
			}
		}
	})
	t.Run("ok/registration-id-and-host-name-case-insensitive", func(t *testing.T) {
		upper := make([]*hub.Linked, len(hubs))
		for i, h := range hubs {
			c := *h
			c.HostName = strings.ToUpper(h.HostName)
			upper[i] = &c
		}
		for _, id := range ids {
			h, err := allocation.Hashed{}.Allocate(context.Background(), allocation.Request{RegistrationID: strings.ToUpper(id), Candidates: upper})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.EqualFold(h.HostName, first[id]) {
				t.Fatalf("%s: %s, upper-cased %s", id, first[id], h.HostName)
			}
		}
	})
	t.Run("ok/spread-not-constant", func(t *testing.T) {
		seen := map[string]bool{}
		for _, h := range first {
			seen[h] = true
		}
		if len(seen) != len(hubs) {
			t.Fatalf("2000 devices landed on %d of %d hubs", len(seen), len(hubs))
		}
	})
}

func TestHashedNoHub(t *testing.T) {
	tests := []struct {
		name string
		hubs []*hub.Linked
		want string // host name, "" for ErrNoHub
	}{
		{"fail/no-candidates", nil, ""},
		{"fail/all-zero-weight", []*hub.Linked{linked("a", 0), linked("b", 0)}, ""},
		{"fail/negative-weight", []*hub.Linked{linked("a", -1)}, ""},
		{"ok/zero-weight-never-chosen", []*hub.Linked{linked("a", 0), linked("b", 1), linked("c", 0)}, "b.edgeprov.test"},
		{"ok/single-hub", []*hub.Linked{linked("a", 1000)}, "a.edgeprov.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, id := range regIDs()[:200] {
				h, err := allocation.Hashed{}.Allocate(context.Background(), allocation.Request{RegistrationID: id, Candidates: tt.hubs})
				if tt.want == "" {
					if !errors.Is(err, allocation.ErrNoHub) || h != nil {
						t.Fatalf("Allocate = %v, %v; want ErrNoHub", h, err)
					}
					continue
				}
				if err != nil || h.HostName != tt.want {
					t.Fatalf("Allocate(%s) = %v, %v; want %s", id, h, err, tt.want)
				}
			}
		})
	}
}

func TestStatic(t *testing.T) {
	a, b := linked("a", 1), linked("b", 1)
	off := linked("off", 0)
	off.ApplyAllocationPolicy = false
	tests := []struct {
		name string
		hubs []*hub.Linked
		want *hub.Linked
	}{
		{"ok/one-candidate", []*hub.Linked{b}, b},
		{"ok/one-candidate-zero-weight-not-applying-policy", []*hub.Linked{off}, off},
		{"fail/no-candidate", nil, nil},
		{"fail/two-candidates", []*hub.Linked{a, b}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := allocation.Static{}.Allocate(context.Background(), allocation.Request{RegistrationID: "d", Candidates: tt.hubs})
			if tt.want == nil {
				if !errors.Is(err, allocation.ErrNoHub) || h != nil {
					t.Fatalf("Allocate = %v, %v; want ErrNoHub", h, err)
				}
				return
			}
			if err != nil || h != tt.want {
				t.Fatalf("Allocate = %v, %v; want %v", h, err, tt.want)
			}
		})
	}
}

func TestCandidates(t *testing.T) {
	west, east := linked("hub-west", 1), linked("Hub-East", 2)
	north := linked("hub-north", 1)
	north.ApplyAllocationPolicy = false
	all := []*hub.Linked{west, east, north}

	tests := []struct {
		name   string
		common enrollment.Common
		policy string
		want   []*hub.Linked // nil: ErrNoHub
	}{
		{"ok/no-filter-hashed-skips-not-applying", enrollment.Common{}, enrollment.AllocationHashed, []*hub.Linked{west, east}},
		{"ok/no-filter-static-keeps-not-applying", enrollment.Common{}, enrollment.AllocationStatic, all},
		{"ok/by-host-name-case-insensitive", enrollment.Common{IoTHubs: []string{"HUB-WEST.edgeprov.TEST"}}, enrollment.AllocationHashed, []*hub.Linked{west}},
		{"ok/by-name-case-insensitive", enrollment.Common{IoTHubs: []string{"hub-east"}}, enrollment.AllocationHashed, []*hub.Linked{east}},
		{"ok/config-order-kept", enrollment.Common{IoTHubs: []string{"hub-east", "hub-west.edgeprov.test"}}, enrollment.AllocationHashed, []*hub.Linked{west, east}},
		{"ok/unknown-entries-ignored", enrollment.Common{IoTHubs: []string{"nowhere.example", "hub-west"}}, enrollment.AllocationHashed, []*hub.Linked{west}},
		{"ok/static-to-hub-not-applying-policy", enrollment.Common{IoTHubs: []string{"hub-north"}}, enrollment.AllocationStatic, []*hub.Linked{north}},
		{"ok/iotHubHostName-when-no-iotHubs", enrollment.Common{IoTHubHostName: "hub-north.edgeprov.test"}, enrollment.AllocationStatic, []*hub.Linked{north}},
		{"ok/iotHubs-win-over-iotHubHostName", enrollment.Common{IoTHubs: []string{"hub-east"}, IoTHubHostName: "hub-west.edgeprov.test"}, enrollment.AllocationHashed, []*hub.Linked{east}},
		{"ok/default-policy-name-filters-like-hashed", enrollment.Common{}, "", []*hub.Linked{west, east}},
		{"fail/only-hub-not-applying-policy", enrollment.Common{IoTHubs: []string{"hub-north"}}, enrollment.AllocationHashed, nil},
		{"fail/iotHubHostName-not-applying-policy", enrollment.Common{IoTHubHostName: "hub-north.edgeprov.test"}, enrollment.AllocationHashed, nil},
		{"fail/no-linked-hub-named", enrollment.Common{IoTHubs: []string{"hub-south"}}, enrollment.AllocationStatic, nil},
		{"fail/prefix-of-a-name-is-not-a-match", enrollment.Common{IoTHubs: []string{"hub-"}}, enrollment.AllocationHashed, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := allocation.Candidates(all, &tt.common, tt.policy)
			if tt.want == nil {
				if !errors.Is(err, allocation.ErrNoHub) || got != nil {
					t.Fatalf("Candidates = %v, %v; want ErrNoHub", names(got), err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("Candidates = %v, %v; want %v", names(got), err, names(tt.want))
			}
		})
	}
	t.Run("fail/no-linked-hubs", func(t *testing.T) {
		if _, err := allocation.Candidates(nil, &enrollment.Common{}, enrollment.AllocationHashed); !errors.Is(err, allocation.ErrNoHub) {
			t.Fatalf("Candidates(nil) error = %v, want ErrNoHub", err)
		}
	})
}

func names(hs []*hub.Linked) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Name)
	}
	return out
}

func BenchmarkAllocate(b *testing.B) {
	ctx := context.Background()
	hubs := func(n int) []*hub.Linked {
		out := make([]*hub.Linked, n)
		for i := range out {
			out[i] = linked(fmt.Sprintf("hub-%02d", i), i%3+1)
		}
		return out
	}
	for _, bc := range []struct {
		name   string
		policy allocation.Policy
		hubs   []*hub.Linked
	}{
		{"hashed/hubs=3", allocation.Hashed{}, hubs(3)},
		{"hashed/hubs=10", allocation.Hashed{}, hubs(10)},
		{"static/hubs=1", allocation.Static{}, hubs(1)},
		{"geoLatency/hubs=3", allocation.Latency{RTTs: rtts{"hub-00": 3 * time.Millisecond, "hub-01": 2 * time.Millisecond, "hub-02": 40 * time.Millisecond}, Tolerance: 5 * time.Millisecond}, hubs(3)},
		{"geoLatency/hubs=10", allocation.Latency{RTTs: rtts{"hub-00": 3 * time.Millisecond, "hub-04": 2 * time.Millisecond, "hub-09": 4 * time.Millisecond}, Tolerance: 5 * time.Millisecond}, hubs(10)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ids := regIDs()
			i := 0
			for b.Loop() {
				req := allocation.Request{RegistrationID: ids[i%len(ids)], Candidates: bc.hubs}
				if _, err := bc.policy.Allocate(ctx, req); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
	b.Run("candidates/hubs=10", func(b *testing.B) {
		all := hubs(10)
		c := &enrollment.Common{IoTHubs: []string{"hub-03", "hub-07.edgeprov.test"}}
		for b.Loop() {
			if _, err := allocation.Candidates(all, c, enrollment.AllocationHashed); err != nil {
				b.Fatal(err)
			}
		}
	})
}
