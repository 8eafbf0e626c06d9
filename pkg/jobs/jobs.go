// Package jobs runs durable background jobs on the control plane's own
// PostgreSQL through River (github.com/riverqueue/river, pgx v5 driver).
//
// River's tables (river_job, river_queue, river_leader, river_migration,
// river_client, river_client_queue) live in the control plane's schema,
// "interviews", next to its other tables. Migrate creates or upgrades them
// and grants the tenant role interview_app what a transactional insert
// needs, so a job can be enqueued from the same transaction as the state
// change that caused it, after that transaction switched to the tenant role.
//
// A Client is built with the workers this process runs and the queues it
// works; a Client without queues only inserts. The caller owns its life
// cycle: Start, then Stop (or StopAndCancel) before closing the pool.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"
)

// Schema is the PostgreSQL schema holding River's tables; it is the control
// plane's own schema.
const Schema = "interviews"

// appRole is the non-BYPASSRLS role tenant transactions switch to.
const appRole = "interview_app"

// migrateLockKey serialises concurrent controllers migrating River's tables
// (an arbitrary constant, distinct from goose's lock).
const migrateLockKey = 74211

// Config tells a Client which queues to work and how.
type Config struct {
	// Workers are the job kinds this process can work (river.NewWorkers,
	// then river.AddWorker per kind). Nil when Queues is empty.
	Workers *river.Workers
	// Queues maps each queue this process works to its maximum number of
	// concurrent jobs. Empty: the client only inserts.
	Queues map[string]int
	// RetryPolicy decides when a failed job runs again, for job kinds whose
	// worker does not override NextRetry. Nil: River's default backoff.
	RetryPolicy river.ClientRetryPolicy
	// JobTimeout bounds one attempt of a job whose worker sets no Timeout.
	// Zero: River's default (1 minute).
	JobTimeout time.Duration
	// RescueStuckJobsAfter is how long a job may stay running before it is
	// taken to belong to a dead process and is scheduled again. It must
	// exceed the longest attempt. Zero: River's default (1 hour).
	RescueStuckJobsAfter time.Duration
	// FetchPollInterval is how often an idle producer looks for jobs when
	// no notification arrives. Zero: River's default (1 s).
	FetchPollInterval time.Duration
	// FetchCooldown is the least time between two fetches of one queue's
	// producer, and between two insert notifications of one queue from
	// this client. It bounds a queue's throughput to its worker count per
	// cooldown, and an insert within a cooldown of the last notified one
	// is not notified (it waits for the next fetch or poll). Zero: River's
	// default (100 ms).
	FetchCooldown time.Duration
	// ID names this client in River's bookkeeping; empty: generated.
	ID string
}

// Client enqueues jobs and, when it has queues, works them.
type Client struct {
	river  *river.Client[pgx.Tx]
	logger *slog.Logger
}

// New builds a client on pool; it does not start working.
func New(pool *pgxpool.Pool, logger *slog.Logger, cfg Config) (*Client, error) {
	rc := &river.Config{
		ID:                   cfg.ID,
		Logger:               logger,
		Schema:               Schema,
		Workers:              cfg.Workers,
		RetryPolicy:          cfg.RetryPolicy,
		JobTimeout:           cfg.JobTimeout,
		RescueStuckJobsAfter: cfg.RescueStuckJobsAfter,
		FetchPollInterval:    cfg.FetchPollInterval,
		FetchCooldown:        cfg.FetchCooldown,
	}
	if len(cfg.Queues) > 0 {
		if cfg.Workers == nil {
			return nil, errors.New("jobs: queues configured without workers")
		}
		rc.Queues = make(map[string]river.QueueConfig, len(cfg.Queues))
		for name, n := range cfg.Queues {
			rc.Queues[name] = river.QueueConfig{MaxWorkers: n}
		}
	}
	rcl, err := river.NewClient(riverpgxv5.New(pool), rc)
	if err != nil {
		return nil, fmt.Errorf("create river client: %w", err)
	}
	return &Client{river: rcl, logger: logger}, nil
}

// Start starts working the configured queues, with River's maintenance
// services (leader election, rescuer of stuck jobs, cleaner) in the
// background until Stop. ctx bounds the start only when it is cancelled
// before Stop: cancelling it stops the client like Stop does.
func (c *Client) Start(ctx context.Context) error {
	if err := c.river.Start(ctx); err != nil {
		return fmt.Errorf("start river client: %w", err)
	}
	return nil
}

// Stop stops fetching jobs and waits for running ones to finish (until
// ctx is done); every goroutine the client started has returned after it.
func (c *Client) Stop(ctx context.Context) error {
	if err := c.river.Stop(ctx); err != nil {
		return fmt.Errorf("stop river client: %w", err)
	}
	return nil
}

// StopAndCancel cancels the running jobs' contexts and waits for them to
// return.
func (c *Client) StopAndCancel(ctx context.Context) error {
	if err := c.river.StopAndCancel(ctx); err != nil {
		return fmt.Errorf("stop river client: %w", err)
	}
	return nil
}

// InsertTx enqueues a job in tx: it becomes visible to workers when tx
// commits and never exists if tx rolls back. tx may have switched to the
// tenant role (SET LOCAL ROLE interview_app).
func (c *Client) InsertTx(ctx context.Context, tx pgx.Tx, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error) {
	res, err := c.river.InsertTx(ctx, tx, args, opts)
	if err != nil {
		return nil, fmt.Errorf("enqueue %s job: %w", args.Kind(), err)
	}
	return res, nil
}

// Insert enqueues a job in its own transaction.
func (c *Client) Insert(ctx context.Context, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error) {
	res, err := c.river.Insert(ctx, args, opts)
	if err != nil {
		return nil, fmt.Errorf("enqueue %s job: %w", args.Kind(), err)
	}
	return res, nil
}

// River is the underlying River client, for what this package does not
// wrap (JobGet, JobRetry, JobCancel, Subscribe, …).
func (c *Client) River() *river.Client[pgx.Tx] { return c.river }

// Migrate creates or upgrades River's tables in Schema and grants the
// tenant role what enqueueing needs. Run it after the control plane's own
// migrations (they create the schema and the role). Concurrent controllers
// serialise on an advisory lock.
func Migrate(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("river migration: acquire connection: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLockKey); err != nil {
		return fmt.Errorf("river migration: lock: %w", err)
	}
	defer func() {
		// A fresh context: the lock must go even when ctx is done.
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", migrateLockKey); err != nil {
			logger.Warn("river migration: unlock failed", "err", err)
		}
	}()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+Schema); err != nil {
		return fmt.Errorf("river migration: create schema %s: %w", Schema, err)
	}
	m, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: Schema, Logger: logger})
	if err != nil {
		return fmt.Errorf("river migration: %w", err)
	}
	res, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return fmt.Errorf("river migration: %w", err)
	}
	for _, v := range res.Versions {
		logger.Info("river migration applied", "version", v.Version, "name", v.Name, "duration", v.Duration)
	}
	// Enqueueing inserts a row (ON CONFLICT … DO UPDATE for unique jobs)
	// and takes the next id; it reads nothing else.
	grants := []string{
		"GRANT SELECT, INSERT, UPDATE ON " + Schema + ".river_job TO " + appRole,
		"GRANT USAGE ON SEQUENCE " + Schema + ".river_job_id_seq TO " + appRole,
	}
	for _, g := range grants {
		if _, err := conn.Exec(ctx, g); err != nil {
			return fmt.Errorf("river migration: %s: %w", g, err)
		}
	}
	return nil
}
