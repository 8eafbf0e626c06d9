package insights

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Queue is the job queue analyses run on.
const Queue = "insights"

// Job settings.
const (
	// DefaultMaxAttempts bounds the attempts of one analysis (retryable
	// failures included); past it the analysis fails.
	DefaultMaxAttempts = 8
	// DefaultMinBackoff is the wait after the first retryable failure
	// that named no Retry-After; it doubles per attempt up to
	// DefaultMaxBackoff.
	DefaultMinBackoff = 5 * time.Second
	DefaultMaxBackoff = 5 * time.Minute
	// storeRoom is what an attempt may take beyond the scorer's request
	// timeout: loading the input and storing the outcome.
	storeRoom = 30 * time.Second
	// transcriptPage is how many segments one read of the transcript asks.
	transcriptPage = 1000
)

// JobArgs names the interview an analysis job scores.
type JobArgs struct {
	InterviewID string `json:"interview_id"`
	TenantID    string `json:"tenant_id"`
	// Rerun, set by a re-run (a fresh value each time), makes its job
	// distinct from the one the completion queued, which may still be
	// finishing: River completes jobs after Work returns, so a re-run
	// right after an analysis would otherwise be taken for a duplicate.
	Rerun string `json:"rerun,omitempty"`
}

// Kind is the job kind in River's table.
func (JobArgs) Kind() string { return "insights_analyze" }

// InsertOpts puts the job on Queue, unique per interview while it waits or
// runs (a finished job does not block a re-run).
func (JobArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue: Queue,
		// River counts only failures; snoozes (retryable scorer errors)
		// are bounded by the worker's own attempt count.
		MaxAttempts: DefaultMaxAttempts,
		UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: []rivertype.JobState{
			rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
			rivertype.JobStateRetryable, rivertype.JobStateScheduled,
		}},
	}
}

// Store is what the worker reads and writes (pkg/postgres).
type Store interface {
	Interview(ctx context.Context, scope session.Scope, id string) (session.Interview, error)
	Position(ctx context.Context, scope session.Scope, id string) (session.PositionRecord, error)
	Transcript(ctx context.Context, scope session.Scope, id string, afterSeq int64, limit int) ([]session.Segment, session.Interview, error)
	// StartInsights marks the analysis running and counts the attempt;
	// ok is false when there is nothing to run.
	StartInsights(ctx context.Context, tenantID, id string) (attempts int, ok bool, err error)
	// PendInsights puts a running analysis back to pending.
	PendInsights(ctx context.Context, tenantID, id string) error
	// FinishInsights stores a final outcome of a running analysis.
	FinishInsights(ctx context.Context, in session.Insights) (bool, error)
}

// WorkerConfig configures the analysis worker.
type WorkerConfig struct {
	Store  Store
	Scorer Scorer
	// Model names the scorer's model on failures that produced no answer.
	Model string
	// MaxAttempts, MinBackoff, MaxBackoff: defaults DefaultMaxAttempts,
	// DefaultMinBackoff, DefaultMaxBackoff.
	MaxAttempts int
	MinBackoff  time.Duration
	MaxBackoff  time.Duration
	// AttemptTimeout bounds one attempt (default
	// AttemptTimeout(DefaultRequestTimeout)). River does not run a job
	// left running by a dead process again before this has passed.
	AttemptTimeout time.Duration
	Logger         *slog.Logger
	// Registerer receives the analysis metrics (nil: none).
	Registerer prometheus.Registerer
}

// Worker runs analysis jobs: it loads the interview's position and
// transcript, runs Analyze and stores the outcome. A retryable failure
// waits (the API's Retry-After, else an exponential backoff) and tries
// again, up to MaxAttempts; a permanent one, or the last attempt, ends in
// failed with the error — never in made-up scores. An input that cannot
// be scored (no competencies, no candidate speech) ends in
// not_applicable.
type Worker struct {
	river.WorkerDefaults[JobArgs]
	cfg     WorkerConfig
	metrics *workerMetrics
}

