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
	pruneAt int
}

type bucketKey struct{ op, id string }

const minPrune = 1024

func newLimiter(action, get Limit) *limiter {
	return &limiter{action: action, get: get, buckets: make(map[bucketKey]*rate.Limiter), pruneAt: minPrune}
}

// wait blocks until the bucket of (op, id) admits one request, or ctx ends.
// It returns how long the request was held.
func (l *limiter) wait(ctx context.Context, op, id string) (time.Duration, error) {
	b := l.bucket(op, id)
	start := time.Now()
	if err := b.Wait(ctx); err != nil {
		return time.Since(start), err
	}
	return time.Since(start), nil
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
