package flymachines

import (
	"context"
	"slices"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/interviewvm/controlplane/pkg/flymachines/flymachinestest"
)

// A low-priority create (a pre-warm) yields to an urgent one on the same
// bucket even when it queued first: it never reserves a future slot, and
// needs two tokens (one stays for an urgent request) where the urgent one
// needs one.
func TestLimiterLowPriorityYields(t *testing.T) {
	l := newLimiter(Limit{Rate: 1, Burst: 2}, Limit{Rate: 1, Burst: 2}, 0)
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

// schedule returns when the client's bucket for fly, keeping margin in
// hand, sends each of n requests queued at t0, and the bucket's own
// accounting, on a virtual clock.
func schedule(fly Limit, margin time.Duration, n int, t0 time.Time) []time.Time {
	b := newBucket(fly, margin)
	sends := make([]time.Time, n)
	for i := range sends {
		sends[i] = t0.Add(b.ReserveN(t0, unit).DelayFrom(t0))
	}
	return sends
}

// flyAdmits replays arrivals (in send order) through the fake Machines
// API's rule, which is Fly's documented one: a token bucket of the limit's
// rate and burst, and 429 for a request that finds it empty. It returns
// the indexes refused.
func flyAdmits(fly flymachinestest.Limit, arrivals []time.Time) []int {
	type arrival struct {
		i  int
		at time.Time
	}
	order := make([]arrival, len(arrivals))
	for i, at := range arrivals {
		order[i] = arrival{i, at}
	}
	slices.SortStableFunc(order, func(a, b arrival) int { return a.at.Compare(b.at) })
	bucket := rate.NewLimiter(rate.Limit(fly.Rate), fly.Burst)
	var refused []int
	for _, a := range order {
		if !bucket.AllowN(a.at, 1) {
			refused = append(refused, a.i)
		}
	}
	return refused
}

// The client's bucket uses Fly's whole burst and Fly's rate, one margin
// late: twenty creates queued at once leave over 17.2 s (Fly allows 17 s),
// and however the requests' network delays differ, by less than the
// margin, Fly refuses none of them. Delays that differ by more can meet a
// 429: the margin is what protects.
func TestBucketUsesFlysBurstAndToleratesJitter(t *testing.T) {
	action, _ := flymachinestest.FlyLimits()
	fly := Limit{Rate: rate.Limit(action.Rate), Burst: action.Burst}
	const n = 20
	t0 := time.Unix(1_000_000, 0)
	sends := schedule(fly, DefaultRateMargin, n, t0)

	// Two at once, the third one margin later (2.8 of Fly's 3 tokens in
	// hand), then one per second.
	want := func(i int) time.Duration {
		if i < 2 {
			return 0
		}
		return time.Duration(i-2)*time.Second + DefaultRateMargin
	}
	for i, s := range sends {
		if d := s.Sub(t0); (d - want(i)).Abs() > time.Millisecond {
			t.Errorf("request %d sent at +%v, want +%v", i, d, want(i))
		}
	}
	if last := sends[n-1].Sub(t0); last > time.Duration(n-action.Burst)*time.Second+DefaultRateMargin+time.Millisecond {
		t.Errorf("last of %d requests sent at +%v: more than Fly's minimum %v plus the margin", n, last, time.Duration(n-action.Burst)*time.Second)
	}

	jitter := DefaultRateMargin - time.Millisecond
	patterns := map[string]func(i int) time.Duration{
		"no jitter":            func(int) time.Duration { return 0 },
		"early ones late":      func(i int) time.Duration { return map[bool]time.Duration{true: jitter}[i < action.Burst] },
		"alternating":          func(i int) time.Duration { return time.Duration(i%2) * jitter },
		"decreasing":           func(i int) time.Duration { return jitter - time.Duration(i)*jitter/n },
		"every third delayed":  func(i int) time.Duration { return map[bool]time.Duration{true: jitter}[i%3 == 0] },
		"one straggler, first": func(i int) time.Duration { return map[bool]time.Duration{true: jitter}[i == 0] },
	}
	for name, delay := range patterns {
		arrivals := make([]time.Time, n)
		for i, s := range sends {
			arrivals[i] = s.Add(delay(i))
		}
		if refused := flyAdmits(action, arrivals); len(refused) > 0 {
			t.Errorf("%s: Fly refuses requests %v", name, refused)
		}
	}

	// Delays differing by more than the margin (the burst reaches Fly
	// late, the next request promptly): Fly's 429.
	late := func(sends []time.Time, d time.Duration) []time.Time {
		arrivals := make([]time.Time, len(sends))
		for i, s := range sends {
			arrivals[i] = s
			if i < action.Burst {
				arrivals[i] = s.Add(d)
			}
		}
		return arrivals
	}
	if refused := flyAdmits(action, late(sends, DefaultRateMargin+50*time.Millisecond)); len(refused) == 0 {
		t.Error("a burst delayed by more than the margin met no 429: the test cannot tell a margin from none")
	}
	// And without any margin, the smallest difference in delays does.
	if refused := flyAdmits(action, late(schedule(fly, -1, n, t0), time.Millisecond)); len(refused) == 0 {
		t.Error("without a margin, a burst 1 ms late met no 429")
	}
}