// NewWorker builds the worker; its metrics are registered on
// cfg.Registerer.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	if cfg.Store == nil || cfg.Scorer == nil {
		return nil, errors.New("insights: worker needs a store and a scorer")
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = AttemptTimeout(DefaultRequestTimeout)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newWorkerMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Worker{cfg: cfg, metrics: m}, nil
}

// AttemptTimeout is the bound of one attempt for a scorer whose requests
// are bounded by requestTimeout: the request plus room for the store.
func AttemptTimeout(requestTimeout time.Duration) time.Duration { return requestTimeout + storeRoom }

// Timeout bounds one attempt.
func (w *Worker) Timeout(*river.Job[JobArgs]) time.Duration { return w.cfg.AttemptTimeout }

// Work runs one attempt of an analysis.
func (w *Worker) Work(ctx context.Context, job *river.Job[JobArgs]) error {
	a := job.Args
	attempts, ok, err := w.cfg.Store.StartInsights(ctx, a.TenantID, a.InterviewID)
	if err != nil {
		return err
	}
	if !ok {
		return nil // erased, or already finished
	}
	log := w.cfg.Logger.With("session_id", a.InterviewID, "attempt", attempts)
	start := time.Now()
	in, err := w.load(ctx, a)
	if session.ErrorCode(err) == session.ENOTFOUND {
		return nil // erased while queued
	}
	if err != nil {
		if perr := w.cfg.Store.PendInsights(context.WithoutCancel(ctx), a.TenantID, a.InterviewID); perr != nil {
			log.Warn("insights: put back to pending", "error", perr)
		}
		return fmt.Errorf("load interview %s for analysis: %w", a.InterviewID, err)
	}
	res, err := Analyze(ctx, w.cfg.Scorer, in)
	w.metrics.duration.Observe(time.Since(start).Seconds())
	// Whatever happened next, the outcome is stored even if ctx just ended.
	sctx := context.WithoutCancel(ctx)
	if err == nil {
		w.metrics.tokens(res.Usage)
		return w.finish(sctx, log, ready(a, res), "ready")
	}
	var e *Error
	if !errors.As(err, &e) {
		e = classify(err)
	}
	w.metrics.tokens(e.Usage)
	if e.Retryable && attempts < w.cfg.MaxAttempts {
		wait := e.RetryAfter
		if wait <= 0 {
			wait = w.backoff(attempts)
		}
		w.metrics.outcome("retry", e.Reason)
		log.Info("insights: analysis will be retried", "reason", e.Reason, "wait", wait, "error", e.Error())
		if perr := w.cfg.Store.PendInsights(sctx, a.TenantID, a.InterviewID); perr != nil {
			log.Warn("insights: put back to pending", "error", perr)
		}
		return river.JobSnooze(wait)
	}
	status := session.InsightsFailed
	if e.Reason == ReasonNotApplicable {
		status = session.InsightsNotApplicable
	}
	msg := e.Error()
	if e.Retryable {
		msg = fmt.Sprintf("%s (gave up after %d attempts)", msg, attempts)
	}
	out := session.Insights{
		InterviewID: a.InterviewID, TenantID: a.TenantID, Status: status, Model: w.cfg.Model,
		Usage: session.InsightsUsage(e.Usage), Error: &msg,
		Competencies: json.RawMessage("[]"), Strengths: json.RawMessage("[]"), Concerns: json.RawMessage("[]"),
	}
	if status == session.InsightsNotApplicable {
		out.Model = ""
	}
	return w.finish(sctx, log, out, string(status), e.Reason)
}

func (w *Worker) finish(ctx context.Context, log *slog.Logger, out session.Insights, outcome string, reason ...Reason) error {
	ok, err := w.cfg.Store.FinishInsights(ctx, out)
	if err != nil {
		return err
	}
	r := Reason("")
	if len(reason) > 0 {
		r = reason[0]
	}
	if ok {
		w.metrics.outcome(outcome, r)
		log.Info("insights: analysis finished", "status", out.Status, "reason", r)
	}
	return nil
}

