package provision

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/interviewvm/controlplane/pkg/postgres"
	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
	"github.com/interviewvm/controlplane/pkg/session"
)

// memMachines is an in-memory provider.
type memMachines struct {
	mu        sync.Mutex
	n         int
	machines  map[string]session.Machine
	creates   int
	destroyed []string
	specs     []session.MachineSpec // of every Create
	gets      int
	// tenant names the machines add creates, as the provision path does.
	tenant string
}

func newMem() *memMachines { return &memMachines{machines: map[string]session.Machine{}} }

func (m *memMachines) Create(_ context.Context, spec session.MachineSpec) (session.Machine, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.n++
	m.creates++
	m.specs = append(m.specs, spec)
	mm := session.Machine{ID: fmt.Sprintf("m%d", m.n), Name: spec.Name, State: session.MachineStarted,
		Provider: "mem", Addr: "127.0.0.1:1", SessionID: spec.SessionID}
	m.machines[mm.ID] = mm
	return mm, nil
}

func (m *memMachines) add(sessionID string) session.Machine {
	mm, _ := m.Create(context.Background(), session.MachineSpec{
		Name: session.MachineName(session.ArchitectureHybrid, m.tenant, sessionID), SessionID: sessionID})
	return mm
}

func (m *memMachines) Start(context.Context, string) error { return nil }
func (m *memMachines) WaitStarted(_ context.Context, id string) (session.Machine, error) {
	return m.Get(context.Background(), id)
}
func (m *memMachines) Get(_ context.Context, id string) (session.Machine, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gets++
	mm, ok := m.machines[id]
	if !ok {
		return session.Machine{}, fmt.Errorf("get %s: %w", id, session.ErrMachineNotFound)
	}
	return mm, nil
}
func (m *memMachines) List(context.Context) ([]session.Machine, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []session.Machine
	for _, mm := range m.machines {
		out = append(out, mm)
	}
	return out, nil
}
func (m *memMachines) Destroy(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.machines, id)
	m.destroyed = append(m.destroyed, id)
	return nil
}

// summaryMachines is memMachines with Fly's summary list: machines
// without their metadata, so without their session.
type summaryMachines struct{ *memMachines }

func (m summaryMachines) ListSummaries(ctx context.Context) ([]session.Machine, error) {
	ms, err := m.List(ctx)
	for i := range ms {
		ms[i].SessionID = ""
	}
	return ms, err
}

func (m *memMachines) getCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gets
}

