package controlapi

import (
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/interviewvm/controlplane/pkg/session"
)

// userLimiters holds one token bucket per user, forgetting idle ones.
type userLimiters struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*userBucket
	swept   time.Time
}

type userBucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// idleUserTTL is how long an idle user's bucket is kept.
const idleUserTTL = 10 * time.Minute

func (u *userLimiters) reserve(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if now.Sub(u.swept) > time.Minute {
		for k, b := range u.buckets {
			if now.Sub(b.seen) > idleUserTTL {
				delete(u.buckets, k)
			}
		}
		u.swept = now
	}
	b, found := u.buckets[key]
	if !found {
		b = &userBucket{lim: rate.NewLimiter(u.limit, u.burst)}
		u.buckets[key] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// rateLimit limits each authenticated user (tenant and JWT subject, or the
// interview of an access token) to the configured rate; over it, requests
// get 429 rate_limited with Retry-After.
func (s *Server) rateLimit() echo.MiddlewareFunc {
	u := &userLimiters{limit: rate.Limit(s.cfg.RateLimit), burst: s.cfg.RateBurst, buckets: map[string]*userBucket{}}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			p := principal(c)
			key := p.TenantID + "/" + p.Subject
			ok, wait := u.reserve(key, time.Now())
			if !ok {
				s.metrics.rateLimited.Inc()
				c.Response().Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
				return session.Errorf(session.ERATELIMITED, "too many requests; retry after %s", wait.Round(time.Millisecond))
			}
			return next(c)
		}
	}
}
