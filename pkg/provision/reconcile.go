package provision

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/interviewvm/controlplane/pkg/session"
)

// LiveLister lists the interviews of every tenant whose VM may exist.
type LiveLister interface {
	LiveInterviews(ctx context.Context) ([]session.Interview, error)
}

// ReconcileStore is what the reconciler reads and tidies in the database.
type ReconcileStore interface {
	LiveLister
	// DeleteExpiredIdempotencyKeys deletes the idempotency keys of every
	// tenant past their retention and returns how many it deleted.
	DeleteExpiredIdempotencyKeys(ctx context.Context) (int64, error)
}

// SummaryLister is a provider that can also list its machines cheaply,
// each without its metadata (SessionID empty). The reconciler uses it when
// the provider has it: a machine's session is then the one that recorded
// the machine's id, else the one whose machine name (session.MachineName)
// it bears; only a machine neither tells is read in full (Get), and only
// when it is about to be destroyed as an orphan.
type SummaryLister interface {
	ListSummaries(ctx context.Context) ([]session.Machine, error)
}

// sweepEvery is the least time between two deletions of expired
// idempotency keys: they are kept 24 h, so a minute late is nothing.
const sweepEvery = time.Minute

// ReconcileConfig holds the reconciler's settings.
type ReconcileConfig struct {
	// Interval is the period of passes (RECONCILE_INTERVAL).
	Interval time.Duration
	// HeartbeatTimeout fails a session whose VM has been silent that long.
	HeartbeatTimeout time.Duration
	// OrphanGrace is how long a machine without a live session may live
	// before it is destroyed (it may belong to a start not yet recorded).
	OrphanGrace time.Duration
	// DeadlineGrace is added to an interview's max duration before the
	// controller ends it (the VM enforces the deadline itself first).
	DeadlineGrace time.Duration
	// EndingTimeout bounds how long an interview may stay ending.
	EndingTimeout time.Duration
	// AdoptAfter is how long a session may stay provisioning without a
	// launcher in this process before the reconciler adopts it.
	AdoptAfter time.Duration
	// ProvisionTimeout fails a session provisioning that long (default:
	// the service's ProvisionTimeout).
	ProvisionTimeout time.Duration
}

// Reconciler converges the world to the database in both directions: no
// machine outlives its session, no live session outlives its machine.
// Only the leader among controller replicas runs it.
type Reconciler struct {
	cfg      ReconcileConfig
	svc      *Service
	live     ReconcileStore
	machines Machines
	logger   *slog.Logger
	metrics  *reconcileMetrics
	// Now is the clock; tests replace it.
	Now func() time.Time

	mu       sync.Mutex
	orphaned map[string]time.Time // machine id → first seen without a live session
	// leadingSince is when this replica began reconciling: VMs cannot have
	// reached a controller that was down or not leading, so silence counts
	// from here at the earliest.
	leadingSince time.Time
	// swept is when expired idempotency keys were last deleted.
	swept time.Time
}

// NewReconciler returns a Reconciler working through svc.
func NewReconciler(cfg ReconcileConfig, svc *Service, live ReconcileStore, machines Machines, logger *slog.Logger, reg prometheus.Registerer) *Reconciler {
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.HeartbeatTimeout <= 0 {
		cfg.HeartbeatTimeout = 30 * time.Second
	}
	if cfg.OrphanGrace <= 0 {
		cfg.OrphanGrace = cfg.Interval
	}
	if cfg.DeadlineGrace <= 0 {
		cfg.DeadlineGrace = 30 * time.Second
	}
	if cfg.EndingTimeout <= 0 {
		cfg.EndingTimeout = 2 * cfg.HeartbeatTimeout
	}
	if cfg.AdoptAfter <= 0 {
		cfg.AdoptAfter = 15 * time.Second
	}
	if cfg.ProvisionTimeout <= 0 {
		cfg.ProvisionTimeout = svc.cfg.ProvisionTimeout
	}
	return &Reconciler{cfg: cfg, svc: svc, live: live, machines: machines, logger: logger,
		metrics: newReconcileMetrics(reg), Now: time.Now, orphaned: map[string]time.Time{}}
}

