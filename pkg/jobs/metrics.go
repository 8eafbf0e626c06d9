package jobs

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	depthDesc = prometheus.NewDesc("jobs_queue_depth",
		"Jobs waiting in each queue, by state: available (due now), scheduled and retryable (due later), running.",
		[]string{"queue", "state"}, nil)
	oldestDesc = prometheus.NewDesc("jobs_oldest_available_age_seconds",
		"How long the oldest due job of each queue has been waiting for a worker (0 when none waits).",
		[]string{"queue"}, nil)
)

// pendingStates are the states a queue's depth is reported in; every one
// is reported for every queue seen, zero included, so a drained queue
// reads 0 instead of disappearing.
var pendingStates = []string{"available", "scheduled", "retryable", "running"}

// Collector exports queue depth and the age of the oldest due job per
// queue, read from river_job at each scrape (every replica reports the
// whole queue): jobs_queue_depth{queue,state} and
// jobs_oldest_available_age_seconds{queue}, which the controller's
// registerer prefixes with interview_. Register it once per process.
func Collector(pool *pgxpool.Pool, logger *slog.Logger) prometheus.Collector {
	return &collector{pool: pool, logger: logger}
}

type collector struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- depthDesc
	ch <- oldestDesc
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rows, err := c.pool.Query(ctx, `
		SELECT queue, state::text, count(*),
			coalesce(extract(epoch FROM now() - min(scheduled_at) FILTER (WHERE scheduled_at <= now())), 0)::float8
		FROM `+Schema+`.river_job
		WHERE state IN ('available', 'scheduled', 'retryable', 'running')
		GROUP BY queue, state`)
	if err != nil {
		c.logger.Warn("job metrics: query river_job", "err", err)
		return
	}
	depth := map[string]map[string]float64{}
	oldest := map[string]float64{}
	for rows.Next() {
		var queue, state string
		var n int64
		var age float64
		if err := rows.Scan(&queue, &state, &n, &age); err != nil {
			rows.Close()
			c.logger.Warn("job metrics: scan river_job", "err", err)
			return
		}
		if depth[queue] == nil {
			depth[queue] = map[string]float64{}
		}
		depth[queue][state] = float64(n)
		if state == "available" {
			oldest[queue] = max(age, 0)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		c.logger.Warn("job metrics: read river_job", "err", err)
		return
	}
	// Queues with nothing pending still report zeros.
	qrows, err := c.pool.Query(ctx, `SELECT name FROM `+Schema+`.river_queue`)
	if err != nil {
		c.logger.Warn("job metrics: query river_queue", "err", err)
		return
	}
	defer qrows.Close()
	for qrows.Next() {
		var queue string
		if err := qrows.Scan(&queue); err != nil {
			c.logger.Warn("job metrics: scan river_queue", "err", err)
			return
		}
		if depth[queue] == nil {
			depth[queue] = map[string]float64{}
		}
	}
	for queue, states := range depth {
		for _, s := range pendingStates {
			ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, states[s], queue, s)
		}
		ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, oldest[queue], queue)
	}
}
