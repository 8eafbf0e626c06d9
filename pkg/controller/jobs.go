package controller

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"

	"github.com/interviewvm/controlplane/pkg/jobs"
	"github.com/interviewvm/controlplane/pkg/postgres"
)

// rescueStuckJobsAfter is how long a job may stay running before River
// takes its process for dead and runs it again. It must exceed the longest
// attempt of any worker (each worker bounds its own attempts with Timeout).
const rescueStuckJobsAfter = 6 * time.Minute

// jobFetchCooldown is the least time between two fetches of a queue (and
// between two insert notifications of a queue from one replica). River's
// 100 ms default capped the insights queue at its 4 workers per 100 ms
// (35 analyses/s against a fake that answers at once), and an analysis
// enqueued within 100 ms of the last notified one waited for the 1 s
// poll. A fetch is one indexed query; at most 100 a second per queue
// while jobs keep coming.
const jobFetchCooldown = 10 * time.Millisecond

// jobQueue assembles the durable jobs (River, in our PostgreSQL): each
// feature that has jobs adds its workers and queues before open, and
// enqueues through the client open returns (in transition hooks, so a job
// commits with the change that caused it).
type jobQueue struct {
	workers *river.Workers
	queues  map[string]int
	// rescueAfter overrides rescueStuckJobsAfter when set
	// (JOB_RESCUE_AFTER).
	rescueAfter time.Duration
}

func newJobQueue() *jobQueue {
	return &jobQueue{workers: river.NewWorkers(), queues: map[string]int{}}
}

// queue makes this replica work queue name with up to n jobs at once.
func (q *jobQueue) queue(name string, n int) { q.queues[name] = n }

// open builds the client and registers the queue's metrics; it works
// nothing until started.
func (q *jobQueue) open(db *postgres.DB, logger *slog.Logger, reg prometheus.Registerer) (*jobs.Client, error) {
	cfg := jobs.Config{RescueStuckJobsAfter: rescueStuckJobsAfter, FetchCooldown: jobFetchCooldown}
	if q.rescueAfter > 0 {
		cfg.RescueStuckJobsAfter = q.rescueAfter
	}
	if len(q.queues) > 0 {
		cfg.Workers, cfg.Queues = q.workers, q.queues
	}
	c, err := jobs.New(db.Pool, logger, cfg)
	if err != nil {
		return nil, fmt.Errorf("job queue: %w", err)
	}
	if err := reg.Register(jobs.Collector(db.Pool, logger)); err != nil {
		return nil, fmt.Errorf("job queue metrics: %w", err)
	}
	return c, nil
}

// migrate runs the control plane's migrations, then River's (which need
// the schema and role ours create).
func migrate(ctx context.Context, db *postgres.DB, logger *slog.Logger) error {
	if err := db.Migrate(ctx); err != nil {
		return err
	}
	if err := jobs.Migrate(ctx, db.Pool, logger); err != nil {
		return fmt.Errorf("migrate job queue: %w", err)
	}
	return nil
}
