package provision

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/interviewvm/controlplane/pkg/session"
)

type metrics struct {
	started      prometheus.Counter
	ended        *prometheus.CounterVec
	startLatency prometheus.Histogram
	phase        *prometheus.HistogramVec
	duration     prometheus.Histogram
	segments     prometheus.Counter
	batchSize    prometheus.Histogram
	ingestErrors *prometheus.CounterVec

	starts          *prometheus.CounterVec
	prewarmOutcomes *prometheus.CounterVec
	prewarmSeconds  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	startBuckets := []float64{.05, .1, .25, .5, 1, 2, 5, 10, 20, 30, 60, 120}
	m := &metrics{
		started: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "interviews_started_total", Help: "Interviews moved from scheduled to provisioning.",
		}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "interviews_ended_total", Help: "Interviews that reached a terminal state, by end reason.",
		}, []string{"reason"}),
		startLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "interview_start_duration_seconds", Help: "Time from a first start request until the session VM reported ready.",
			Buckets: startBuckets,
		}),
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "interview_start_phase_seconds", Help: "Time from a first start request until each provisioning phase completed.",
			Buckets: startBuckets,
		}, []string{"phase"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "interview_duration_seconds", Help: "Time from start to the end of completed interviews.",
			Buckets: prometheus.ExponentialBuckets(30, 2, 10),
		}),
		segments: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "transcript_segments_received_total", Help: "Transcript segments received from session VMs (duplicates included).",
		}),
	}
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "transcript_batch_size", Help: "Segments per transcript batch a VM posted (accepted batches).",
		Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500},
	})
	m.ingestErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "transcript_ingest_errors_total", Help: "Transcript batches refused, by reason (invalid, unauthenticated, not_live, store).",
	}, []string{"reason"})
	m.starts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "starts_total", Help: "Interview starts, by path: warm (a pre-warmed machine is booted) or cold (a machine is created).",
	}, []string{"path"})
	m.prewarmOutcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "prewarm_outcomes_total", Help: "Pre-warmed machines by outcome: used, expired, cancelled, failed (the create failed).",
	}, []string{"outcome"})
	m.prewarmSeconds = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "prewarm_machine_seconds_total", Help: "Machine-seconds spent pre-warmed (created, not booted), counted when each pre-warm ends.",
	})
	for _, p := range []string{"warm", "cold"} {
		m.starts.WithLabelValues(p)
	}
	for _, o := range []string{"used", "expired", "cancelled", "failed"} {
		m.prewarmOutcomes.WithLabelValues(o)
	}
	for _, r := range []string{"invalid", "unauthenticated", "not_live", "store"} {
		m.ingestErrors.WithLabelValues(r)
	}
	for _, p := range []string{"queued", "machine_created", "machine_started", "vm_ready", "first_sdp"} {
		m.phase.WithLabelValues(p)
	}
	for _, r := range session.EndReasons {
		m.ended.WithLabelValues(string(r))
	}
	if reg != nil {
		reg.MustRegister(m.started, m.ended, m.startLatency, m.phase, m.duration, m.segments, m.batchSize, m.ingestErrors,
			m.starts, m.prewarmOutcomes, m.prewarmSeconds)
	}
	return m
}
