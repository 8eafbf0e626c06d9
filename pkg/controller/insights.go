package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"

	"github.com/interviewvm/controlplane/pkg/insights"
	"github.com/interviewvm/controlplane/pkg/jobs"
	"github.com/interviewvm/controlplane/pkg/postgres"
	"github.com/interviewvm/controlplane/pkg/session"
)

// InsightsWorkers is how many analyses one replica runs at once (the
// insights queue's concurrency on each controller).
const InsightsWorkers = 4

// insightsService wires the analyses of completed interviews: the scorer
// INSIGHTS picks, its worker on every replica's job queue, the transition
// hook that enqueues an analysis when an interview completes, and the
// API's read and re-run. jc is set once the job queue is open, before the
// controller serves.
type insightsService struct {
	db  *postgres.DB
	on  bool
	jc  *jobs.Client
	log *slog.Logger
}

// addInsights registers the analysis worker and queue on q and the
// enqueueing hook on db (unless INSIGHTS=off). Call setQueue with the
// opened client before serving.
func addInsights(cfg Config, db *postgres.DB, q *jobQueue, logger *slog.Logger, reg prometheus.Registerer) (*insightsService, error) {
	s := &insightsService{db: db, on: cfg.Insights != "off", log: logger}
	if !s.on {
		return s, nil
	}
	scorer, model, err := newScorer(cfg, logger)
	if err != nil {
		return nil, err
	}
	w, err := insights.NewWorker(insights.WorkerConfig{
		Store: db, Scorer: scorer, Model: model, Logger: logger, Registerer: reg,
		AttemptTimeout: insights.AttemptTimeout(cfg.InsightsTimeout),
	})
	if err != nil {
		return nil, err
	}
	if err := river.AddWorkerSafely(q.workers, w); err != nil {
		return nil, fmt.Errorf("insights worker: %w", err)
	}
	q.queue(insights.Queue, InsightsWorkers)
	db.OnTransition(s.onTransition, session.StateCompleted)
	return s, nil
}

func newScorer(cfg Config, logger *slog.Logger) (insights.Scorer, string, error) {
	if cfg.Insights != "openai" {
		return insights.NewSimulated(), "simulated", nil
	}
	o, err := insights.NewOpenAI(insights.OpenAIConfig{
		APIKey: cfg.OpenAIAPIKey, BaseURL: insightsBaseURL(cfg.OpenAIBaseURL), Model: cfg.InsightsModel, Logger: logger,
		RequestTimeout: cfg.InsightsTimeout,
	})
	if err != nil {
		return nil, "", fmt.Errorf("insights scorer: %w", err)
	}
	return o, o.Model(), nil
}

// insightsBaseURL is OPENAI_BASE_URL as the Responses API takes it: an
// origin alone (as the session VMs take it) gets the version path /v1.
func insightsBaseURL(base string) string {
	if base == "" {
		return insights.DefaultBaseURL
	}
	if u, err := url.Parse(base); err == nil && strings.Trim(u.Path, "/") == "" {
		return strings.TrimRight(base, "/") + "/v1"
	}
	return base
}

func (s *insightsService) setQueue(jc *jobs.Client) { s.jc = jc }

// onTransition enqueues the analysis of an interview that just completed,
// in the transaction that completes it (completed requires the whole
// transcript to be stored).
func (s *insightsService) onTransition(ctx context.Context, tx pgx.Tx, iv session.Interview, from session.State) error {
	if iv.Status != session.StateCompleted || from == session.StateCompleted {
		return nil
	}
	return s.enqueue(ctx, tx, iv.TenantID, iv.ID)
}

func (s *insightsService) enqueue(ctx context.Context, tx pgx.Tx, tenantID, id string) error {
	if s.jc == nil {
		return fmt.Errorf("insights: job queue not open")
	}
	if err := postgres.PendingInsightsTx(ctx, tx, tenantID, id); err != nil {
		return err
	}
	_, err := s.jc.InsertTx(ctx, tx, insights.JobArgs{InterviewID: id, TenantID: tenantID}, nil)
	return err
}

// Insights reads an interview's analysis (GET /v1/interviews/{id}/insights).
func (s *insightsService) Insights(ctx context.Context, scope session.Scope, id string) (session.Insights, error) {
	return s.db.Insights(ctx, scope, id)
}

// RerunInsights queues a new analysis of a completed interview (POST
// /v1/interviews/{id}/insights). Each re-run is its own job; should an
// earlier job of the interview still run, whichever finishes first while
// the analysis is running stores its outcome and the other's is dropped
// (one row per interview either way).
func (s *insightsService) RerunInsights(ctx context.Context, scope session.Scope, id string) error {
	if !s.on {
		return session.Errorf(session.ECONFLICT, "interview analysis is off on this controller (INSIGHTS=off)")
	}
	return s.db.RerunInsights(ctx, scope, id, func(ctx context.Context, tx pgx.Tx, tenantID string) error {
		_, err := s.jc.InsertTx(ctx, tx, insights.JobArgs{InterviewID: id, TenantID: tenantID, Rerun: uuid.NewString()}, nil)
		return err
	})
}
