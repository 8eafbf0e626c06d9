package prewarm

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	machines prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		machines: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "prewarm_machines", Help: "Pre-warmed machines (created, not booted) waiting for their interview's start, at the last pre-warm pass.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.machines)
	}
	return m
}
