package flymachines

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the client's Prometheus collectors. Labels are bounded: the
// operation name, the HTTP status (or "error"), a recovery outcome. Never a
// machine id or an app name.
type metrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	retries       *prometheus.CounterVec
	limitWaits    *prometheus.CounterVec
	limitWaitSecs *prometheus.HistogramVec
	recoveries    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flymachines_requests_total",
			Help: "HTTP requests sent to the Fly Machines API (each attempt), by operation and status code.",
		}, []string{"op", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flymachines_request_duration_seconds",
			Help:    "Latency of one Fly Machines API request attempt, by operation.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"op"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flymachines_retries_total",
			Help: "Fly Machines API requests retried, by operation.",
		}, []string{"op"}),
		limitWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flymachines_ratelimit_waits_total",
			Help: "Requests the client-side rate limiter held back before sending, by operation.",
		}, []string{"op"}),
		limitWaitSecs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flymachines_ratelimit_wait_seconds",
			Help:    "Time requests spent queued in the client-side rate limiter, by operation.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2, 5, 10, 30, 60},
		}, []string{"op"}),
		recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flymachines_create_recoveries_total",
			Help: "Creates whose outcome was unknown and were resolved by listing machines, by outcome (found, absent, error).",
		}, []string{"outcome"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.retries, m.limitWaits, m.limitWaitSecs, m.recoveries} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register fly machines metrics: %w", err)
		}
	}
	return m, nil
}
