package controlapi

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	streams     prometheus.Gauge
	rateLimited prometheus.Counter
	// idempotency counts creates with an Idempotency-Key by outcome:
	// stored (the answer is kept), replayed, reused (422), in_flight
	// (409), released (5xx: nothing kept).
	idempotency *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "transcript_stream_subscribers", Help: "Live transcript streams (SSE) open on this controller.",
		}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "http_rate_limited_requests_total", Help: "Requests refused with 429 by the per-user rate limit.",
		}),
		idempotency: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_idempotent_requests_total",
			Help: "Creating requests with an Idempotency-Key, by outcome (stored, replayed, reused, in_flight, released).",
		}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.streams, m.rateLimited, m.idempotency)
	}
	return m
}