func (m *memMachines) has(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.machines[id]
	return ok
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type rig struct {
	t     testing.TB
	db    *postgres.DB
	mem   *memMachines
	svc   *Service
	rec   *Reconciler
	clock *clock
	pos   session.PositionRecord
	cand  session.Candidate
	scope session.Scope
}

var testReconcile = ReconcileConfig{
	Interval: 10 * time.Second, HeartbeatTimeout: 30 * time.Second, OrphanGrace: 10 * time.Second,
	DeadlineGrace: 30 * time.Second, EndingTimeout: 60 * time.Second, AdoptAfter: 15 * time.Second,
	ProvisionTimeout: 5 * time.Minute,
}

// bothListings runs a reconciler test with a provider that lists machines
// in full (the local provider's way) and with one that lists summaries
// (Fly's, the machines' sessions unknown).
func bothListings(t *testing.T, test func(t *testing.T, r *rig)) {
	t.Run("list", func(t *testing.T) { test(t, newRig(t, false)) })
	t.Run("summaries", func(t *testing.T) { test(t, newRig(t, true)) })
}

func newRig(t testing.TB, summaries bool) *rig {
	t.Helper()
	return newRigWith(t, summaries, nil)
}

// newRigWith is newRig with the service's configuration changed by adjust.
func newRigWith(t testing.TB, summaries bool, adjust func(*Config)) *rig {
	t.Helper()
	db, _ := postgrestest.New(t)
	c := &clock{t: time.Now()}
	mem := newMem()
	mem.tenant = uuid.NewString()
	var machines Machines = mem
	if summaries {
		machines = summaryMachines{mem}
	}
	logger := slog.New(slog.DiscardHandler)
	// Launches wait for the VM's ready report in real time: keep it short.
	cfg := Config{Provider: "mem", ControllerURL: "http://x", ProvisionTimeout: 2 * time.Second}
	if adjust != nil {
		adjust(&cfg)
	}
	svc := New(cfg, db, machines, logger, nil)
	svc.now = c.Now
	t.Cleanup(svc.Close)
	rec := NewReconciler(testReconcile, svc, db, machines, logger, nil)
	rec.Now = c.Now
	r := &rig{t: t, db: db, mem: mem, svc: svc, rec: rec, clock: c, scope: session.TenantScope(mem.tenant)}
	var err error
	if r.pos, err = db.CreatePosition(context.Background(), r.scope, session.PositionRecord{Title: "T",
		Competencies: []session.Competency{{Name: "Go", Weight: 1}}}); err != nil {
		t.Fatal(err)
	}
	if r.cand, err = db.CreateCandidate(context.Background(), r.scope, session.Candidate{FullName: "A", Email: "a@b.c"}); err != nil {
		t.Fatal(err)
	}
	return r
}

// interview creates an interview and moves it through the given states,
// with a machine from the provider once past provisioning.
func (r *rig) interview(states ...session.State) session.Interview {
	r.t.Helper()
	ctx := context.Background()
	iv, err := r.db.CreateInterview(ctx, r.scope, session.Interview{CandidateID: r.cand.ID, PositionID: r.pos.ID,
		Architecture: "hybrid", MaxDurationS: 600})
	if err != nil {
		r.t.Fatal(err)
	}
	for _, st := range states {
		iv, err = r.db.UpdateInterview(ctx, r.scope, iv.ID, func(cur *session.Interview) ([]session.Event, error) {
			ev, err := cur.Transition(st, "", session.ActorUser, r.clock.Now())
			if st == session.StateReady {
				m := r.mem.add(cur.ID)
				cur.Machine = &m
				now := r.clock.Now()
				cur.LastHeartbeatAt = &now
			}
			return []session.Event{ev}, err
		})
		if err != nil {
			r.t.Fatal(err)
		}
	}
	return iv
}

func (r *rig) pass() Report {
	r.t.Helper()
	rep, err := r.rec.RunOnce(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	return rep
}

// settle waits for the service's background work (destroys, launches).
func (r *rig) settle() { r.svc.wg.Wait() }

func (r *rig) eventually(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *rig) get(id string) session.Interview {
	r.t.Helper()
	iv, err := r.db.Interview(context.Background(), session.SystemScope(), id)
	if err != nil {
		r.t.Fatal(err)
	}
	return iv
}

func (r *rig) wantStatus(id string, st session.State, reason session.EndReason) {
	r.t.Helper()
	iv := r.get(id)
	if iv.Status != st || (reason != "" && (iv.EndReason == nil || *iv.EndReason != reason)) {
		r.t.Fatalf("interview %s: status %s reason %v, want %s %s", id, iv.Status, deref(iv.EndReason), st, reason)
	}
}

func deref(r *session.EndReason) string {
	if r == nil {
		return "<nil>"
	}
	return string(*r)
}

func TestOrphanMachinesAreDestroyedAfterGrace(t *testing.T) {
	bothListings(t, testOrphanMachinesAreDestroyedAfterGrace)
}

func testOrphanMachinesAreDestroyedAfterGrace(t *testing.T, r *rig) {
	unknown := r.mem.add(uuid.NewString())
	cancelled := r.interview(session.StateProvisioning, session.StateReady, session.StateCancelled)
	live := r.interview(session.StateProvisioning, session.StateReady)
	if rep := r.pass(); rep.OrphansDestroyed != 0 || !r.mem.has(unknown.ID) {
		t.Fatalf("first sight destroyed orphans: %+v", rep)
	}
	r.clock.Advance(testReconcile.OrphanGrace)
	rep := r.pass()
	r.settle()
	if rep.OrphansDestroyed != 2 || r.mem.has(unknown.ID) || r.mem.has(cancelled.Machine.ID) {
		t.Fatalf("after grace: %+v, machines left %v", rep, r.mem.machines)
	}
	if !r.mem.has(live.Machine.ID) {
		t.Fatal("a live session's machine was destroyed")
	}
	r.wantStatus(live.ID, session.StateReady, "")
}

func TestLostMachineFailsTheSession(t *testing.T) { bothListings(t, testLostMachineFailsTheSession) }

func testLostMachineFailsTheSession(t *testing.T, r *rig) {
	iv := r.interview(session.StateProvisioning, session.StateReady, session.StateInProgress)
	_ = r.mem.Destroy(context.Background(), iv.Machine.ID) // the VM vanished
	if rep := r.pass(); rep.Failed["machine_lost"] != 1 {
		t.Fatalf("report = %+v", rep)
	}
	r.wantStatus(iv.ID, session.StateFailed, session.ReasonMachineLost)
	events, _ := r.db.Events(context.Background(), session.SystemScope(), iv.ID)
	if last := events[len(events)-1]; last.Actor != session.ActorReconciler || last.To != session.StateFailed {
		t.Fatalf("last event = %+v", last)
	}
}

func TestSilentVMTimesOut(t *testing.T) { bothListings(t, testSilentVMTimesOut) }

func testSilentVMTimesOut(t *testing.T, r *rig) {
	iv := r.interview(session.StateProvisioning, session.StateReady)
	r.clock.Advance(testReconcile.HeartbeatTimeout - time.Second)
	r.pass()
	r.wantStatus(iv.ID, session.StateReady, "")
	r.clock.Advance(2 * time.Second)
	r.pass()
	r.settle()
	r.wantStatus(iv.ID, session.StateFailed, session.ReasonHeartbeatTimeout)
	if r.mem.has(iv.Machine.ID) {
		t.Fatal("the silent VM's machine was not destroyed")
	}
	// Fenced: its token writes nothing any more.
	if err := r.svc.authenticate(ptr(r.get(iv.ID)), "whatever"); err == nil {
		t.Fatal("fenced session authenticated")
	}
}

func ptr[T any](v T) *T { return &v }

func TestDeadlineEndsThenFails(t *testing.T) { bothListings(t, testDeadlineEndsThenFails) }

func testDeadlineEndsThenFails(t *testing.T, r *rig) {
	iv := r.interview(session.StateProvisioning, session.StateReady, session.StateInProgress)
	beat := func() {
		_, err := r.db.UpdateInterview(context.Background(), session.SystemScope(), iv.ID, func(cur *session.Interview) ([]session.Event, error) {
			now := r.clock.Now()
			cur.LastHeartbeatAt = &now
			return nil, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for range 61 { // 610 s: past the 600 s deadline, heartbeats on time
		r.clock.Advance(10 * time.Second)
		beat()
	}
	r.pass()
	r.wantStatus(iv.ID, session.StateEnding, session.ReasonMaxDuration)
	r.clock.Advance(testReconcile.DeadlineGrace)
	beat()
	r.pass()
	r.settle()
	r.wantStatus(iv.ID, session.StateFailed, session.ReasonMaxDuration)
	if r.mem.has(iv.Machine.ID) {
		t.Fatal("machine outlived the deadline")
	}
}

func TestStuckEndingFails(t *testing.T) { bothListings(t, testStuckEndingFails) }

func testStuckEndingFails(t *testing.T, r *rig) {
	iv := r.interview(session.StateProvisioning, session.StateReady, session.StateEnding)
	r.clock.Advance(testReconcile.EndingTimeout + time.Second)
	_, _ = r.db.UpdateInterview(context.Background(), session.SystemScope(), iv.ID, func(cur *session.Interview) ([]session.Event, error) {
		now := r.clock.Now()
		cur.LastHeartbeatAt = &now // alive, but never reports ended
		return nil, nil
	})
	if rep := r.pass(); rep.Failed["ending_timeout"] != 1 {
		t.Fatalf("report = %+v", rep)
	}
	r.wantStatus(iv.ID, session.StateFailed, "")
}

func TestEndingWithCompleteTranscriptCompletesWhenMachineGone(t *testing.T) {
	bothListings(t, testEndingWithCompleteTranscriptCompletesWhenMachineGone)
}

func testEndingWithCompleteTranscriptCompletesWhenMachineGone(t *testing.T, r *rig) {
	iv := r.interview(session.StateProvisioning, session.StateReady, session.StateEnding)
	_, _ = r.db.UpdateInterview(context.Background(), session.SystemScope(), iv.ID, func(cur *session.Interview) ([]session.Event, error) {
		zero := int64(0)
		cur.LastSeqReported = &zero
		return nil, nil
	})
	_ = r.mem.Destroy(context.Background(), iv.Machine.ID)
	r.pass()
	r.wantStatus(iv.ID, session.StateCompleted, "")
}

func TestAdoptionFindsTheMachineOrCreatesItOnce(t *testing.T) {
	bothListings(t, testAdoptionFindsTheMachineOrCreatesItOnce)
}

func testAdoptionFindsTheMachineOrCreatesItOnce(t *testing.T, r *rig) {
	// Interrupted after the create: the machine exists but was never recorded.
	withMachine := r.interview(session.StateProvisioning)
	m := r.mem.add(withMachine.ID)
	// Interrupted before the create.
	without := r.interview(session.StateProvisioning)
	createsBefore := r.mem.creates

	r.pass() // too early: the launcher may still be at work
	if r.mem.creates != createsBefore {
		t.Fatal("adopted before AdoptAfter")
	}
	r.clock.Advance(testReconcile.AdoptAfter)
	if rep := r.pass(); rep.Adopted != 2 {
		t.Fatalf("report = %+v", rep)
	}
	r.eventually("both starts to record their machine", func() bool {
		return r.get(withMachine.ID).Machine != nil && r.get(without.ID).Machine != nil
	})
	if r.mem.creates != createsBefore+1 {
		t.Fatalf("creates = %d, want exactly one new machine", r.mem.creates-createsBefore)
	}
	if got := r.get(withMachine.ID); got.Machine.ID != m.ID {
		t.Fatalf("adopted machine = %+v, want %s", got.Machine, m.ID)
	}
	if got := r.get(without.ID); string(got.TokenHash) == string(without.TokenHash) {
		t.Fatal("a start re-created after a restart kept the old token, which no process knows")
	}
	// Another pass adopts nothing more and creates nothing more.
	r.clock.Advance(time.Second)
	r.pass()
	if r.mem.creates != createsBefore+1 {
		t.Fatal("a second pass created again")
	}
	// No VM ever reports ready: the launches give up after the provisioning
	// timeout, fail the starts and destroy their machines.
	r.settle()
	r.wantStatus(without.ID, session.StateFailed, session.ReasonProvisionFailed)
	r.wantStatus(withMachine.ID, session.StateFailed, session.ReasonProvisionFailed)
	if r.mem.has(m.ID) {
		t.Fatal("machine of a failed start left running")
	}
}

func TestProvisioningPastTimeoutFails(t *testing.T) {
	bothListings(t, testProvisioningPastTimeoutFails)
}

func testProvisioningPastTimeoutFails(t *testing.T, r *rig) {
	iv := r.interview(session.StateProvisioning) // its launcher died with a controller
	r.clock.Advance(testReconcile.ProvisionTimeout + time.Second)
	if rep := r.pass(); rep.Failed["provision_timeout"] != 1 || rep.Adopted != 0 {
		t.Fatalf("report = %+v", rep)
	}
	r.wantStatus(iv.ID, session.StateFailed, session.ReasonProvisionFailed)
}

func TestSilenceCountsFromLeadershipOnly(t *testing.T) {
	bothListings(t, testSilenceCountsFromLeadershipOnly)
}

func testSilenceCountsFromLeadershipOnly(t *testing.T, r *rig) {
	iv := r.interview(session.StateProvisioning, session.StateReady)
	// The controller was down for longer than the heartbeat timeout: its
	// VMs heartbeated into the void. A new leader gives them a full window.
	r.clock.Advance(2 * testReconcile.HeartbeatTimeout)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.rec.Run(ctx) }()
	r.eventually("a first pass", func() bool { return r.rec.metrics.lastSuccess != nil && passes(r.rec) > 0 })
	cancel()
	<-done
	r.wantStatus(iv.ID, session.StateReady, "")
	r.clock.Advance(testReconcile.HeartbeatTimeout + time.Second)
	r.pass()
	r.settle()
	r.wantStatus(iv.ID, session.StateFailed, session.ReasonHeartbeatTimeout)
}

func passes(r *Reconciler) float64 {
	return testutil.ToFloat64(r.metrics.runs.WithLabelValues("ok"))
}

func TestReadySessionWithoutRecordedMachineIsAdoptedNotFailed(t *testing.T) {
	bothListings(t, testReadySessionWithoutRecordedMachineIsAdoptedNotFailed)
}

func testReadySessionWithoutRecordedMachineIsAdoptedNotFailed(t *testing.T, r *rig) {
	iv := r.interview(session.StateProvisioning)
	m := r.mem.add(iv.ID) // created, but the launcher died before recording it
	_, err := r.db.UpdateInterview(context.Background(), session.SystemScope(), iv.ID, func(cur *session.Interview) ([]session.Event, error) {
		now := r.clock.Now()
		cur.LastHeartbeatAt = &now
		ev, err := cur.Transition(session.StateReady, "", session.ActorVM, now) // the VM reported ready anyway
		return []session.Event{ev}, err
	})
	if err != nil {
		t.Fatal(err)
	}
	r.pass()
	r.settle()
	got := r.get(iv.ID)
	if got.Status != session.StateReady || got.Machine == nil || got.Machine.ID != m.ID {
		t.Fatalf("after a pass: status %s machine %+v", got.Status, got.Machine)
	}
}

// TestReadySessionWhoseMachineTheListMissedIsNotFailedAtOnce: the VM
// reported ready before its machine was recorded, and this pass listed
// machines before the machine was created (seen under load): the session
// is left for a later pass, and failed only once AdoptAfter has passed
// without any machine.
func TestReadySessionWhoseMachineTheListMissedIsNotFailedAtOnce(t *testing.T) {
	bothListings(t, testReadySessionWhoseMachineTheListMissedIsNotFailedAtOnce)
}

func testReadySessionWhoseMachineTheListMissedIsNotFailedAtOnce(t *testing.T, r *rig) {
	iv := r.interview(session.StateProvisioning)
	_, err := r.db.UpdateInterview(context.Background(), session.SystemScope(), iv.ID, func(cur *session.Interview) ([]session.Event, error) {
		now := r.clock.Now()
		cur.LastHeartbeatAt = &now
		ev, err := cur.Transition(session.StateReady, "", session.ActorVM, now)
		return []session.Event{ev}, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep := r.pass(); rep.Failed["machine_lost"] != 0 {
		t.Fatalf("a session that just became ready was failed: %+v", rep)
	}
	r.wantStatus(iv.ID, session.StateReady, "")
	r.clock.Advance(testReconcile.AdoptAfter)
	if rep := r.pass(); rep.Failed["machine_lost"] != 1 {
		t.Fatalf("no machine after AdoptAfter: report = %+v", rep)
	}
	r.wantStatus(iv.ID, session.StateFailed, session.ReasonMachineLost)
}

// TestReconcilerDeletesExpiredIdempotencyKeys: a pass deletes expired keys
// of every tenant, keeps live ones, and sweeps at most once a minute.
func TestReconcilerDeletesExpiredIdempotencyKeys(t *testing.T) {
	bothListings(t, testReconcilerDeletesExpiredIdempotencyKeys)
}

func testReconcilerDeletesExpiredIdempotencyKeys(t *testing.T, r *rig) {
	ctx := context.Background()
	other := session.TenantScope(uuid.NewString())
	for i, scope := range []session.Scope{r.scope, other, r.scope} {
		_, err := r.db.ClaimIdempotencyKey(ctx, scope, session.IdempotencyRequest{
			KeyHash: bytes.Repeat([]byte{byte(i)}, 32), RequestHash: bytes.Repeat([]byte{9}, 32),
			Claim: uuid.NewString(), TTL: time.Hour, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
	}
	expire := func(keep []byte) {
		t.Helper()
		if _, err := r.db.Pool.Exec(ctx, `UPDATE interviews.idempotency_keys SET expires_at = now() - interval '1 second'
			WHERE key_hash IS DISTINCT FROM $1::bytea`, keep); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		t.Helper()
		var n int
		if err := r.db.Pool.QueryRow(ctx, `SELECT count(*) FROM interviews.idempotency_keys`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	expire(bytes.Repeat([]byte{2}, 32)) // one key of each tenant expires
	rep, err := r.rec.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.IdempotencyKeysExpired != 2 || count() != 1 {
		t.Fatalf("pass deleted %d keys, %d left; want 2 deleted, 1 left", rep.IdempotencyKeysExpired, count())
	}
	// The next pass within the minute does not sweep; one a minute later does.
	expire(nil)
	if rep, _ := r.rec.RunOnce(ctx); rep.IdempotencyKeysExpired != 0 || count() != 1 {
		t.Fatalf("a pass within the minute swept %d", rep.IdempotencyKeysExpired)
	}
	r.clock.Advance(time.Minute)
	if rep, _ := r.rec.RunOnce(ctx); rep.IdempotencyKeysExpired != 1 || count() != 0 {
		t.Fatalf("a pass a minute later deleted %d, %d left", rep.IdempotencyKeysExpired, count())
	}
}

// TestSummaryListReadsOnlyUnresolvedOrphans: with a summary list (no
// metadata), a machine's session is found by its recorded id or its
// name; only a machine neither tells is read in full, and only when its
// orphan grace is over. The read decides: its metadata may name a live
// session that owns it.
func TestSummaryListReadsOnlyUnresolvedOrphans(t *testing.T) {
	r := newRig(t, true)
	ctx := context.Background()
	recorded := r.interview(session.StateProvisioning, session.StateReady) // resolved by id
	starting := r.interview(session.StateProvisioning)
	byName := r.mem.add(starting.ID) // created, not yet recorded: resolved by name
	adopting := r.interview(session.StateProvisioning)
	oddName, _ := r.mem.Create(ctx, session.MachineSpec{Name: "renamed-by-hand", SessionID: adopting.ID})
	stranger, _ := r.mem.Create(ctx, session.MachineSpec{Name: "interview-hybrid-00000000-000000000000", SessionID: uuid.NewString()})
	// A machine bearing a live session's name but recorded by none, of a
	// session already on another machine: an orphan known by its name.
	r.mem.mu.Lock()
	r.mem.n++
	stale := session.Machine{ID: fmt.Sprintf("m%d", r.mem.n), Name: recorded.Machine.Name, State: session.MachineStarted, SessionID: recorded.ID}
	r.mem.machines[stale.ID] = stale
	r.mem.mu.Unlock()

	if rep := r.pass(); rep.OrphansDestroyed != 0 || r.mem.getCount() != 0 {
		t.Fatalf("first pass: %+v, %d machines read in full; want none destroyed or read", rep, r.mem.getCount())
	}
	r.clock.Advance(testReconcile.OrphanGrace)
	rep := r.pass()
	if rep.OrphansDestroyed != 2 {
		t.Fatalf("after grace: %+v, want the stranger and the stale machine destroyed", rep)
	}
	if got := r.mem.getCount(); got != 2 {
		t.Fatalf("machines read in full = %d, want 2 (the stranger and the renamed one)", got)
	}
	for _, m := range []session.Machine{*recorded.Machine, byName, oddName} {
		if !r.mem.has(m.ID) {
			t.Errorf("machine %s (%s) of a live session was destroyed", m.ID, m.Name)
		}
	}
	for _, m := range []session.Machine{stranger, stale} {
		if r.mem.has(m.ID) {
			t.Errorf("orphan %s (%s) survived", m.ID, m.Name)
		}
	}
	r.wantStatus(recorded.ID, session.StateReady, "")
}
