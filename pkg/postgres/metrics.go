package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Collector returns a Prometheus collector of the connection pool's
// statistics, read from pgxpool.Stat at each scrape: the gauges
// pgxpool_acquired_conns, pgxpool_constructing_conns, pgxpool_idle_conns,
// pgxpool_total_conns and pgxpool_max_conns, and the counters
// pgxpool_acquire_total, pgxpool_canceled_acquire_total,
// pgxpool_empty_acquire_total (acquires that waited for a connection),
// pgxpool_new_conns_total, pgxpool_max_lifetime_destroy_total,
// pgxpool_max_idle_destroy_total, pgxpool_acquire_duration_seconds_total
// and pgxpool_empty_acquire_wait_time_seconds_total. (The controller
// registers it under its interview_ prefix.) Register it once per DB.
func (db *DB) Collector() prometheus.Collector { return &poolCollector{db: db} }

type poolCollector struct{ db *DB }

// poolMetric is one statistic of pgxpool.Stat.
type poolMetric struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(*pgxpool.Stat) float64
}

func poolGauge(name, help string, v func(*pgxpool.Stat) float64) poolMetric {
	return poolMetric{prometheus.NewDesc("pgxpool_"+name, help, nil, nil), prometheus.GaugeValue, v}
}

func poolCounter(name, help string, v func(*pgxpool.Stat) float64) poolMetric {
	return poolMetric{prometheus.NewDesc("pgxpool_"+name, help, nil, nil), prometheus.CounterValue, v}
}

var poolMetrics = []poolMetric{
	poolGauge("acquired_conns", "Connections currently acquired from the pool.",
		func(s *pgxpool.Stat) float64 { return float64(s.AcquiredConns()) }),
	poolGauge("constructing_conns", "Connections being established.",
		func(s *pgxpool.Stat) float64 { return float64(s.ConstructingConns()) }),
	poolGauge("idle_conns", "Idle connections in the pool.",
		func(s *pgxpool.Stat) float64 { return float64(s.IdleConns()) }),
	poolGauge("total_conns", "Connections in the pool: acquired, idle and being established.",
		func(s *pgxpool.Stat) float64 { return float64(s.TotalConns()) }),
	poolGauge("max_conns", "Largest size of the pool.",
		func(s *pgxpool.Stat) float64 { return float64(s.MaxConns()) }),
	poolCounter("acquire_total", "Successful acquires of a connection from the pool.",
		func(s *pgxpool.Stat) float64 { return float64(s.AcquireCount()) }),
	poolCounter("canceled_acquire_total", "Acquires canceled by their context.",
		func(s *pgxpool.Stat) float64 { return float64(s.CanceledAcquireCount()) }),
	poolCounter("empty_acquire_total", "Successful acquires that waited for a connection because the pool was empty.",
		func(s *pgxpool.Stat) float64 { return float64(s.EmptyAcquireCount()) }),
	poolCounter("new_conns_total", "Connections the pool opened.",
		func(s *pgxpool.Stat) float64 { return float64(s.NewConnsCount()) }),
	poolCounter("max_lifetime_destroy_total", "Connections closed for exceeding their maximum lifetime.",
		func(s *pgxpool.Stat) float64 { return float64(s.MaxLifetimeDestroyCount()) }),
	poolCounter("max_idle_destroy_total", "Connections closed for exceeding their maximum idle time.",
		func(s *pgxpool.Stat) float64 { return float64(s.MaxIdleDestroyCount()) }),
	poolCounter("acquire_duration_seconds_total", "Time spent in successful acquires, summed.",
		func(s *pgxpool.Stat) float64 { return s.AcquireDuration().Seconds() }),
	poolCounter("empty_acquire_wait_time_seconds_total", "Time successful acquires waited for a connection from an empty pool, summed.",
		func(s *pgxpool.Stat) float64 { return s.EmptyAcquireWaitTime().Seconds() }),
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range poolMetrics {
		ch <- m.desc
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.db.Pool.Stat()
	for _, m := range poolMetrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value(st))
	}
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
