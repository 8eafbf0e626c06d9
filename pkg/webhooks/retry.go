package webhooks

import (
	"fmt"
	"strings"
	"time"

	"github.com/riverqueue/river/rivertype"
)

// DefaultRetrySchedule is WEBHOOK_RETRY_SCHEDULE's default: the delays
// after the 1st, 2nd, … failed attempt; after the last one the delivery
// has failed.
const DefaultRetrySchedule = "5s,5m,30m,2h,5h,10h,10h"

// RetrySchedule holds the delay before each retry: entry i follows failed
// attempt i+1. A message gets len+1 attempts.
type RetrySchedule []time.Duration

// ParseRetrySchedule parses a comma-separated list of positive Go
// durations ("5s,5m,30m"); an empty string is DefaultRetrySchedule.
func ParseRetrySchedule(s string) (RetrySchedule, error) {
	if strings.TrimSpace(s) == "" {
		s = DefaultRetrySchedule
	}
	parts := strings.Split(s, ",")
	out := make(RetrySchedule, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		d, err := time.ParseDuration(p)
		if err != nil {
			return nil, fmt.Errorf("WEBHOOK_RETRY_SCHEDULE entry %d %q: want a duration such as 5s, 5m or 2h: %w", i+1, p, err)
		}
		if d <= 0 {
			return nil, fmt.Errorf("WEBHOOK_RETRY_SCHEDULE entry %d %q: must be positive", i+1, p)
		}
		out = append(out, d)
	}
	return out, nil
}

// MaxAttempts is the number of attempts a message gets.
func (s RetrySchedule) MaxAttempts() int { return len(s) + 1 }

// Delay returns the wait after failed attempt number attempt (1-based),
// or false when that was the last attempt.
func (s RetrySchedule) Delay(attempt int) (time.Duration, bool) {
	if attempt < 1 || attempt > len(s) {
		return 0, false
	}
	return s[attempt-1], true
}

// next is the time of the retry after failed attempt number attempt; past
// the schedule it repeats the last delay (the worker fails the delivery
// before that matters).
func (s RetrySchedule) next(now time.Time, attempt int) time.Time {
	if d, ok := s.Delay(attempt); ok {
		return now.Add(d)
	}
	if len(s) == 0 {
		return now
	}
	return now.Add(s[len(s)-1])
}

// NextRetry implements River's ClientRetryPolicy with this schedule; the
// job's Attempt is the attempt that just failed.
func (s RetrySchedule) NextRetry(job *rivertype.JobRow) time.Time {
	return s.next(time.Now(), job.Attempt)
}
