package throttle

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestWindow(t *testing.T) {
	w := NewWindow(5, 10*time.Second, 100)
	t0 := time.Unix(1_800_000_000, 0)
	for i := range 5 {
		if ok, _ := w.Allow("dev", t0.Add(time.Duration(i)*time.Second)); !ok {
			t.Fatalf("event %d refused", i)
		}
	}
	ok, retry := w.Allow("dev", t0.Add(5*time.Second))
	if ok || retry != 5*time.Second {
		t.Fatalf("6th event in the window: ok=%v retry=%v, want refused with 5s", ok, retry)
	}
	if ok, _ := w.Allow("other", t0.Add(5*time.Second)); !ok {
		t.Fatal("another device was throttled")
	}
	if ok, _ := w.Allow("dev", t0.Add(10*time.Second+time.Millisecond)); !ok {
		t.Fatal("event after the oldest left the window was refused")
	}
}

func TestWindowMemoryBounded(t *testing.T) {
	w := NewWindow(1, time.Minute, 50)
	now := time.Now()
	for i := range 10_000 {
		w.Allow(fmt.Sprint("flood-", i), now)
	}
	if n := len(w.keys); n > 50 {
		t.Fatalf("%d keys kept, bound is 50", n)
	}
}

func TestAdmission(t *testing.T) {
	a := NewAdmission(2, 50*time.Millisecond)
	r1, err1 := a.Acquire(context.Background())
	_, err2 := a.Acquire(context.Background())
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if _, err := a.Acquire(context.Background()); !errors.Is(err, ErrBusy) {
		t.Fatalf("third acquire: %v, want ErrBusy", err)
	}
	done := make(chan error)
	go func() { _, err := a.Acquire(context.Background()); done <- err }()
	time.Sleep(10 * time.Millisecond)
	r1()
	if err := <-done; err != nil {
		t.Fatalf("a queued caller did not get the freed slot: %v", err)
	}
}

func BenchmarkWindowAllow(b *testing.B) {
	w := NewWindow(5, 10*time.Second, 1<<20)
	now := time.Now()
	i := 0
	for b.Loop() {
		i++
		w.Allow(fmt.Sprint(i%100000), now)
	}
}
