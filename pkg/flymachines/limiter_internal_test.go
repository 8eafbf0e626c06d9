package flymachines

import (
	"context"
	"testing"
	"time"
)

// A low-priority create (a pre-warm) yields to an urgent one on the same
// bucket even when it queued first: it never reserves a future slot, and
// needs two tokens (one stays for an urgent request) where the urgent one
// needs one.
func TestLimiterLowPriorityYields(t *testing.T) {
	l := newLimiter(Limit{Rate: 1, Burst: 2}, Limit{Rate: 1, Burst: 2})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range 2 { // drain the burst
		if _, err := l.wait(ctx, opCreate, "app:a", false); err != nil {
			t.Fatal(err)
		}
	}
	order := make(chan string, 2)
	// The low one queues first; an urgent one arriving after it (well
	// before the bucket refills) still goes first.
	go func() {
		_, err := l.wait(ctx, opCreate, "app:a", true)
		if err != nil {
			t.Error(err)
		}
		order <- "low"
	}()
	go func() {
		_, err := l.wait(ctx, opCreate, "app:a", false)
		if err != nil {
			t.Error(err)
		}
		order <- "urgent"
	}()
	if first, second := <-order, <-order; first != "urgent" || second != "low" {
		t.Errorf("order = %s, %s; want urgent, low", first, second)
	}
	// Another bucket is not held back.
	if _, err := l.wait(ctx, opCreate, "app:b", true); err != nil {
		t.Fatal(err)
	}
}