// Report says what one pass did.
type Report struct {
	Machines, Sessions int
	OrphansDestroyed   int
	Failed             map[string]int // by rule
	Adopted            int
	Ended              int
	// IdempotencyKeysExpired is how many expired idempotency keys the pass
	// deleted.
	IdempotencyKeysExpired int
}

// Run passes every Interval until ctx ends. Call it while leading.
func (r *Reconciler) Run(ctx context.Context) {
	r.mu.Lock()
	r.leadingSince = r.Now()
	r.mu.Unlock()
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := r.RunOnce(ctx); err != nil && ctx.Err() == nil {
			r.logger.Error("reconcile pass failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RunOnce makes one pass.
func (r *Reconciler) RunOnce(ctx context.Context) (Report, error) {
	start := time.Now()
	rep, err := r.pass(ctx)
	r.metrics.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		r.metrics.runs.WithLabelValues("error").Inc()
		return rep, err
	}
	r.metrics.runs.WithLabelValues("ok").Inc()
	r.metrics.lastSuccess.SetToCurrentTime()
	return rep, nil
}

func (r *Reconciler) pass(ctx context.Context) (Report, error) {
	rep := Report{Failed: map[string]int{}}
	machines, summaries, err := r.list(ctx)
	if err != nil {
		return rep, fmt.Errorf("list machines: %w", err)
	}
	// Read sessions after machines: a machine created in between belongs
	// to a session this read sees, so it is not taken for an orphan.
	live, err := r.live.LiveInterviews(ctx)
	if err != nil {
		return rep, fmt.Errorf("list live interviews: %w", err)
	}
	rep.Machines, rep.Sessions = len(machines), len(live)
	now := r.Now()

	bySession := make(map[string]session.Interview, len(live))
	for _, iv := range live {
		bySession[iv.ID] = iv
	}
	if summaries {
		resolveSessions(machines, live)
	}
	owned := func(m session.Machine) bool {
		iv, ok := bySession[m.SessionID]
		return ok && (iv.Machine == nil || iv.Machine.ID == m.ID || iv.Status == session.StateProvisioning)
	}
	running := make(map[string]session.Machine, len(machines)) // by machine id
	var due []session.Machine                                  // orphans past their grace
	r.mu.Lock()
	for _, m := range machines {
		running[m.ID] = m
		if owned(m) {
			delete(r.orphaned, m.ID)
			continue
		}
		// No live session owns it (or its session runs on another machine).
		first, known := r.orphaned[m.ID]
		if !known {
			r.orphaned[m.ID] = now
			first = now
		}
		if now.Sub(first) >= r.cfg.OrphanGrace {
			due = append(due, m)
		}
	}
	for id := range r.orphaned {
		if _, ok := running[id]; !ok {
			delete(r.orphaned, id) // gone by itself
		}
	}
	r.mu.Unlock()

	for _, m := range due {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		if m.SessionID == "" && summaries {
			// Neither its id nor its name tells whose it is: read its
			// metadata before destroying it.
			full, err := r.machines.Get(ctx, m.ID)
			switch {
			case errors.Is(err, session.ErrMachineNotFound):
				r.forgetOrphan(m.ID)
				delete(running, m.ID)
				continue
			case err != nil:
				r.logger.Warn("reconcile: get machine failed; leaving it to the next pass", "machine_id", m.ID, "error", err)
				continue
			}
			m.SessionID = full.SessionID
			running[m.ID] = m
			if owned(m) {
				r.forgetOrphan(m.ID)
				continue
			}
		}
		r.logger.Warn("destroying orphaned machine", "machine_id", m.ID, "machine_name", m.Name, "session_id", m.SessionID)
		if err := r.machines.Destroy(ctx, m.ID); err != nil {
			r.logger.Error("destroy orphaned machine", "machine_id", m.ID, "error", err)
			continue
		}
		r.forgetOrphan(m.ID)
		rep.OrphansDestroyed++
		r.metrics.orphans.Inc()
	}

	for _, iv := range live {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		r.session(ctx, iv, running, now, &rep)
	}
	r.metrics.machines.Set(float64(len(machines)))
	r.sweep(ctx, now, &rep)
	return rep, nil
}

// list lists the provider's machines, in the summary form when it has
// one (summaries true: SessionID is empty).
func (r *Reconciler) list(ctx context.Context) (ms []session.Machine, summaries bool, err error) {
	if sl, ok := r.machines.(SummaryLister); ok {
		ms, err = sl.ListSummaries(ctx)
		return ms, true, err
	}
	ms, err = r.machines.List(ctx)
	return ms, false, err
}

// resolveSessions fills in the session of summary-listed machines: the
// live session that recorded the machine's id, else the one whose machine
// name it bears (names are unique in a provider's app). A name two live
// sessions would share tells nothing; such a machine stays unresolved.
func resolveSessions(machines []session.Machine, live []session.Interview) {
	byID := make(map[string]string, len(live))
	for i := range live {
		if m := live[i].Machine; m != nil && m.ID != "" {
			byID[m.ID] = live[i].ID
		}
	}
	var unresolved []*session.Machine
	for i := range machines {
		m := &machines[i]
		if m.SessionID != "" {
			continue
		}
		if id, ok := byID[m.ID]; ok {
			m.SessionID = id
		} else {
			unresolved = append(unresolved, m)
		}
	}
	if len(unresolved) == 0 {
		return // the usual pass: every machine is recorded by its session
	}
	byName := make(map[string]string, len(live))
	name := func(n, id string) {
		if n == "" {
			return
		}
		if other, dup := byName[n]; dup && other != id {
			byName[n] = ""
			return
		}
		byName[n] = id
	}
	for i := range live {
		iv := &live[i]
		if iv.Machine != nil && iv.Machine.ID != "" {
			name(iv.Machine.Name, iv.ID)
		}
		name(session.MachineName(iv.Architecture, iv.TenantID, iv.ID), iv.ID)
	}
	for _, m := range unresolved {
		m.SessionID = byName[m.Name]
	}
}

func (r *Reconciler) forgetOrphan(id string) {
	r.mu.Lock()
	delete(r.orphaned, id)
	r.mu.Unlock()
}

// sweep deletes expired idempotency keys, at most once every sweepEvery. A
// failure is logged and retried on the next pass: it costs only space.
func (r *Reconciler) sweep(ctx context.Context, now time.Time, rep *Report) {
	r.mu.Lock()
	due := r.swept.IsZero() || now.Sub(r.swept) >= sweepEvery
	if due {
		r.swept = now
	}
	r.mu.Unlock()
	if !due {
		return
	}
	n, err := r.live.DeleteExpiredIdempotencyKeys(ctx)
	if err != nil {
		r.logger.Warn("delete expired idempotency keys", "error", err)
		return
	}
	rep.IdempotencyKeysExpired = int(n)
}

// session applies the rules to one live session.
func (r *Reconciler) session(ctx context.Context, iv session.Interview, running map[string]session.Machine, now time.Time, rep *Report) {
	if iv.Status == session.StateScheduled {
		return // a pre-warmed machine: the pre-warmer looks after it
	}
	log := r.svc.log(iv)
	hasMachine := iv.Machine != nil && iv.Machine.ID != "" && iv.Machine.State != session.MachineDestroyed
	if !hasMachine && iv.Status != session.StateProvisioning {
		// Its launcher died between the create and recording the machine,
		// yet the VM came up and reported: record the machine it runs on.
		for _, m := range running {
			if m.SessionID == iv.ID {
				log.Info("recording the machine of a session that came up without its launcher", "machine_id", m.ID)
				r.svc.recordMachine(iv.ID, m)
				m := m
				iv.Machine, hasMachine = &m, true
				break
			}
		}
	}
	up := false
	if hasMachine {
		_, up = running[iv.Machine.ID]
		if !up {
			// A list may lag behind a create: ask for the machine itself.
			m, err := r.machines.Get(ctx, iv.Machine.ID)
			up = err == nil && m.State != session.MachineDestroyed && m.State != session.MachineStopped
			if err != nil && !errors.Is(err, session.ErrMachineNotFound) {
				log.Warn("reconcile: get machine failed; skipping the session this pass", "error", err)
				return
			}
		}
	}
	deadline := iv.CreatedAt
	if iv.StartedAt != nil {
		deadline = *iv.StartedAt
	}
	deadline = deadline.Add(iv.MaxDuration())

	switch {
	case iv.Status == session.StateProvisioning:
		if r.svc.Launching(iv.ID) {
			return
		}
		if now.Sub(iv.StateChangedAt) > r.cfg.ProvisionTimeout {
			r.fail(iv, session.ReasonProvisionFailed, "provision_timeout", rep)
			return
		}
		if now.Sub(iv.StateChangedAt) >= r.cfg.AdoptAfter {
			r.adopt(ctx, iv, running, rep)
		}
		return
	case hasMachine && !up:
		if iv.Status == session.StateEnding && iv.TranscriptComplete() {
			r.complete(iv, rep)
			return
		}
		r.fail(iv, session.ReasonMachineLost, "machine_lost", rep)
		return
	case !hasMachine:
		// Live, not provisioning, yet without a machine: it cannot serve —
		// unless its launcher is still recording the machine (the VM can
		// report ready first), or the machine was created after this pass
		// listed machines (the VM was that fast): a later pass sees it.
		if r.svc.Launching(iv.ID) || now.Sub(iv.StateChangedAt) < r.cfg.AdoptAfter {
			return
		}
		r.fail(iv, session.ReasonMachineLost, "machine_lost", rep)
		return
	}
	lastSign := iv.StateChangedAt
	if iv.LastHeartbeatAt != nil && iv.LastHeartbeatAt.After(lastSign) {
		lastSign = *iv.LastHeartbeatAt
	}
	r.mu.Lock()
	if r.leadingSince.After(lastSign) {
		lastSign = r.leadingSince // the VM may have been calling a controller that was down
	}
	r.mu.Unlock()
	switch {
	case now.Sub(lastSign) > r.cfg.HeartbeatTimeout:
		r.fail(iv, session.ReasonHeartbeatTimeout, "heartbeat_timeout", rep)
	case now.After(deadline.Add(r.cfg.DeadlineGrace)):
		if iv.Status == session.StateEnding && iv.TranscriptComplete() {
			r.complete(iv, rep)
			return
		}
		r.fail(iv, session.ReasonMaxDuration, "max_duration", rep)
	case iv.Status == session.StateEnding && now.Sub(iv.StateChangedAt) > r.cfg.EndingTimeout:
		reason := session.ReasonEndedByUser
		if iv.EndReason != nil {
			reason = *iv.EndReason
		}
		r.fail(iv, reason, "ending_timeout", rep)
	case iv.Status != session.StateEnding && now.After(deadline):
		// The VM should have ended by itself: tell it through its heartbeat.
		r.endForDeadline(ctx, iv, rep)
	}
}

func (r *Reconciler) fail(iv session.Interview, reason session.EndReason, rule string, rep *Report) {
	r.svc.failAs(iv.ID, reason, session.ActorReconciler, "reconciler rule "+rule)
	rep.Failed[rule]++
	r.metrics.failed.WithLabelValues(rule).Inc()
}

func (r *Reconciler) complete(iv session.Interview, rep *Report) {
	got, err := r.svc.store.UpdateInterview(r.svc.ctx, session.SystemScope(), iv.ID, func(cur *session.Interview) ([]session.Event, error) {
		if cur.Status != session.StateEnding || !cur.TranscriptComplete() {
			return nil, errNothingToDo
		}
		ev, err := cur.Transition(session.StateCompleted, "", session.ActorReconciler, r.Now())
		return []session.Event{ev}, err
	})
	r.svc.changed(iv.ID)
	if err != nil {
		return
	}
	rep.Ended++
	r.svc.completed(got)
}

var errNothingToDo = errors.New("nothing to do")

// endForDeadline moves an interview past its deadline to ending; the VM
// hears it on its next heartbeat, flushes and reports ended.
func (r *Reconciler) endForDeadline(ctx context.Context, iv session.Interview, rep *Report) {
	_, err := r.svc.store.UpdateInterview(ctx, session.SystemScope(), iv.ID, func(cur *session.Interview) ([]session.Event, error) {
		if cur.Status == session.StateEnding || !cur.Status.Live() {
			return nil, errNothingToDo
		}
		ev, err := cur.Transition(session.StateEnding, session.ReasonMaxDuration, session.ActorReconciler, r.Now())
		return []session.Event{ev}, err
	})
	r.svc.changed(iv.ID)
	if err == nil {
		rep.Ended++
		r.svc.log(iv).Info("interview past its deadline: ending it")
	}
}

// adopt resumes a start whose launcher is gone (a controller restart): the
// machine is found by its session and waited for, or created if it never
// was; nothing is created twice.
func (r *Reconciler) adopt(ctx context.Context, iv session.Interview, running map[string]session.Machine, rep *Report) {
	log := r.svc.log(iv)
	var found *session.Machine
	for _, m := range running {
		if m.SessionID == iv.ID {
			m := m
			found = &m
			break
		}
	}
	if found != nil && iv.PrewarmStale() && hasMachine(&iv) && iv.Machine.ID == found.ID {
		// Pre-warmed for the interview's former region: the launcher
		// replaces it (below, as a pre-warmed start).
		found = nil
	}
	token := ""
	if found == nil && (iv.PrewarmClaimedAt != nil || hasMachine(&iv)) {
		// A pre-warmed start: the launcher boots the machine the pre-warmer
		// records (or gives up on it and creates one cold).
		found = nil
	} else if found == nil {
		// The machine was never created: the old token died with the
		// launcher's memory, so the new machine gets a new one.
		var hash []byte
		token, hash = newToken()
		_, err := r.svc.store.UpdateInterview(ctx, session.SystemScope(), iv.ID, func(cur *session.Interview) ([]session.Event, error) {
			if cur.Status != session.StateProvisioning {
				return nil, errNothingToDo
			}
			cur.TokenHash = hash
			return nil, nil
		})
		if err != nil {
			return
		}
	}
	log.Info("adopting an interrupted start", "machine_found", found != nil)
	rep.Adopted++
	r.metrics.adopted.Inc()
	started := r.Now()
	r.svc.goOwned(func(ctx context.Context) { r.svc.launch(ctx, iv, token, started, found, nil, nil) })
}

type reconcileMetrics struct {
	runs        *prometheus.CounterVec
	duration    prometheus.Histogram
	lastSuccess prometheus.Gauge
	orphans     prometheus.Counter
	failed      *prometheus.CounterVec
	adopted     prometheus.Counter
	machines    prometheus.Gauge
	leader      prometheus.Gauge
}

// SetLeader records whether this replica leads (and so reconciles).
func (r *Reconciler) SetLeader(leading bool) {
	v := 0.0
	if leading {
		v = 1
	}
	r.metrics.leader.Set(v)
}

func newReconcileMetrics(reg prometheus.Registerer) *reconcileMetrics {
	m := &reconcileMetrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reconciler_runs_total", Help: "Reconciler passes, by result (ok, error).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "reconciler_pass_duration_seconds", Help: "Duration of reconciler passes.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2, 5, 10},
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "reconciler_last_success_timestamp_seconds", Help: "Unix time of the last successful reconciler pass.",
		}),
		orphans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "reconciler_orphans_destroyed_total", Help: "Machines destroyed because no live session owned them.",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reconciler_sessions_failed_total", Help: "Live sessions the reconciler ended, by rule.",
		}, []string{"rule"}),
		adopted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "reconciler_adopted_total", Help: "Interrupted starts the reconciler resumed.",
		}),
		machines: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "machines_live", Help: "Session machines the provider reported at the last reconciler pass.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "leader", Help: "1 while this controller replica holds the leadership (and reconciles), else 0.",
		}),
	}
	for _, rule := range []string{"machine_lost", "heartbeat_timeout", "max_duration", "provision_timeout", "ending_timeout"} {
		m.failed.WithLabelValues(rule)
	}
	for _, r := range []string{"ok", "error"} {
		m.runs.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.runs, m.duration, m.lastSuccess, m.orphans, m.failed, m.adopted, m.machines, m.leader)
	}
	return m
}
