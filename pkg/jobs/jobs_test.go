package jobs_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/riverqueue/river"
	"go.uber.org/goleak"

	"github.com/interviewvm/controlplane/pkg/jobs"
	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
)

type echoArgs struct {
	Note string `json:"note"`
}

func (echoArgs) Kind() string { return "jobs_test_echo" }

type echoWorker struct {
	river.WorkerDefaults[echoArgs]
	done chan string
}

func (w *echoWorker) Work(_ context.Context, job *river.Job[echoArgs]) error {
	w.done <- job.Args.Note
	return nil
}

// migratedPool returns a pool on a fresh database with our migrations and
// River's applied (twice: Migrate is idempotent).
func migratedPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	db, _ := postgrestest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for range 2 {
		if err := jobs.Migrate(ctx, db.Pool, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatalf("jobs.Migrate: %v", err)
		}
	}
	return db.Pool
}

// tenantTx begins a transaction scoped like the stores' tenant
// transactions: switched to the non-BYPASSRLS role with a tenant set.
func tenantTx(t *testing.T, ctx context.Context, pool *pgxpool.Pool) pgx.Tx {
	t.Helper()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A failing test must not leave the connection busy (closing the pool
	// would wait for it); after Commit or Rollback this does nothing.
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	if _, err := tx.Exec(ctx, "SELECT set_config('role', 'interview_app', true), set_config('app.tenant_id', $1, true)", uuid.NewString()); err != nil {
		t.Fatal(err)
	}
	var role string
	if err := tx.QueryRow(ctx, "SELECT current_user").Scan(&role); err != nil || role != "interview_app" {
		t.Fatalf("transaction role %q (%v), want interview_app", role, err)
	}
	return tx
}

func TestRiverTablesLiveInOurSchema(t *testing.T) {
	pool := migratedPool(t)
	ctx := context.Background()
	for _, tbl := range []string{"river_job", "river_queue", "river_leader", "river_migration"} {
		var inOurs, inPublic bool
		if err := pool.QueryRow(ctx, "SELECT to_regclass('interviews.'||$1) IS NOT NULL, to_regclass('public.'||$1) IS NOT NULL", tbl).Scan(&inOurs, &inPublic); err != nil {
			t.Fatal(err)
		}
		if !inOurs || inPublic {
			t.Errorf("%s: in interviews %v, in public %v", tbl, inOurs, inPublic)
		}
	}
}

func TestTransactionalInsertFromTenantTransaction(t *testing.T) {
	// Registered first, so it runs last: after Stop and the pool's close,
	// nothing the client started is left running.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	pool := migratedPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	workers := river.NewWorkers()
	w := &echoWorker{done: make(chan string, 4)}
	river.AddWorker(workers, w)
	c, err := jobs.New(pool, slog.New(slog.DiscardHandler), jobs.Config{
		Workers: workers, Queues: map[string]int{river.QueueDefault: 2}, FetchPollInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
	}()

	// Rolled back: the job never exists.
	tx := tenantTx(t, ctx, pool)
	res, err := c.InsertTx(ctx, tx, echoArgs{Note: "rolled back"}, nil)
	if err != nil {
		t.Fatalf("InsertTx as interview_app: %v", err)
	}
	rolledBackID := res.Job.ID
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	// Committed: worked.
	tx = tenantTx(t, ctx, pool)
	if _, err := c.InsertTx(ctx, tx, echoArgs{Note: "committed"}, nil); err != nil {
		t.Fatalf("InsertTx as interview_app: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case note := <-w.done:
		if note != "committed" {
			t.Fatalf("worked %q, want the committed job", note)
		}
	case <-ctx.Done():
		t.Fatal("the committed job was not worked")
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM interviews.river_job WHERE id = $1", rolledBackID).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rolled-back job rows: %d (%v), want 0", n, err)
	}
	select {
	case note := <-w.done:
		t.Fatalf("worked %q after the committed job", note)
	default:
	}
}

func TestCollectorReportsDepthAndAge(t *testing.T) {
	pool := migratedPool(t)
	ctx := context.Background()
	// An insert-only client: nothing works the queue.
	c, err := jobs.New(pool, slog.New(slog.DiscardHandler), jobs.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := c.Insert(ctx, echoArgs{Note: "waiting"}, &river.InsertOpts{Queue: "backlog"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Insert(ctx, echoArgs{Note: "later"}, &river.InsertOpts{Queue: "backlog", ScheduledAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "UPDATE interviews.river_job SET scheduled_at = now() - interval '90 seconds' WHERE state = 'available'"); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(jobs.Collector(pool, slog.New(slog.DiscardHandler)))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			got[f.GetName()+"{"+labels(m)+"}"] = m.GetGauge().GetValue()
		}
	}
	if v := got["jobs_queue_depth{queue=backlog,state=available}"]; v != 3 {
		t.Errorf("available depth %v, want 3 (all: %v)", v, got)
	}
	if v := got["jobs_queue_depth{queue=backlog,state=scheduled}"]; v != 1 {
		t.Errorf("scheduled depth %v, want 1 (all: %v)", v, got)
	}
	if v, ok := got["jobs_queue_depth{queue=backlog,state=running}"]; !ok || v != 0 {
		t.Errorf("running depth %v (present %v), want a 0", v, ok)
	}
	if v := got["jobs_oldest_available_age_seconds{queue=backlog}"]; v < 90 {
		t.Errorf("oldest available age %v, want at least 90 s", v)
	}
}

func labels(m *dto.Metric) string {
	s := ""
	for i, l := range m.GetLabel() {
		if i > 0 {
			s += ","
		}
		s += l.GetName() + "=" + l.GetValue()
	}
	return s
}
