package controlapi

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	streams     prometheus.Gauge
	rateLimited prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "transcript_stream_subscribers", Help: "Live transcript streams (SSE) open on this controller.",
		}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "http_rate_limited_requests_total", Help: "Requests refused with 429 by the per-user rate limit.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.streams, m.rateLimited)
	}
	return m
}
