package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
	"github.com/interviewvm/controlplane/pkg/session"
)

// TestTransitionHooksRunInTheTransaction: a hook runs inside the change's
// transaction, with the interview's row locked, on both write paths (a
// tenant's update, the VM's transcript ingest), is told the change, and a
// hook's error rolls the whole change back.
func TestTransitionHooksRunInTheTransaction(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	tenant := uuid.NewString()
	c, p := seed(t, db, tenant)
	sc := session.TenantScope(tenant)

	var mu sync.Mutex
	var seen []string
	failNext := false
	db.OnTransition(func(ctx context.Context, tx pgx.Tx, iv session.Interview, from session.State) error {
		// The row is locked by this transaction: only it can lock it now.
		var locked string
		if err := tx.QueryRow(ctx, `SELECT id::text FROM interviews.interview_sessions
			WHERE id = $1 FOR UPDATE NOWAIT`, iv.ID).Scan(&locked); err != nil {
			return fmt.Errorf("lock the interview's row in the hook's transaction: %w", err)
		}
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, string(from)+">"+string(iv.Status))
		if failNext {
			failNext = false
			return errors.New("hook refused")
		}
		return nil
	})
	iv, err := db.CreateInterview(ctx, sc, session.Interview{CandidateID: c.ID, PositionID: p.ID, Architecture: "hybrid", MaxDurationS: 60})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	// A refused hook: nothing of the change is written.
	failNext = true
	_, err = db.UpdateInterview(ctx, sc, iv.ID, func(iv *session.Interview) ([]session.Event, error) {
		ev, err := iv.Transition(session.StateProvisioning, "", session.ActorUser, now)
		return []session.Event{ev}, err
	})
	if err == nil {
		t.Fatal("update with a failing hook succeeded")
	}
	if got, _ := db.Interview(ctx, sc, iv.ID); got.Status != session.StateScheduled {
		t.Fatalf("status after a failed hook = %s, want scheduled", got.Status)
	}
	if evs, _ := db.Events(ctx, sc, iv.ID); len(evs) != 0 {
		t.Fatalf("events after a failed hook = %+v, want none", evs)
	}
	// The tenant's path.
	if _, err := db.UpdateInterview(ctx, sc, iv.ID, func(iv *session.Interview) ([]session.Event, error) {
		ev, err := iv.Transition(session.StateProvisioning, "", session.ActorUser, now)
		return []session.Event{ev}, err
	}); err != nil {
		t.Fatal(err)
	}
	// A change that is not a transition runs no hook.
	if _, err := db.UpdateInterview(ctx, sc, iv.ID, func(iv *session.Interview) ([]session.Event, error) {
		iv.Machine = &session.Machine{ID: "m1", Name: "interview-x", State: "started", Provider: "local", Addr: "127.0.0.1:1"}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	// The ingest path: the batch's after-callback moves the interview on.
	if _, err := db.AppendTranscript(ctx, iv.ID, []session.Segment{{Seq: 1, Speaker: session.SpeakerInterviewer, Text: "Hello", ItemID: "i1"}},
		func(*session.Interview) error { return nil },
		func(iv *session.Interview) ([]session.Event, error) {
			ev, err := iv.Transition(session.StateReady, "", session.ActorVM, now)
			return []session.Event{ev}, err
		}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"scheduled>provisioning", "scheduled>provisioning", "provisioning>ready"}
	if len(seen) != len(want) {
		t.Fatalf("hooks saw %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("hooks saw %v, want %v", seen, want)
		}
	}
}

// A hook that swallows a failed statement leaves the transaction aborted:
// PostgreSQL answers its COMMIT with ROLLBACK, and the change must be
// reported failed, not committed. Also a change that is written and
// committed together with its notification in one pipeline is visible
// afterwards, on both the tenant's path and the system's.
func TestAbortedTransitionIsNotReportedCommitted(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	tenant := uuid.NewString()
	c, p := seed(t, db, tenant)
	sc := session.TenantScope(tenant)
	swallow := true
	db.OnTransition(func(ctx context.Context, tx pgx.Tx, iv session.Interview, from session.State) error {
		if swallow {
			_, _ = tx.Exec(ctx, `SELECT 1/0`) // fails; the error is ignored
		}
		return nil
	})
	iv, err := db.CreateInterview(ctx, sc, session.Interview{CandidateID: c.ID, PositionID: p.ID, Architecture: "hybrid", MaxDurationS: 60})
	if err != nil {
		t.Fatal(err)
	}
	toProvisioning := func(iv *session.Interview, _ int) ([]session.Event, error) {
		ev, err := iv.Transition(session.StateProvisioning, "", session.ActorUser, time.Now())
		return []session.Event{ev}, err
	}
	if _, _, err := db.StartInterview(ctx, sc, iv.ID, true, toProvisioning, nil); err == nil {
		t.Fatal("a start whose transaction was aborted reported success")
	}
	if got, _ := db.Interview(ctx, sc, iv.ID); got.Status != session.StateScheduled {
		t.Fatalf("status after an aborted start = %s, want scheduled", got.Status)
	}
	swallow = false
	got, pos, err := db.StartInterview(ctx, sc, iv.ID, false, toProvisioning, nil)
	if err != nil || got.Status != session.StateProvisioning {
		t.Fatalf("start = %s, %v; want provisioning", got.Status, err)
	}
	// The start reads the interview's position with it.
	if pos == nil || pos.ID != p.ID || pos.Title != "Engineer" || len(pos.Competencies) != 2 ||
		pos.Competencies[0].Name != "Go" || pos.Competencies[1].Weight != 2 {
		t.Fatalf("position read by the start = %+v, want %+v", pos, p)
	}
	// Not a transition (no hook): written and committed in one pipeline.
	if _, err := db.UpdateInterview(ctx, session.SystemScope(), iv.ID, func(iv *session.Interview) ([]session.Event, error) {
		iv.Machine = &session.Machine{ID: "m1", Name: "interview-x", State: "started", Provider: "local", Addr: "127.0.0.1:1"}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, err := db.Interview(ctx, sc, iv.ID); err != nil || got.Machine == nil || got.Machine.ID != "m1" || got.Status != session.StateProvisioning {
		t.Fatalf("interview after recording its machine = %+v, %v", got, err)
	}
	if evs, _ := db.Events(ctx, sc, iv.ID); len(evs) != 1 {
		t.Fatalf("events = %+v, want the one start", evs)
	}
}

// A hook registered for some statuses runs on changes into those only, and
// a change into any other status commits without it.
func TestHookRunsOnlyOnItsStatuses(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	tenant := uuid.NewString()
	c, p := seed(t, db, tenant)
	sc := session.TenantScope(tenant)
	var seen []session.State
	db.OnTransition(func(ctx context.Context, tx pgx.Tx, iv session.Interview, from session.State) error {
		seen = append(seen, iv.Status)
		// Runs in the change's transaction: a failure rolls it back.
		if iv.Status == session.StateCancelled {
			return errors.New("refused")
		}
		return nil
	}, session.StateReady, session.StateCancelled)
	iv, err := db.CreateInterview(ctx, sc, session.Interview{CandidateID: c.ID, PositionID: p.ID, Architecture: "hybrid", MaxDurationS: 60})
	if err != nil {
		t.Fatal(err)
	}
	to := func(st session.State) func(iv *session.Interview) ([]session.Event, error) {
		return func(iv *session.Interview) ([]session.Event, error) {
			ev, err := iv.Transition(st, "", session.ActorUser, time.Now())
			return []session.Event{ev}, err
		}
	}
	for _, st := range []session.State{session.StateProvisioning, session.StateReady, session.StateInProgress} {
		if got, err := db.UpdateInterview(ctx, sc, iv.ID, to(st)); err != nil || got.Status != st {
			t.Fatalf("change to %s = %s, %v", st, got.Status, err)
		}
	}
	if len(seen) != 1 || seen[0] != session.StateReady {
		t.Fatalf("hook ran on %v, want [ready] only", seen)
	}
	cancel := func(iv *session.Interview) ([]session.Event, error) {
		ev, err := iv.Transition(session.StateCancelled, session.ReasonCancelled, session.ActorUser, time.Now())
		return []session.Event{ev}, err
	}
	if _, err := db.UpdateInterview(ctx, sc, iv.ID, cancel); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("cancel with a refusing hook = %v, want its error", err)
	}
	if got, err := db.Interview(ctx, sc, iv.ID); err != nil || got.Status != session.StateInProgress {
		t.Fatalf("interview = %s, %v; want in_progress", got.Status, err)
	}
	if evs, _ := db.Events(ctx, sc, iv.ID); len(evs) != 3 {
		t.Fatalf("events = %+v, want the three changes made", evs)
	}
}
