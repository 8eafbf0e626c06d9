package prewarm_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/postgres"
	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
	"github.com/interviewvm/controlplane/pkg/prewarm"
	"github.com/interviewvm/controlplane/pkg/provision"
	"github.com/interviewvm/controlplane/pkg/session"
)

// memMachines is an in-memory provider that counts its calls. A machine
// created with SkipLaunch stays "created" until Start. gate, when set,
// holds every create until it is closed.
type memMachines struct {
	mu       sync.Mutex
	n        int
	machines map[string]session.Machine
	creates  int
	starts   map[string]int
	gate     chan struct{}
	entered  chan struct{} // receives once per create that reached the gate
}

func newMem() *memMachines {
	return &memMachines{machines: map[string]session.Machine{}, starts: map[string]int{}, entered: make(chan struct{}, 16)}
}

func (m *memMachines) Create(ctx context.Context, spec session.MachineSpec) (session.Machine, error) {
	m.mu.Lock()
	gate := m.gate
	m.creates++
	m.mu.Unlock()
	if gate != nil {
		m.entered <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
			return session.Machine{}, ctx.Err()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.n++
	state := session.MachineStarted
	if spec.SkipLaunch {
		state = session.MachineCreated
	}
	mm := session.Machine{ID: fmt.Sprintf("m%d", m.n), Name: spec.Name, Region: spec.Region, State: state,
		Provider: "mem", Addr: "127.0.0.1:1", SessionID: spec.SessionID}
	m.machines[mm.ID] = mm
	return mm, nil
}

func (m *memMachines) Start(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.starts[id]++
	mm, ok := m.machines[id]
	if !ok {
		return fmt.Errorf("start %s: %w", id, session.ErrMachineNotFound)
	}
	mm.State = session.MachineStarted
	m.machines[id] = mm
	return nil
}

func (m *memMachines) WaitStarted(ctx context.Context, id string) (session.Machine, error) {
	return m.Get(ctx, id)
}

func (m *memMachines) Get(_ context.Context, id string) (session.Machine, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
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
	return nil
}

// of returns the live machines of one session and the create count.
func (m *memMachines) of(sessionID string) ([]session.Machine, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []session.Machine
	for _, mm := range m.machines {
		if mm.SessionID == sessionID {
			out = append(out, mm)
		}
	}
	return out, m.creates
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type rig struct {
	t     *testing.T
	db    *postgres.DB
	mem   *memMachines
	svc   *provision.Service
	clock *clock
	scope session.Scope
	pos   session.PositionRecord
	cand  session.Candidate
}

var testConfig = prewarm.Config{Lead: 10 * time.Minute, TTL: 30 * time.Minute, Interval: time.Second,
	CreateTimeout: time.Minute, ClaimTimeout: 2 * time.Minute}

func newRig(t *testing.T) *rig {
	t.Helper()
	db, _ := postgrestest.New(t)
	logger := slog.New(slog.DiscardHandler)
	mem := newMem()
	svc := provision.New(provision.Config{Provider: "mem", ControllerURL: "http://x", ProvisionTimeout: 2 * time.Minute}, db, mem, logger, nil)
	t.Cleanup(svc.Close)
	r := &rig{t: t, db: db, mem: mem, svc: svc, clock: &clock{t: time.Now()}, scope: session.TenantScope(uuid.NewString())}
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

// prewarmer returns a pre-warmer on the rig's clock, as one replica's.
func (r *rig) prewarmer() *prewarm.Prewarmer {
	p := prewarm.New(testConfig, r.db, r.mem, r.svc, slog.New(slog.DiscardHandler), nil)
	p.Now = r.clock.Now
	return p
}

// scheduled creates an interview scheduled at the rig's now + in.
func (r *rig) scheduled(in time.Duration) session.Interview {
	r.t.Helper()
	at := r.clock.Now().Add(in)
	iv, err := r.db.CreateInterview(context.Background(), r.scope, session.Interview{CandidateID: r.cand.ID, PositionID: r.pos.ID,
		Architecture: "hybrid", MaxDurationS: 600, ScheduledAt: &at, Region: "ams"})
	if err != nil {
		r.t.Fatal(err)
	}
	return iv
}

func (r *rig) get(id string) session.Interview {
	r.t.Helper()
	iv, err := r.db.Interview(context.Background(), r.scope, id)
	if err != nil {
		r.t.Fatal(err)
	}
	return iv
}

func (r *rig) pass(p *prewarm.Prewarmer) prewarm.Report {
	r.t.Helper()
	rep, err := p.RunOnce(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	p.Wait()
	return rep
}

// prewarmed runs a pass and requires iv's machine recorded.
func (r *rig) prewarmed(p *prewarm.Prewarmer, id string) session.Interview {
	r.t.Helper()
	r.pass(p)
	iv := r.get(id)
	if iv.Machine == nil || iv.Machine.State != session.MachineCreated || iv.PrewarmedAt == nil || iv.Status != session.StateScheduled {
		r.t.Fatalf("after a pass: machine %+v, prewarmed_at %v, status %s", iv.Machine, iv.PrewarmedAt, iv.Status)
	}
	return iv
}

func TestPrewarmCreatesTheInterviewsMachineWithoutBooting(t *testing.T) {
	r := newRig(t)
	p := r.prewarmer()
	early := r.scheduled(time.Hour) // not due yet
	iv := r.scheduled(time.Minute)
	got := r.prewarmed(p, iv.ID)
	if want := session.MachineName("hybrid", iv.TenantID, iv.ID); got.Machine.Name != want || got.Machine.Region != "ams" {
		t.Errorf("machine = %+v, want name %s in ams", got.Machine, want)
	}
	if len(got.TokenHash) == 0 {
		t.Error("no token hash stored at pre-warm")
	}
	if ms, _ := r.mem.of(early.ID); len(ms) != 0 {
		t.Errorf("interview an hour ahead got machines %v", ms)
	}
	events, err := r.db.Events(context.Background(), r.scope, iv.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Reason != session.EventMachinePrewarmed || events[0].To != session.StateScheduled {
		t.Errorf("timeline = %+v, want one machine_prewarmed event", events)
	}
	// Further passes create nothing more.
	r.pass(p)
	if ms, creates := r.mem.of(iv.ID); len(ms) != 1 || creates != 1 {
		t.Errorf("after a second pass: %d machines, %d creates", len(ms), creates)
	}
}

func TestWarmStartMakesNoCreateAndOneStart(t *testing.T) {
	r := newRig(t)
	iv := r.prewarmed(r.prewarmer(), r.scheduled(time.Minute).ID)
	mid := iv.Machine.ID
	_, createsBefore := r.mem.of(iv.ID)
	if _, err := r.svc.Start(context.Background(), r.scope, iv.ID, 0); err != nil {
		t.Fatal(err)
	}
	// The launcher boots the machine: wait until it is started.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r.mem.mu.Lock()
		n := r.mem.starts[mid]
		r.mem.mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	r.svc.Close() // the launcher has finished (it waits for a ready report that never comes)
	r.mem.mu.Lock()
	starts, creates := r.mem.starts[mid], r.mem.creates
	r.mem.mu.Unlock()
	if creates != createsBefore || starts != 1 {
		t.Errorf("warm start: %d creates (before: %d), %d starts of %s; want no create and one start", creates, createsBefore, starts, mid)
	}
	if got := r.reasons(iv.ID); !slices.Equal(got, []string{session.EventMachinePrewarmed, session.EventWarmStart}) {
		t.Errorf("timeline reasons = %q, want the pre-warm then the warm start", got)
	}
}

func TestOneMachineUnderTwoReplicasAndConcurrentStarts(t *testing.T) {
	r := newRig(t)
	iv := r.scheduled(time.Minute)
	gate := make(chan struct{})
	r.mem.gate = gate
	a, b := r.prewarmer(), r.prewarmer()
	// Two replicas pass at once (a leadership change): one claims.
	var wg sync.WaitGroup
	for _, p := range []*prewarm.Prewarmer{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.RunOnce(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	<-r.mem.entered // the claimed create is in flight
	// Starts arrive while the create is in flight: they join it.
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.svc.Start(context.Background(), r.scope, iv.ID, 0); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := r.get(iv.ID); got.Status != session.StateProvisioning || got.PrewarmClaimedAt == nil {
		t.Fatalf("after the starts: status %s, claim %v", got.Status, got.PrewarmClaimedAt)
	}
	close(gate)
	a.Wait()
	b.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := r.get(iv.ID)
		if (got.Machine != nil && got.Machine.State == session.MachineStarted) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	ms, creates := r.mem.of(iv.ID)
	if creates != 1 || len(ms) != 1 {
		t.Fatalf("%d creates, machines %v; want exactly one", creates, ms)
	}
	r.mem.mu.Lock()
	starts := r.mem.starts[ms[0].ID]
	r.mem.mu.Unlock()
	if starts != 1 {
		t.Errorf("the joined start booted the machine %d times, want 1", starts)
	}
}

func TestCancelDestroysThePrewarmedMachine(t *testing.T) {
	r := newRig(t)
	iv := r.prewarmed(r.prewarmer(), r.scheduled(time.Minute).ID)
	if _, err := r.svc.Cancel(context.Background(), r.scope, iv.ID); err != nil {
		t.Fatal(err)
	}
	r.svc.Close() // waits for the background destroy
	if ms, _ := r.mem.of(iv.ID); len(ms) != 0 {
		t.Errorf("machines after cancel: %v", ms)
	}
}

func TestExpiryAndRescheduleDestroyTheMachine(t *testing.T) {
	r := newRig(t)
	p := r.prewarmer()
	iv := r.prewarmed(p, r.scheduled(time.Minute).ID)
	// Past scheduled_at + TTL without a start: the machine goes, the
	// interview stays scheduled.
	r.clock.Add(time.Minute + testConfig.TTL)
	if rep := r.pass(p); rep.Destroyed != 1 {
		t.Errorf("expiry pass destroyed %d", rep.Destroyed)
	}
	got := r.get(iv.ID)
	if ms, _ := r.mem.of(iv.ID); len(ms) != 0 || got.Status != session.StateScheduled || got.PrewarmedAt != nil ||
		got.Machine == nil || got.Machine.State != session.MachineDestroyed {
		t.Errorf("after expiry: machines %v, interview %s %+v prewarmed_at %v", ms, got.Status, got.Machine, got.PrewarmedAt)
	}

	// Rescheduled an hour later: the pre-warmed machine goes.
	iv2 := r.prewarmed(p, r.scheduled(time.Minute).ID)
	later := r.clock.Now().Add(time.Hour)
	if _, err := r.db.PatchInterview(context.Background(), r.scope, iv2.ID, session.InterviewPatch{ScheduledAt: &later}); err != nil {
		t.Fatal(err)
	}
	r.pass(p)
	if ms, _ := r.mem.of(iv2.ID); len(ms) != 0 {
		t.Errorf("machines after the reschedule: %v", ms)
	}
}

func TestCrashBetweenCreateAndRecordConverges(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	// A pre-warmer claimed two interviews and died: for one its create
	// went through (the machine exists, unrecorded), for the other not.
	created := r.scheduled(time.Minute)
	lost := r.scheduled(time.Minute)
	for _, iv := range []session.Interview{created, lost} {
		now := r.clock.Now()
		if _, err := r.db.UpdateInterview(ctx, session.SystemScope(), iv.ID, func(cur *session.Interview) ([]session.Event, error) {
			cur.PrewarmClaimedAt = &now
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	orphan, err := r.mem.Create(ctx, r.svc.MachineSpec(created, "tok"))
	if err != nil {
		t.Fatal(err)
	}
	p := r.prewarmer() // the next leader
	// A fresh claim is left alone: its create may still be in flight.
	r.pass(p)
	if ms, creates := r.mem.of(lost.ID); len(ms) != 0 || creates != 1 {
		t.Fatalf("a fresh claim was not respected: %v, %d creates", ms, creates)
	}
	r.clock.Add(testConfig.ClaimTimeout + time.Second)
	r.pass(p) // settles both claims
	r.pass(p) // creates the lost one's machine
	if got := r.get(created.ID); got.Machine == nil || got.Machine.ID != orphan.ID || got.PrewarmClaimedAt != nil {
		t.Errorf("created: machine %+v claim %v, want %s recorded", got.Machine, got.PrewarmClaimedAt, orphan.ID)
	}
	if ms, _ := r.mem.of(created.ID); len(ms) != 1 {
		t.Errorf("created: machines %v, want exactly one", ms)
	}
	if ms, _ := r.mem.of(lost.ID); len(ms) != 1 {
		t.Errorf("lost: machines %v, want exactly one", ms)
	}
	if got := r.get(lost.ID); got.Machine == nil || got.PrewarmedAt == nil {
		t.Errorf("lost: %+v, want a pre-warmed machine", got)
	}
}

func TestReconcilerKeepsPrewarmedMachinesAndALostOneIsRecreated(t *testing.T) {
	r := newRig(t)
	p := r.prewarmer()
	iv := r.prewarmed(p, r.scheduled(time.Minute).ID)
	rec := provision.NewReconciler(provision.ReconcileConfig{Interval: time.Second, OrphanGrace: time.Second},
		r.svc, r.db, r.mem, slog.New(slog.DiscardHandler), nil)
	rec.Now = r.clock.Now
	// Two passes past the orphan grace: a pre-warmed machine is expected.
	for range 2 {
		rep, err := rec.RunOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if rep.OrphansDestroyed != 0 {
			t.Fatalf("the reconciler destroyed %d machines", rep.OrphansDestroyed)
		}
		r.clock.Add(5 * time.Second)
	}
	if ms, _ := r.mem.of(iv.ID); len(ms) != 1 || ms[0].ID != iv.Machine.ID {
		t.Fatalf("machines after reconciling: %v", ms)
	}
	if got := r.get(iv.ID); got.Status != session.StateScheduled {
		t.Fatalf("the reconciler changed the interview: %s", got.Status)
	}

	// The machine is lost while the window is open: forgotten, then
	// created again, exactly once.
	if err := r.mem.Destroy(context.Background(), iv.Machine.ID); err != nil {
		t.Fatal(err)
	}
	r.pass(p)
	r.pass(p)
	got := r.get(iv.ID)
	ms, _ := r.mem.of(iv.ID)
	if len(ms) != 1 || got.Machine == nil || got.Machine.ID != ms[0].ID || got.Machine.ID == iv.Machine.ID || got.PrewarmedAt == nil {
		t.Errorf("after losing the machine: machines %v, interview machine %+v", ms, got.Machine)
	}
}

// A new leader settles the claims of the previous one after a short grace,
// not the create timeout: their creates were cancelled with its leadership.
func TestNewLeaderSettlesInheritedClaimsSoon(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	iv := r.scheduled(time.Minute)
	claimed := r.clock.Now()
	if _, err := r.db.UpdateInterview(ctx, session.SystemScope(), iv.ID, func(cur *session.Interview) ([]session.Event, error) {
		cur.PrewarmClaimedAt = &claimed
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	m, err := r.mem.Create(ctx, r.svc.MachineSpec(iv, "tok"))
	if err != nil {
		t.Fatal(err)
	}
	r.clock.Add(6 * time.Second) // past InheritedClaimAfter, far below ClaimTimeout
	p := r.prewarmer()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); p.Run(rctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := r.get(iv.ID)
		if got.Machine != nil && got.Machine.ID == m.ID && got.PrewarmClaimedAt == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the inherited claim was not settled: %+v", got)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	if ms, _ := r.mem.of(iv.ID); len(ms) != 1 {
		t.Errorf("machines = %v, want the one the previous leader created", ms)
	}
}

// reasons returns the reasons of interview id's timeline events, oldest
// first ("" for an event without one).
func (r *rig) reasons(id string) []string {
	r.t.Helper()
	events, err := r.db.Events(context.Background(), r.scope, id)
	if err != nil {
		r.t.Fatal(err)
	}
	out := make([]string, len(events))
	for i, ev := range events {
		out[i] = ev.Reason
	}
	return out
}

// patch changes scheduled interview id as PATCH /v1/interviews/{id} does.
func (r *rig) patch(id string, patch session.InterviewPatch) {
	r.t.Helper()
	if _, err := r.db.PatchInterview(context.Background(), r.scope, id, patch); err != nil {
		r.t.Fatal(err)
	}
}

// only returns the one live machine of interview id, failing the test
// when there is not exactly one.
func (r *rig) only(id string) session.Machine {
	r.t.Helper()
	ms, creates := r.mem.of(id)
	if len(ms) != 1 {
		r.t.Fatalf("machines of %s = %v (after %d creates), want exactly one", id, ms, creates)
	}
	return ms[0]
}

// A reschedule that stays inside the lead window keeps the pre-warmed
// machine: no destroy, no create.
func TestRescheduleInsideTheWindowKeepsTheMachine(t *testing.T) {
	r := newRig(t)
	p := r.prewarmer()
	iv := r.prewarmed(p, r.scheduled(time.Minute).ID)
	_, creates := r.mem.of(iv.ID)
	for _, in := range []time.Duration{3 * time.Minute, 30 * time.Second} { // later, then earlier: both inside
		at := r.clock.Now().Add(in)
		r.patch(iv.ID, session.InterviewPatch{ScheduledAt: &at})
		if rep := r.pass(p); rep.Destroyed != 0 || rep.Created != 0 {
			t.Errorf("rescheduled to now+%v: pass %+v, want nothing done", in, rep)
		}
		got := r.get(iv.ID)
		if m := r.only(iv.ID); m.ID != iv.Machine.ID || got.Machine == nil || got.Machine.ID != m.ID ||
			got.Machine.State != session.MachineCreated || got.PrewarmedAt == nil {
			t.Errorf("rescheduled to now+%v: machine %+v, interview machine %+v prewarmed_at %v; want %s kept",
				in, m, got.Machine, got.PrewarmedAt, iv.Machine.ID)
		}
	}
	if _, n := r.mem.of(iv.ID); n != creates {
		t.Errorf("%d creates after rescheduling inside the window, want %d", n, creates)
	}
}

// A region change of a pre-warmed interview replaces its machine: the old
// one is destroyed and one is created in the new region, in the same pass;
// later passes leave it alone.
func TestRegionChangeReplacesThePrewarmedMachine(t *testing.T) {
	r := newRig(t)
	p := r.prewarmer()
	iv := r.prewarmed(p, r.scheduled(time.Minute).ID)
	old := iv.Machine.ID
	fra := "fra"
	r.patch(iv.ID, session.InterviewPatch{Region: &fra})
	if rep := r.pass(p); rep.Destroyed != 1 || rep.Created != 1 {
		t.Errorf("pass after the region change: %+v, want one destroyed and one created", rep)
	}
	m := r.only(iv.ID)
	got := r.get(iv.ID)
	if m.ID == old || m.Region != "fra" || m.State != session.MachineCreated {
		t.Errorf("machine after the region change = %+v, want a new one created (not booted) in fra", m)
	}
	if got.Machine == nil || got.Machine.ID != m.ID || got.PrewarmedAt == nil || got.Status != session.StateScheduled ||
		got.PrewarmRegion != "fra" {
		t.Errorf("interview after the region change: %s machine %+v prewarmed_at %v prewarm region %q",
			got.Status, got.Machine, got.PrewarmedAt, got.PrewarmRegion)
	}
	if want := []string{session.EventMachinePrewarmed, session.EventMachinePrewarmed}; !slices.Equal(r.reasons(iv.ID), want) {
		t.Errorf("timeline reasons = %q, want %q", r.reasons(iv.ID), want)
	}
	_, creates := r.mem.of(iv.ID)
	for range 2 {
		if rep := r.pass(p); rep.Destroyed != 0 || rep.Created != 0 {
			t.Errorf("a later pass did %+v", rep)
		}
	}
	if m2 := r.only(iv.ID); m2.ID != m.ID {
		t.Errorf("a later pass replaced %s by %s", m.ID, m2.ID)
	}
	if _, n := r.mem.of(iv.ID); n != creates {
		t.Errorf("later passes made %d creates", n-creates)
	}

	// Moved out of the window and to another region at once: destroyed,
	// nothing created.
	later, ams := r.clock.Now().Add(time.Hour), "ams"
	r.patch(iv.ID, session.InterviewPatch{ScheduledAt: &later, Region: &ams})
	r.pass(p)
	if ms, _ := r.mem.of(iv.ID); len(ms) != 0 {
		t.Errorf("rescheduled out of the window in another region: machines %v", ms)
	}
}

// A region change while the pre-warm create is in flight: the machine
// lands in the old region and is recorded, and the next pass replaces it.
func TestRegionChangeDuringThePrewarmCreate(t *testing.T) {
	r := newRig(t)
	p := r.prewarmer()
	iv := r.scheduled(time.Minute)
	gate := make(chan struct{})
	r.mem.gate = gate
	if _, err := p.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-r.mem.entered
	fra := "fra"
	r.patch(iv.ID, session.InterviewPatch{Region: &fra})
	close(gate)
	p.Wait()
	r.mem.mu.Lock()
	r.mem.gate = nil
	r.mem.mu.Unlock()
	if m := r.only(iv.ID); m.Region != "ams" {
		t.Fatalf("the claimed create landed in %s, want ams (claimed before the change)", m.Region)
	}
	r.pass(p)
	if m := r.only(iv.ID); m.Region != "fra" {
		t.Errorf("after a pass: machine in %s, want fra", m.Region)
	}
	if got := r.get(iv.ID); got.Machine == nil || got.Machine.Region != "fra" || got.PrewarmedAt == nil {
		t.Errorf("interview after a pass: machine %+v prewarmed_at %v", got.Machine, got.PrewarmedAt)
	}
}

// A pre-warmer that died after destroying the old region's machine but
// before recording it: the next leader converges to one machine in the new
// region.
func TestRegionChangeConvergesAfterACrash(t *testing.T) {
	r := newRig(t)
	iv := r.prewarmed(r.prewarmer(), r.scheduled(time.Minute).ID)
	fra := "fra"
	r.patch(iv.ID, session.InterviewPatch{Region: &fra})
	// The dead leader's destroy went through; its record did not.
	if err := r.mem.Destroy(context.Background(), iv.Machine.ID); err != nil {
		t.Fatal(err)
	}
	p := r.prewarmer() // the next leader
	r.pass(p)
	r.pass(p)
	m := r.only(iv.ID)
	if got := r.get(iv.ID); m.Region != "fra" || got.Machine == nil || got.Machine.ID != m.ID || got.PrewarmedAt == nil {
		t.Errorf("after the next leader's passes: machine %+v, interview machine %+v prewarmed_at %v",
			m, got.Machine, got.PrewarmedAt)
	}
}

// A start that arrives after a region change, before any pass replaced
// the machine, does not boot the old region's machine: it destroys it and
// creates one cold in the new region.
func TestStartAfterARegionChangeIsColdInTheNewRegion(t *testing.T) {
	r := newRig(t)
	iv := r.prewarmed(r.prewarmer(), r.scheduled(time.Minute).ID)
	old := iv.Machine.ID
	fra := "fra"
	r.patch(iv.ID, session.InterviewPatch{Region: &fra})
	if _, err := r.svc.Start(context.Background(), r.scope, iv.ID, 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := r.get(iv.ID)
		if got.Machine != nil && got.Machine.ID != old && got.Machine.State == session.MachineStarted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the start never recorded a new started machine: %+v", got.Machine)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	r.svc.Close()
	m := r.only(iv.ID)
	r.mem.mu.Lock()
	oldStarts := r.mem.starts[old]
	r.mem.mu.Unlock()
	if m.ID == old || m.Region != "fra" || oldStarts != 0 {
		t.Errorf("machine %+v, the old one started %d times; want a new machine in fra and the old never booted", m, oldStarts)
	}
	got := r.get(iv.ID)
	if got.PrewarmedAt != nil || got.PrewarmRegion != "" || len(got.TokenHash) == 0 {
		t.Errorf("after the cold start: prewarmed_at %v, prewarm region %q", got.PrewarmedAt, got.PrewarmRegion)
	}
	if want := []string{session.EventMachinePrewarmed, ""}; !slices.Equal(r.reasons(iv.ID), want) {
		t.Errorf("timeline reasons = %q, want the pre-warm then a cold start", r.reasons(iv.ID))
	}
}

// A start after the pre-warmed machine expired is cold: it creates a new
// machine and records it (the destroyed pre-warm does not stand in its way).
func TestStartAfterExpiryIsCold(t *testing.T) {
	r := newRig(t)
	p := r.prewarmer()
	iv := r.prewarmed(p, r.scheduled(time.Minute).ID)
	r.clock.Add(time.Minute + testConfig.TTL)
	if rep := r.pass(p); rep.Destroyed != 1 {
		t.Fatalf("expiry pass destroyed %d", rep.Destroyed)
	}
	if _, err := r.svc.Start(context.Background(), r.scope, iv.ID, 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := r.get(iv.ID)
		if got.Machine != nil && got.Machine.ID != iv.Machine.ID && got.Machine.State == session.MachineStarted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cold start never recorded its machine: %+v", got.Machine)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	r.svc.Close()
	if m := r.only(iv.ID); m.ID == iv.Machine.ID {
		t.Errorf("machine %+v", m)
	}
}

// A controller accepted a start after a region change and died before its
// launcher replaced the old region's machine: the reconciler of the next
// leader resumes the start, which destroys that machine and creates one in
// the new region; the old one is never booted.
func TestResumedStartAfterARegionChangeReplacesTheMachine(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	iv := r.prewarmed(r.prewarmer(), r.scheduled(time.Minute).ID)
	old := iv.Machine.ID
	fra := "fra"
	r.patch(iv.ID, session.InterviewPatch{Region: &fra})
	now := r.clock.Now()
	if _, err := r.db.UpdateInterview(ctx, session.SystemScope(), iv.ID, func(cur *session.Interview) ([]session.Event, error) {
		ev, err := cur.Transition(session.StateProvisioning, "", session.ActorUser, now)
		return []session.Event{ev}, err
	}); err != nil {
		t.Fatal(err)
	}
	rec := provision.NewReconciler(provision.ReconcileConfig{Interval: time.Second, OrphanGrace: time.Minute, AdoptAfter: time.Second},
		r.svc, r.db, r.mem, slog.New(slog.DiscardHandler), nil)
	rec.Now = r.clock.Now
	r.clock.Add(2 * time.Second)
	rep, err := rec.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Adopted != 1 {
		t.Fatalf("reconciler pass %+v, want the start adopted", rep)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := r.get(iv.ID)
		if got.Machine != nil && got.Machine.ID != old && got.Machine.State == session.MachineStarted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the resumed start never recorded a new started machine: %s %+v", got.Status, got.Machine)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	r.svc.Close()
	m := r.only(iv.ID)
	r.mem.mu.Lock()
	oldStarts := r.mem.starts[old]
	r.mem.mu.Unlock()
	if m.ID == old || m.Region != "fra" || oldStarts != 0 {
		t.Errorf("machine %+v, the old one started %d times; want a new machine in fra and the old never booted", m, oldStarts)
	}
}
