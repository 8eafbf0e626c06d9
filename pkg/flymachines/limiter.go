package flymachines

import (
	"context"
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

// limiter holds one token bucket per (operation, identifier), the way Fly
// scopes its limits: per action and per machine id, or per app for calls
// that have no machine yet (create, list).
type limiter struct {
	action Limit
	get    Limit

	mu      sync.Mutex
	buckets map[bucketKey]*rate.Limiter
	// urgent counts the requests waiting per bucket that are not low
	// priority.
	urgent  map[bucketKey]int
	pruneAt int
}

type bucketKey struct{ op, id string }

const minPrune = 1024

func newLimiter(action, get Limit) *limiter {
	return &limiter{action: action, get: get, buckets: make(map[bucketKey]*rate.Limiter), urgent: map[bucketKey]int{}, pruneAt: minPrune}
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
		if err := b.Wait(ctx); err != nil {
			return time.Since(start), err
		}
		return time.Since(start), nil
	}
	need := 1.0
	if b.Burst() >= 2 {
		need = 2
	}
	for {
		l.mu.Lock()
		busy := l.urgent[k] > 0
		l.mu.Unlock()
		pause := 50 * time.Millisecond
		if !busy {
			now := time.Now()
			tokens := b.TokensAt(now)
			if tokens >= need && b.AllowN(now, 1) {
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
	b := rate.NewLimiter(lim.Rate, lim.Burst)
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