func (w *Worker) backoff(attempt int) time.Duration {
	d := w.cfg.MinBackoff
	for i := 1; i < attempt && d < w.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, w.cfg.MaxBackoff)
}

// load reads what the analysis scores: the position, its competencies and
// the whole transcript.
func (w *Worker) load(ctx context.Context, a JobArgs) (Input, error) {
	scope := session.TenantScope(a.TenantID)
	iv, err := w.cfg.Store.Interview(ctx, scope, a.InterviewID)
	if err != nil {
		return Input{}, err
	}
	pos, err := w.cfg.Store.Position(ctx, scope, iv.PositionID)
	if err != nil {
		return Input{}, err
	}
	in := Input{PositionTitle: pos.Title, PositionDescription: pos.Description}
	for _, c := range pos.Competencies {
		in.Competencies = append(in.Competencies, Competency{Name: c.Name, Weight: c.Weight, Description: c.Description})
	}
	var after int64
	for {
		segs, _, err := w.cfg.Store.Transcript(ctx, scope, a.InterviewID, after, transcriptPage)
		if err != nil {
			return Input{}, err
		}
		for _, s := range segs {
			if !s.Failed {
				in.Segments = append(in.Segments, Segment{Seq: s.Seq, Speaker: s.Speaker, Text: s.Text})
			}
			after = s.Seq
		}
		if len(segs) < transcriptPage {
			return in, nil
		}
	}
}

func ready(a JobArgs, res Result) session.Insights {
	comps, _ := json.Marshal(res.Competencies)
	strengths, _ := json.Marshal(res.Strengths)
	concerns, _ := json.Marshal(res.Concerns)
	score := res.OverallScore
	rec := string(res.Recommendation)
	return session.Insights{
		InterviewID: a.InterviewID, TenantID: a.TenantID, Status: session.InsightsReady,
		Model: res.Model, Simulated: res.Simulated, OverallScore: &score, Recommendation: &rec,
		Summary: res.Summary, Competencies: comps, Strengths: strengths, Concerns: concerns,
		Usage: session.InsightsUsage(res.Usage), DroppedEvidence: res.DroppedEvidence,
		OmittedSegments: res.OmittedSegments,
	}
}

type workerMetrics struct {
	analyses *prometheus.CounterVec
	duration prometheus.Histogram
	tokenSum *prometheus.CounterVec
}

func newWorkerMetrics(reg prometheus.Registerer) (*workerMetrics, error) {
	m := &workerMetrics{
		analyses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "insights_analyses_total",
			Help: "Analysis attempts by outcome (ready, not_applicable, failed, retry) and failure reason.",
		}, []string{"outcome", "reason"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "insights_analysis_duration_seconds",
			Help:    "Time of one analysis attempt: loading the input and scoring it.",
			Buckets: []float64{0.01, 0.05, 0.25, 1, 5, 15, 30, 60, 120, 300},
		}),
		tokenSum: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "insights_tokens_total",
			Help: "Model tokens spent by analyses, by direction (input, output).",
		}, []string{"direction"}),
	}
	// Series an alert divides by exist from the start.
	for _, o := range []string{"ready", "failed", "not_applicable", "retry"} {
		m.analyses.WithLabelValues(o, "")
	}
	m.tokenSum.WithLabelValues("input")
	m.tokenSum.WithLabelValues("output")
	if reg != nil {
		for _, c := range []prometheus.Collector{m.analyses, m.duration, m.tokenSum} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("insights: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *workerMetrics) outcome(outcome string, r Reason) {
	m.analyses.WithLabelValues(outcome, string(r)).Inc()
}

func (m *workerMetrics) tokens(u Usage) {
	m.tokenSum.WithLabelValues("input").Add(float64(u.InputTokens))
	m.tokenSum.WithLabelValues("output").Add(float64(u.OutputTokens))
}
