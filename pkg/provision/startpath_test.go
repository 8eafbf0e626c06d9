package provision

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
	"github.com/interviewvm/controlplane/pkg/session"
)

// readCounter is a Store that counts the reads made outside the start's
// and the reports' own transactions.
type readCounter struct {
	Store
	interviews, positions atomic.Int64
}

func (r *readCounter) Interview(ctx context.Context, scope session.Scope, id string) (session.Interview, error) {
	r.interviews.Add(1)
	return r.Store.Interview(ctx, scope, id)
}

func (r *readCounter) Position(ctx context.Context, scope session.Scope, id string) (session.PositionRecord, error) {
	r.positions.Add(1)
	return r.Store.Position(ctx, scope, id)
}

// TestColdStartReadsNothingMore: between a waiting start request and its
// answer, a cold start on one replica runs its own transactions only (the
// start, recording the machine, the VM's ready report): the position comes
// with the start, the waiting request takes the start's result and the
// interview the ready report hands over, and so does the launcher.
func TestColdStartReadsNothingMore(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	store := &readCounter{Store: db}
	machines := newMem()
	svc := New(Config{Provider: "mem", ControllerURL: "http://x", Realtime: session.RealtimeSimulated},
		store, machines, slog.New(slog.DiscardHandler), nil)
	svc.readyPoll = time.Hour // the safety net's read would be counted
	t.Cleanup(svc.Close)

	scope := session.TenantScope(uuid.NewString())
	pos, err := db.CreatePosition(ctx, scope, session.PositionRecord{Title: "Backend",
		Competencies: []session.Competency{{Name: "Go", Weight: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	cand, err := db.CreateCandidate(ctx, scope, session.Candidate{FullName: "A", Email: "a@b.c"})
	if err != nil {
		t.Fatal(err)
	}
	iv, err := db.CreateInterview(ctx, scope, session.Interview{CandidateID: cand.ID, PositionID: pos.ID, Architecture: "hybrid", MaxDurationS: 600})
	if err != nil {
		t.Fatal(err)
	}

	type answer struct {
		iv  session.Interview
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		got, err := svc.Start(ctx, scope, iv.ID, 30*time.Second)
		answered <- answer{got, err}
	}()
	// The machine is created and recorded; then its VM reports ready.
	var token string
	deadline := time.Now().Add(30 * time.Second)
	for {
		machines.mu.Lock()
		if len(machines.specs) > 0 {
			token = machines.specs[0].Env[session.EnvSessionToken]
		}
		machines.mu.Unlock()
		if token != "" {
			if cur, err := db.Interview(ctx, scope, iv.ID); err == nil && cur.Machine != nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the started interview's machine was never created and recorded")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := svc.Ready(ctx, iv.ID, token, session.ReadyRequest{}); err != nil {
		t.Fatal(err)
	}
	var a answer
	select {
	case a = <-answered:
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting start never answered after the ready report")
	}
	if a.err != nil || !a.iv.Connectable() {
		t.Fatalf("start = %s (machine %v), %v; want ready and connectable", a.iv.Status, a.iv.Machine, a.err)
	}
	// The launcher ends on the ready report too: once it has released the
	// session, every read it would make is made.
	for svc.Launching(iv.ID) {
		if time.Now().After(deadline) {
			t.Fatal("the launch never ended after the ready report")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n, p := store.interviews.Load(), store.positions.Load(); n != 0 || p != 0 {
		t.Errorf("the start read the interview %d times and the position %d times besides its transactions, want 0 and 0", n, p)
	}
	machines.mu.Lock()
	env := machines.specs[0].Env[session.EnvSessionConfig]
	machines.mu.Unlock()
	if env == "" {
		t.Error("the machine was created without its VM's configuration")
	}
}

// updateCounter is a Store that counts UpdateInterview's transactions.
type updateCounter struct {
	Store
	updates atomic.Int64
}

func (u *updateCounter) UpdateInterview(ctx context.Context, scope session.Scope, id string,
	fn func(iv *session.Interview) ([]session.Event, error)) (session.Interview, error) {
	u.updates.Add(1)
	return u.Store.UpdateInterview(ctx, scope, id, fn)
}

// flyLike is memMachines answering as Fly does: a machine is created in
// state created and runs (started) once WaitStarted returns, which it
// tells on started.
type flyLike struct {
	*memMachines
	started chan struct{}
}

func (f flyLike) Create(ctx context.Context, spec session.MachineSpec) (session.Machine, error) {
	m, err := f.memMachines.Create(ctx, spec)
	m.State = session.MachineCreated
	return m, err
}

func (f flyLike) WaitStarted(ctx context.Context, id string) (session.Machine, error) {
	m, err := f.memMachines.WaitStarted(ctx, id)
	close(f.started)
	return m, err
}

// TestStartedMachineIsWrittenWithReady: a machine created in state created
// and then started is written twice on a cold start's path, not three
// times: its record at creation, then, with the VM's ready report, as
// started (the launcher's own write of the started state is not needed).
// The interview answered and the one stored both show it started.
func TestStartedMachineIsWrittenWithReady(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	store := &updateCounter{Store: db}
	machines := flyLike{memMachines: newMem(), started: make(chan struct{})}
	svc := New(Config{Provider: "mem", ControllerURL: "http://x", Realtime: session.RealtimeSimulated},
		store, machines, slog.New(slog.DiscardHandler), nil)
	svc.readyPoll = time.Hour
	t.Cleanup(svc.Close)

	scope := session.TenantScope(uuid.NewString())
	pos, err := db.CreatePosition(ctx, scope, session.PositionRecord{Title: "Backend"})
	if err != nil {
		t.Fatal(err)
	}
	cand, err := db.CreateCandidate(ctx, scope, session.Candidate{FullName: "A", Email: "a@b.c"})
	if err != nil {
		t.Fatal(err)
	}
	iv, err := db.CreateInterview(ctx, scope, session.Interview{CandidateID: cand.ID, PositionID: pos.ID, Architecture: "hybrid", MaxDurationS: 600})
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		iv  session.Interview
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		got, err := svc.Start(ctx, scope, iv.ID, 30*time.Second)
		answered <- answer{got, err}
	}()
	select {
	case <-machines.started:
	case <-time.After(30 * time.Second):
		t.Fatal("the launcher never waited for the machine to start")
	}
	machines.mu.Lock()
	token := machines.specs[0].Env[session.EnvSessionToken]
	machines.mu.Unlock()
	if err := svc.Ready(ctx, iv.ID, token, session.ReadyRequest{}); err != nil {
		t.Fatal(err)
	}
	var a answer
	select {
	case a = <-answered:
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting start never answered after the ready report")
	}
	deadline := time.Now().Add(30 * time.Second)
	for svc.Launching(iv.ID) {
		if time.Now().After(deadline) {
			t.Fatal("the launch never ended after the ready report")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if a.err != nil || !a.iv.Connectable() || a.iv.Machine.State != session.MachineStarted {
		t.Fatalf("start = %s (machine %+v), %v; want ready with its machine started", a.iv.Status, a.iv.Machine, a.err)
	}
	stored, err := db.Interview(ctx, scope, iv.ID)
	if err != nil || stored.Machine == nil || stored.Machine.State != session.MachineStarted {
		t.Fatalf("stored machine = %+v, %v; want started", stored.Machine, err)
	}
	if n := store.updates.Load(); n != 2 {
		t.Errorf("the start's path wrote the interview %d times besides the start, want 2 (machine created, ready)", n)
	}
}

// TestUncommittedStartLeavesNoMachine: the launch begins while the start's
// COMMIT is in flight, so its machine may be created before the start is
// known to have committed. When it did not (here a hook left the
// transaction aborted: PostgreSQL answers the COMMIT with ROLLBACK), the
// start fails, the interview stays scheduled without a machine, and every
// machine created meanwhile is destroyed.
func TestUncommittedStartLeavesNoMachine(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	db.OnTransition(func(ctx context.Context, tx pgx.Tx, _ session.Interview, _ session.State) error {
		_, _ = tx.Exec(ctx, `SELECT 1/0`) // swallowed: the transaction is aborted
		return nil
	}, session.StateProvisioning)
	machines := newMem()
	svc := New(Config{Provider: "mem", ControllerURL: "http://x", Realtime: session.RealtimeSimulated},
		db, machines, slog.New(slog.DiscardHandler), nil)
	svc.readyPoll = time.Hour

	scope := session.TenantScope(uuid.NewString())
	pos, err := db.CreatePosition(ctx, scope, session.PositionRecord{Title: "Backend"})
	if err != nil {
		t.Fatal(err)
	}
	cand, err := db.CreateCandidate(ctx, scope, session.Candidate{FullName: "A", Email: "a@b.c"})
	if err != nil {
		t.Fatal(err)
	}
	iv, err := db.CreateInterview(ctx, scope, session.Interview{CandidateID: cand.ID, PositionID: pos.ID, Architecture: "hybrid", MaxDurationS: 600})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Start(ctx, scope, iv.ID, 0); err == nil {
		t.Fatal("a start whose COMMIT was answered with ROLLBACK succeeded")
	}
	svc.Close() // waits for the launch
	machines.mu.Lock()
	created, left := machines.creates, len(machines.machines)
	machines.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d of %d machines created for the uncommitted start are left, want 0", left, created)
	}
	got, err := db.Interview(ctx, scope, iv.ID)
	if err != nil || got.Status != session.StateScheduled || got.Machine != nil {
		t.Fatalf("interview after the failed start = %s, machine %+v, %v; want scheduled without a machine", got.Status, got.Machine, err)
	}
}
