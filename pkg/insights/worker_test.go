package insights_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/interviewvm/controlplane/pkg/insights"
	"github.com/interviewvm/controlplane/pkg/session"
)

// memStore is the worker's store in memory: one interview, its position
// and transcript, and the analysis row's status and attempts.
type memStore struct {
	status   session.InsightsStatus
	attempts int
	finished []session.Insights
}

func (m *memStore) Interview(_ context.Context, _ session.Scope, id string) (session.Interview, error) {
	return session.Interview{ID: id, PositionID: "p"}, nil
}

func (m *memStore) Position(context.Context, session.Scope, string) (session.PositionRecord, error) {
	return session.PositionRecord{Title: "Engineer", Competencies: []session.Competency{{Name: "Go", Weight: 1}}}, nil
}

func (m *memStore) Transcript(_ context.Context, _ session.Scope, _ string, after int64, _ int) ([]session.Segment, session.Interview, error) {
	if after > 0 {
		return nil, session.Interview{}, nil
	}
	return []session.Segment{{Seq: 1, Speaker: "candidate", Text: "I write Go every day."}}, session.Interview{}, nil
}

func (m *memStore) StartInsights(context.Context, string, string) (int, bool, error) {
	if m.status != session.InsightsPending && m.status != session.InsightsRunning {
		return 0, false, nil
	}
	m.status = session.InsightsRunning
	m.attempts++
	return m.attempts, true, nil
}

func (m *memStore) PendInsights(context.Context, string, string) error {
	m.status = session.InsightsPending
	return nil
}

func (m *memStore) FinishInsights(_ context.Context, in session.Insights) (bool, error) {
	if m.status != session.InsightsRunning {
		return false, nil
	}
	m.status = in.Status
	m.finished = append(m.finished, in)
	return true, nil
}

type failingScorer struct{ err error }

func (f failingScorer) Score(context.Context, insights.Input) (insights.Assessment, error) {
	return insights.Assessment{}, f.err
}

func job() *river.Job[insights.JobArgs] {
	return &river.Job[insights.JobArgs]{JobRow: &rivertype.JobRow{}, Args: insights.JobArgs{InterviewID: "i", TenantID: "t"}}
}

// Retryable failures snooze the job (Retry-After when the API named one,
// else a doubling backoff) until the attempts run out; then the analysis
// fails with the error and no scores.
func TestWorkerRetriesAreBounded(t *testing.T) {
	store := &memStore{status: session.InsightsPending}
	rateLimited := &insights.Error{Reason: insights.ReasonRateLimited, Retryable: true, RetryAfter: 7 * time.Second, Message: "slow down"}
	w, err := insights.NewWorker(insights.WorkerConfig{Store: store, Scorer: failingScorer{rateLimited}, Model: "m",
		MaxAttempts: 3, MinBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 3; i++ {
		err := w.Work(context.Background(), job())
		var snooze *rivertype.JobSnoozeError
		if !errors.As(err, &snooze) || snooze.Duration != 7*time.Second {
			t.Fatalf("attempt %d: Work = %v, want a snooze of the Retry-After", i, err)
		}
		if store.status != session.InsightsPending {
			t.Fatalf("attempt %d left the analysis %s, want pending", i, store.status)
		}
	}
	if err := w.Work(context.Background(), job()); err != nil {
		t.Fatalf("last attempt: Work = %v, want the job done", err)
	}
	if len(store.finished) != 1 {
		t.Fatalf("finished %d times", len(store.finished))
	}
	f := store.finished[0]
	if f.Status != session.InsightsFailed || f.OverallScore != nil || f.Error == nil ||
		!strings.Contains(*f.Error, "rate_limited") || !strings.Contains(*f.Error, "gave up after 3 attempts") {
		t.Errorf("final insights = %+v (error %v)", f, f.Error)
	}
	// A job of an analysis that already finished does nothing.
	if err := w.Work(context.Background(), job()); err != nil || len(store.finished) != 1 {
		t.Errorf("a job after the end: err %v, finished %d times", err, len(store.finished))
	}
}

func TestWorkerBackoffWithoutRetryAfter(t *testing.T) {
	store := &memStore{status: session.InsightsPending}
	down := &insights.Error{Reason: insights.ReasonServerError, Retryable: true, Message: "503"}
	w, err := insights.NewWorker(insights.WorkerConfig{Store: store, Scorer: failingScorer{down},
		MaxAttempts: 10, MinBackoff: time.Second, MaxBackoff: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second} {
		var snooze *rivertype.JobSnoozeError
		if err := w.Work(context.Background(), job()); !errors.As(err, &snooze) || snooze.Duration != want {
			t.Fatalf("attempt %d: Work = %v, want a snooze of %s", i+1, err, want)
		}
	}
}

// A permanent failure ends the analysis at once.
func TestWorkerPermanentFailure(t *testing.T) {
	store := &memStore{status: session.InsightsPending}
	refused := &insights.Error{Reason: insights.ReasonRefusal, Message: "the model refused"}
	w, err := insights.NewWorker(insights.WorkerConfig{Store: store, Scorer: failingScorer{refused}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Work(context.Background(), job()); err != nil {
		t.Fatal(err)
	}
	if store.status != session.InsightsFailed || store.attempts != 1 || !strings.Contains(*store.finished[0].Error, "refusal") {
		t.Errorf("after a refusal: %+v", store)
	}
}

// An attempt's time limit follows the scorer's request timeout; River
// rescues a dead replica's job no sooner than that.
func TestWorkerAttemptTimeout(t *testing.T) {
	store := &memStore{status: session.InsightsPending}
	w, err := insights.NewWorker(insights.WorkerConfig{Store: store, Scorer: insights.NewSimulated()})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := w.Timeout(nil), insights.DefaultRequestTimeout+30*time.Second; got != want {
		t.Errorf("default attempt timeout = %s, want %s", got, want)
	}
	w, err = insights.NewWorker(insights.WorkerConfig{Store: store, Scorer: insights.NewSimulated(),
		AttemptTimeout: insights.AttemptTimeout(20 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Timeout(nil); got != 50*time.Second {
		t.Errorf("attempt timeout with 20s requests = %s, want 50s", got)
	}
}
