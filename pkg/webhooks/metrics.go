package webhooks

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the delivery counters and the attempt latency histogram.
type Metrics struct {
	deliveries *prometheus.CounterVec
	attempts   *prometheus.HistogramVec
}

// NewMetrics registers the webhook metrics on reg:
// webhook_deliveries_total{outcome} (succeeded, retrying, failed,
// endpoint_gone, dropped — one per worked attempt) and
// webhook_attempt_duration_seconds{outcome} (success, retry, gone — one
// per HTTP attempt). The controller's registerer adds the interview_
// prefix (interview_webhook_deliveries_total, …).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhook_deliveries_total",
			Help: "Webhook delivery attempts worked, by outcome: succeeded, retrying, failed (schedule exhausted), endpoint_gone (410, endpoint disabled), dropped (delivery or endpoint no longer exists or is disabled).",
		}, []string{"outcome"}),
		attempts: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "webhook_attempt_duration_seconds",
			Help:    "Duration of one webhook HTTP attempt, by outcome: success, retry, gone.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15},
		}, []string{"outcome"}),
	}
	for _, c := range []prometheus.Collector{m.deliveries, m.attempts} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register webhook metrics: %w", err)
		}
	}
	return m, nil
}
