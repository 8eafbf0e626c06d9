package flymachines

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limit is a token bucket: Rate requests per second sustained, Burst at
// once.
type Limit struct {
	Rate  rate.Limit
	Burst int
}

// DefaultRateMargin is Config.RateMargin's default.
const DefaultRateMargin = 200 * time.Millisecond

// unit is how many of the buckets' tokens one request takes: buckets count
// in thousandths of a request, so that a fraction of a token can be kept
// in hand (see limiter).
const unit = 1000

// limiter holds one token bucket per (operation, identifier), the way Fly
// scopes its limits: per action and per machine id, or per app for calls
// that have no machine yet (create, list).
//
// Each bucket is Fly's (same rate, same burst) less a margin: the tokens
// that refill in margin stay in hand, so the bucket admits a request only
// when Fly's bucket, as we count it, would still hold that much after it.
// Requests reach Fly after a delay that varies from one to the next (a
// new connection, a scheduling hiccup); as long as two requests' delays
// differ by less than the margin, Fly sees them no closer together than
// its limit allows. The margin costs one margin of waiting per queue, once
// (a burst of 20 creates at 1/s: the last one leaves at 17.2 s instead of
// Fly's 17 s), where keeping a whole token in hand cost a second.
type limiter struct {
	action Limit
	get    Limit
	margin time.Duration

	mu      sync.Mutex
	buckets map[bucketKey]*rate.Limiter
	// urgent counts the requests waiting per bucket that are not low
	// priority.
	urgent  map[bucketKey]int
	pruneAt int
}

type bucketKey struct{ op, id string }

const minPrune = 1024

func newLimiter(action, get Limit, margin time.Duration) *limiter {
	return &limiter{action: action, get: get, margin: max(margin, 0),
		buckets: make(map[bucketKey]*rate.Limiter), urgent: map[bucketKey]int{}, pruneAt: minPrune}
}

// newBucket returns the bucket of lim, less margin's refill (at most all
// but one token of the burst), counted in units: one request takes unit
// tokens.
func newBucket(lim Limit, margin time.Duration) *rate.Limiter {
	keep := min(float64(lim.Rate)*margin.Seconds(), float64(lim.Burst-1))
	return rate.NewLimiter(lim.Rate*unit, int(math.Floor((float64(lim.Burst)-max(keep, 0))*unit)))
}

// wait blocks until the bucket of (op, id) admits one request, or ctx ends.
// It returns how long the request was held.
//
// A low-priority request (a create nobody waits for: a pre-warm) never
// reserves a future slot: it takes a token only when no other request of
// the bucket waits and, when the burst allows, one token stays for a
// request that may arrive next. So it never delays an urgent one.
func (l *limiter) wait(ctx context.Context, op, id string, low bool) (time.Duration, error) {
	b := l.bucket(op, id)
	k := bucketKey{op, id}
	start := time.Now()
	if !low {
		l.mu.Lock()
		l.urgent[k]++
		l.mu.Unlock()
		defer func() {
			l.mu.Lock()
			if l.urgent[k]--; l.urgent[k] <= 0 {
				delete(l.urgent, k)
			}
			l.mu.Unlock()
		}()
		if err := b.WaitN(ctx, unit); err != nil {
			return time.Since(start), err
		}
		return time.Since(start), nil
	}
	need := float64(unit)
	if b.Burst() >= 2*unit {
		need = 2 * unit
	}
	for {
		l.mu.Lock()
		busy := l.urgent[k] > 0
		l.mu.Unlock()
		pause := 50 * time.Millisecond
		if !busy {
			now := time.Now()
			tokens := b.TokensAt(now)
			if tokens >= need && b.AllowN(now, unit) {
				return time.Since(start), nil
			}
			if r := float64(b.Limit()); r > 0 && tokens < need {
				pause = min(max(time.Duration((need-tokens)/r*float64(time.Second)), 5*time.Millisecond), 250*time.Millisecond)
			}
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return time.Since(start), ctx.Err()
		case <-t.C:
		}
	}
}

func (l *limiter) bucket(op, id string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := bucketKey{op, id}
	if b, ok := l.buckets[k]; ok {
		return b
	}
	if len(l.buckets) >= l.pruneAt {
		l.pruneLocked()
	}
	lim := l.action
	if op == opGet {
		lim = l.get
	}
	b := newBucket(lim, l.margin)
	l.buckets[k] = b
	return b
}

// pruneLocked drops full buckets: a full bucket behaves exactly like a new
// one, so forgetting it changes nothing but memory. Machine ids come and go;
// without this the map would grow for the life of the process.
func (l *limiter) pruneLocked() {
	now := time.Now()
	for k, b := range l.buckets {
		if b.TokensAt(now) >= float64(b.Burst()) {
			delete(l.buckets, k)
		}
	}
	l.pruneAt = max(2*len(l.buckets), minPrune)
}
