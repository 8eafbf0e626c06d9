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

// jobQueue assembles the durable jobs (River, in our PostgreSQL): each
// feature that has jobs adds its workers and queues before open, and
// enqueues through the client open returns (in transition hooks, so a job
// commits with the change that caused it).
type jobQueue struct {
	workers *river.Workers
	queues  map[string]int
}

func newJobQueue() *jobQueue {
	return &jobQueue{workers: river.NewWorkers(), queues: map[string]int{}}
}

// queue makes this replica work queue name with up to n jobs at once.
func (q *jobQueue) queue(name string, n int) { q.queues[name] = n }

// open builds the client and registers the queue's metrics; it works
// nothing until started.
func (q *jobQueue) open(db *postgres.DB, logger *slog.Logger, reg prometheus.Registerer) (*jobs.Client, error) {
	cfg := jobs.Config{RescueStuckJobsAfter: rescueStuckJobsAfter}
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
