package flymachines

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"3", 3 * time.Second, true},
		{"0", 0, true},
		{"-1", 0, false},
		{"", 0, false},
		{"soon", 0, false},
		{now.Add(7 * time.Second).Format(http.TimeFormat), 7 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	}
	for _, tt := range tests {
		got, ok := retryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("retryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestBackoff(t *testing.T) {
	for attempt := 0; attempt < 10; attempt++ {
		d := backoff(100*time.Millisecond, time.Second, attempt, nil)
		if d < 50*time.Millisecond || d > time.Second {
			t.Errorf("attempt %d: backoff %v out of [50ms, 1s]", attempt, d)
		}
	}
	resp := &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"4"}}}
	if d := backoff(100*time.Millisecond, time.Second, 0, resp); d != 4*time.Second {
		t.Errorf("backoff with Retry-After: 4 = %v", d)
	}
}

func TestCheckRetryPolicies(t *testing.T) {
	dial := &net.OpError{Op: "dial", Err: errors.New("connection refused")}
	read := &net.OpError{Op: "read", Err: errors.New("connection reset by peer")}
	tests := []struct {
		name   string
		policy retryPolicy
		status int
		err    error
		want   bool
	}{
		{"get 500", retryIdempotent, 500, nil, true},
		{"get 501", retryIdempotent, 501, nil, false},
		{"get 429", retryIdempotent, 429, nil, true},
		{"get 408", retryIdempotent, 408, nil, true},
		{"get 404", retryIdempotent, 404, nil, false},
		{"get reset", retryIdempotent, 0, read, true},
		{"wait 408", retryWait, 408, nil, false},
		{"wait 503", retryWait, 503, nil, true},
		{"create 429", retryUnsent, 429, nil, true},
		{"create 500", retryUnsent, 500, nil, false},
		{"create 502", retryUnsent, 502, nil, false},
		{"create 408", retryUnsent, 408, nil, false},
		{"create refused", retryUnsent, 0, dial, true},
		{"create reset", retryUnsent, 0, read, false},
		{"create timeout", retryUnsent, 0, context.DeadlineExceeded, false},
		{"rate limit wait", retryIdempotent, 0, &rateLimitError{op: "get", err: errors.New("would exceed deadline")}, false},
	}
	for _, tt := range tests {
		ctx := withCall(context.Background(), call{op: "x", policy: tt.policy})
		var resp *http.Response
		if tt.err == nil {
			resp = &http.Response{StatusCode: tt.status}
		}
		got, _ := checkRetry(ctx, resp, tt.err)
		if got != tt.want {
			t.Errorf("%s: retry = %v, want %v", tt.name, got, tt.want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got, err := checkRetry(ctx, &http.Response{StatusCode: 503}, nil); got || err == nil {
		t.Errorf("cancelled ctx: retry = %v, %v", got, err)
	}
}

func TestErrorIs(t *testing.T) {
	tests := []struct {
		e    *Error
		is   error
		want bool
	}{
		{&Error{StatusCode: 404}, ErrNotFound, true},
		{&Error{StatusCode: 409, Status: "name_taken"}, ErrNameTaken, true},
		{&Error{StatusCode: 422, Message: "Validation failed: Name has already been taken"}, ErrNameTaken, true},
		{&Error{StatusCode: 409, Message: "aborted: could not reserve resource for machine: insufficient memory"}, ErrCapacity, true},
		{&Error{StatusCode: 412, Status: "insufficient_capacity"}, ErrCapacity, true},
		{&Error{StatusCode: 403, Message: "organization is using 4096 MB of memory in dfw which is over the allowed quota"}, ErrCapacity, true},
		{&Error{StatusCode: 409, Message: "lease held"}, ErrNameTaken, false},
		{&Error{StatusCode: 503}, ErrServer, true},
		{&Error{StatusCode: 400}, ErrNotFound, false},
	}
	for _, tt := range tests {
		if got := errors.Is(tt.e, tt.is); got != tt.want {
			t.Errorf("errors.Is(%+v, %v) = %v", tt.e, tt.is, got)
		}
	}
}

func TestLimiterPrunesFullBuckets(t *testing.T) {
	l := newLimiter(Limit{Rate: 1000, Burst: 1}, Limit{Rate: 1000, Burst: 1}, 0)
	for i := 0; i < 3*minPrune; i++ {
		l.bucket(opStart, string(rune('a'+i%26))+time.Duration(i).String())
	}
	l.mu.Lock()
	n := len(l.buckets)
	l.mu.Unlock()
	if n > 2*minPrune {
		t.Errorf("limiter holds %d buckets; idle ones are not pruned", n)
	}
}
