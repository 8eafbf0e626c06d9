package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/interviewvm/controlplane/pkg/postgres"
	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
	"github.com/interviewvm/controlplane/pkg/session"
)

func seed(t *testing.T, db *postgres.DB, tenant string) (session.Candidate, session.PositionRecord) {
	t.Helper()
	ctx := context.Background()
	sc := session.TenantScope(tenant)
	c, err := db.CreateCandidate(ctx, sc, session.Candidate{FullName: "Ada Lovelace", Email: "ada@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := db.CreatePosition(ctx, sc, session.PositionRecord{Title: "Engineer", Competencies: []session.Competency{
		{Name: "Go", Weight: 3}, {Name: "SQL", Weight: 2},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return c, p
}

func TestMigrateIsIdempotentAndCurrent(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	if err := db.Migrate(ctx); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	ok, err := db.SchemaCurrent(ctx)
	if err != nil || !ok {
		t.Fatalf("SchemaCurrent = %v, %v; want true", ok, err)
	}
	if _, err := db.Pool.Exec(ctx, "DELETE FROM interviews.goose_db_version WHERE version_id > 0"); err != nil {
		t.Fatal(err)
	}
	if ok, err := db.SchemaCurrent(ctx); err != nil || ok {
		t.Fatalf("SchemaCurrent after rollback of bookkeeping = %v, %v; want false", ok, err)
	}
}

func TestTenantIsolation(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	a, b := uuid.NewString(), uuid.NewString()
	ca, pa := seed(t, db, a)
	cb, _ := seed(t, db, b)

	if _, err := db.Candidate(ctx, session.TenantScope(b), ca.ID); session.ErrorCode(err) != session.ENOTFOUND {
		t.Fatalf("tenant b reading a's candidate: err = %v, want not_found", err)
	}
	if _, err := db.Position(ctx, session.TenantScope(b), pa.ID); session.ErrorCode(err) != session.ENOTFOUND {
		t.Fatalf("tenant b reading a's position: err = %v, want not_found", err)
	}
	// b cannot schedule an interview of a's position, even with its own candidate.
	_, err := db.CreateInterview(ctx, session.TenantScope(b), session.Interview{
		CandidateID: cb.ID, PositionID: pa.ID, Architecture: "hybrid", MaxDurationS: 60})
	if session.ErrorCode(err) != session.ENOTFOUND {
		t.Fatalf("cross-tenant interview: err = %v, want not_found", err)
	}
	iv, err := db.CreateInterview(ctx, session.TenantScope(a), session.Interview{
		CandidateID: ca.ID, PositionID: pa.ID, Architecture: "hybrid", MaxDurationS: 60})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Interview(ctx, session.TenantScope(b), iv.ID); session.ErrorCode(err) != session.ENOTFOUND {
		t.Fatalf("tenant b reading a's interview: err = %v", err)
	}
	if _, err := db.UpdateInterview(ctx, session.TenantScope(b), iv.ID, func(*session.Interview) ([]session.Event, error) {
		t.Fatal("update callback ran for another tenant's interview")
		return nil, nil
	}); session.ErrorCode(err) != session.ENOTFOUND {
		t.Fatalf("tenant b updating a's interview: err = %v", err)
	}
	if got, err := db.Interview(ctx, session.SystemScope(), iv.ID); err != nil || got.TenantID != a {
		t.Fatalf("system scope read = %+v, %v", got, err)
	}
	// A scope-less transaction is refused outright.
	if _, err := db.Interview(ctx, session.Scope{}, iv.ID); err == nil {
		t.Fatal("read without a scope succeeded")
	}
	// Even a raw query as the application role without a tenant sees nothing.
	var n int
	err = db.Pool.QueryRow(ctx, `SELECT count(*) FROM interviews.interview_sessions`).Scan(&n)
	if err != nil || n != 1 { // the test logs in as a superuser: sanity check that the row exists
		t.Fatalf("superuser count = %d, %v", n, err)
	}
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, "SET LOCAL ROLE interview_app"); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM interviews.interview_sessions`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("app role without tenant sees %d rows (%v), want 0", n, err)
	}
}

func TestUpdateInterviewWritesTimeline(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	tenant := uuid.NewString()
	c, p := seed(t, db, tenant)
	sc := session.TenantScope(tenant)
	iv, err := db.CreateInterview(ctx, sc, session.Interview{CandidateID: c.ID, PositionID: p.ID, Architecture: "hybrid", MaxDurationS: 60})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	iv, err = db.UpdateInterview(ctx, sc, iv.ID, func(iv *session.Interview) ([]session.Event, error) {
		ev, err := iv.Transition(session.StateProvisioning, "", session.ActorUser, now)
		iv.Machine = &session.Machine{ID: "m1", Name: "interview-x", State: "created", Provider: "local", Addr: "127.0.0.1:1"}
		return []session.Event{ev}, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if iv.Status != session.StateProvisioning || iv.Machine == nil || iv.Machine.Addr != "127.0.0.1:1" || iv.StartedAt == nil {
		t.Fatalf("after update: %+v", iv)
	}
	// An illegal transition is an error and writes nothing.
	_, err = db.UpdateInterview(ctx, sc, iv.ID, func(iv *session.Interview) ([]session.Event, error) {
		ev, err := iv.Transition(session.StateCompleted, "", session.ActorUser, now)
		return []session.Event{ev}, err
	})
	if session.ErrorCode(err) != session.ECONFLICT {
		t.Fatalf("illegal transition: err = %v, want conflict", err)
	}
	got, err := db.Interview(ctx, sc, iv.ID)
	if err != nil || got.Status != session.StateProvisioning {
		t.Fatalf("status after refused transition = %v, %v", got.Status, err)
	}
	events, err := db.Events(ctx, sc, iv.ID)
	if err != nil || len(events) != 1 || events[0].From != session.StateScheduled || events[0].To != session.StateProvisioning {
		t.Fatalf("events = %+v, %v", events, err)
	}
}

func TestBadValuesAreInvalid(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	sc := session.TenantScope(uuid.NewString())
	if _, err := db.Candidate(ctx, sc, "not-a-uuid"); session.ErrorCode(err) != session.EINVALID {
		t.Fatalf("malformed id: err = %v, want invalid", err)
	}
	_, err := db.CreatePosition(ctx, sc, session.PositionRecord{Title: "x", Competencies: []session.Competency{{Name: "a", Weight: -1}}})
	if session.ErrorCode(err) != session.EINVALID {
		t.Fatalf("negative weight: err = %v, want invalid", err)
	}
}

// The LISTEN loop's connection is its own: every connection of the pool
// stays available to the work while it listens.
func TestListenerLeavesThePoolWhole(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		db.Listen(ctx, func(id string, _ int64) {
			if id == "" {
				select {
				case listening <- struct{}{}:
				default:
				}
			}
		})
	}()
	defer func() { cancel(); <-done }()
	select {
	case <-listening:
	case <-time.After(30 * time.Second):
		t.Fatal("the listener never started")
	}
	max := int(db.Pool.Config().MaxConns)
	var held []*pgxpool.Conn
	defer func() {
		for _, c := range held {
			c.Release()
		}
	}()
	for i := range max {
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := db.Pool.Acquire(actx)
		acancel()
		if err != nil {
			t.Fatalf("acquire connection %d of the pool's %d while listening: %v", i+1, max, err)
		}
		held = append(held, c)
	}
}
