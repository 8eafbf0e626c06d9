package postgres

import (
	"context"
	"time"

	"github.com/IBM/pgxpoolprometheus"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Collector returns a Prometheus collector of the connection pool's
// statistics, read from pgxpool.Stat at each scrape: pgxpool_acquired_conns,
// pgxpool_idle_conns, pgxpool_total_conns, pgxpool_max_conns, and the
// cumulative pgxpool_acquire_count, pgxpool_empty_acquire (acquires that
// waited for a connection), pgxpool_canceled_acquire_count, … Register it
// once per DB.
func (db *DB) Collector() prometheus.Collector {
	return pgxpoolprometheus.NewCollector(db.Pool, nil)
}

// FleetCollector exports what the database knows of every tenant's
// interviews, read at each scrape (each replica reports the whole fleet):
// interviews{state}, transcript_ack_lag_segments (segments live VMs
// produced that are not acknowledged yet), sessionvm_buffered_segments and
// sessionvm_retries (summed from the VMs' last heartbeats).
func (db *DB) FleetCollector() prometheus.Collector { return &fleetCollector{db: db} }

type fleetCollector struct{ db *DB }

var (
	fleetStateDesc = prometheus.NewDesc("interviews", "Interviews by state (all tenants).", []string{"state"}, nil)
	fleetLagDesc   = prometheus.NewDesc("transcript_ack_lag_segments",
		"Transcript segments live VMs have produced and the controller has not acknowledged yet.", nil, nil)
	fleetBufDesc = prometheus.NewDesc("sessionvm_buffered_segments",
		"Unacknowledged segments held by live VMs, from their last heartbeats.", nil, nil)
	fleetRetryDesc = prometheus.NewDesc("sessionvm_retries",
		"Transcript post retries of live VMs so far, from their last heartbeats.", nil, nil)
)

func (f *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- fleetStateDesc
	ch <- fleetLagDesc
	ch <- fleetBufDesc
	ch <- fleetRetryDesc
}

func (f *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts := map[session.State]float64{}
	var lag, buffered, retries float64
	err := f.db.inScope(ctx, session.SystemScope(), func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT status, count(*) FROM interviews.interview_sessions GROUP BY status`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var st string
			var n int64
			if err := rows.Scan(&st, &n); err != nil {
				return err
			}
			counts[session.State(st)] = float64(n)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT coalesce(sum(greatest(vm_last_seq - transcript_acked_seq, 0)), 0),
			coalesce(sum(vm_buffered_segments), 0), coalesce(sum(vm_retries), 0)
			FROM interviews.interview_sessions WHERE status IN ('provisioning','ready','in_progress','ending')`).
			Scan(&lag, &buffered, &retries)
	})
	if err != nil {
		f.db.logger.Warn("fleet metrics: database query failed", "error", err)
		ch <- prometheus.NewInvalidMetric(fleetStateDesc, err)
		return
	}
	for _, st := range session.States {
		ch <- prometheus.MustNewConstMetric(fleetStateDesc, prometheus.GaugeValue, counts[st], string(st))
	}
	ch <- prometheus.MustNewConstMetric(fleetLagDesc, prometheus.GaugeValue, lag)
	ch <- prometheus.MustNewConstMetric(fleetBufDesc, prometheus.GaugeValue, buffered)
	ch <- prometheus.MustNewConstMetric(fleetRetryDesc, prometheus.GaugeValue, retries)
}
