// Package prewarm creates the machines of scheduled interviews ahead of
// their start. Once now ≥ scheduled_at − Lead, the leader's Prewarmer
// creates the interview's own machine (its final name, region, metadata
// and session token) without booting it, records it on the interview and
// writes machine_prewarmed to its timeline; the interview stays scheduled.
// A start then only boots that machine (pkg/provision). A machine whose
// interview was not started by scheduled_at + TTL, or was rescheduled out
// of the window, is destroyed; a lost one is created again while the
// window is open. One pre-warmed for a region the interview no longer asks
// for (its region was changed) is destroyed and created again in the new
// region.
//
// Exactly one machine per interview: the create is claimed on the
// interview's row first (prewarm_claimed_at, with the token's hash), so
// no other pre-warmer or start creates one meanwhile; a start arriving
// during the create joins it. A claim left by a pre-warmer that died is
// resolved by looking the machine up by its session id: recorded when
// found, released when not.
package prewarm

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Store is the persistence the pre-warmer needs (postgres.DB).
type Store interface {
	// PrewarmInterviews lists the scheduled interviews due by horizon or
	// holding a pre-warm claim or machine, and the provisioning ones still
	// holding a claim.
	PrewarmInterviews(ctx context.Context, horizon time.Time) ([]session.Interview, error)
	UpdateInterview(ctx context.Context, scope session.Scope, id string,
		fn func(iv *session.Interview) ([]session.Event, error)) (session.Interview, error)
}

// Machines is the machine provider.
type Machines interface {
	Create(ctx context.Context, spec session.MachineSpec) (session.Machine, error)
	List(ctx context.Context) ([]session.Machine, error)
	Destroy(ctx context.Context, id string) error
}

// Lifecycle is what the pre-warmer borrows from the lifecycle service
// (provision.Service), so a pre-warmed machine is exactly the one a start
// would create.
type Lifecycle interface {
	MachineSpec(iv session.Interview, token string) session.MachineSpec
	// NewToken returns a new session token and the hash to store.
	NewToken() (string, []byte)
	// Changed wakes a start waiting for the pre-warm to be recorded.
	Changed(id string)
	// PrewarmEnded accounts for the end of a pre-warm.
	PrewarmEnded(iv session.Interview, outcome string)
}

// Outcomes (as provision names them).
const (
	outcomeExpired   = "expired"
	outcomeCancelled = "cancelled"
	outcomeFailed    = "failed"
)

// Config holds the pre-warmer's settings.
type Config struct {
	// Lead is how long before scheduled_at the machine is created
	// (PREWARM_LEAD); 0 disables pre-warm.
	Lead time.Duration
	// TTL is how long past scheduled_at a pre-warmed machine waits for its
	// start (PREWARM_TTL).
	TTL time.Duration
	// Interval is the period of passes.
	Interval time.Duration
	// CreateTimeout bounds one pre-warm create, rate-limit queueing
	// included.
	CreateTimeout time.Duration
	// ClaimTimeout is how old a claim must be before another pre-warmer
	// takes it for abandoned (default CreateTimeout + 30 s).
	ClaimTimeout time.Duration
	// InheritedClaimAfter is how old a claim made before this replica
	// began leading must be before it is settled (default 5 s): the
	// previous leader's creates were cancelled when it stopped leading,
	// so only a request already on the wire may still land.
	InheritedClaimAfter time.Duration
	// Parallel bounds the creates in flight (default 4).
	Parallel int
}

// Prewarmer runs the pre-warm passes. Only the leader runs it.
type Prewarmer struct {
	cfg       Config
	store     Store
	machines  Machines
	lifecycle Lifecycle
	logger    *slog.Logger
	metrics   *metrics
	// Now is the clock; tests replace it.
	Now func() time.Time

	mu       sync.Mutex
	inflight map[string]bool // interview ids this process is creating for
	// leadingSince is when Run began: claims older than that were made by
	// another leader (or by this process before a restart).
	leadingSince time.Time
	wg           sync.WaitGroup
	sem          chan struct{}
}

// New returns a Prewarmer; reg receives its metrics.
func New(cfg Config, store Store, machines Machines, lifecycle Lifecycle, logger *slog.Logger, reg prometheus.Registerer) *Prewarmer {
	if cfg.TTL <= 0 {
		cfg.TTL = 30 * time.Minute
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.CreateTimeout <= 0 {
		cfg.CreateTimeout = 5 * time.Minute
	}
	if cfg.ClaimTimeout <= 0 {
		cfg.ClaimTimeout = cfg.CreateTimeout + 30*time.Second
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 4
	}
	if cfg.InheritedClaimAfter <= 0 {
		cfg.InheritedClaimAfter = 5 * time.Second
	}
	return &Prewarmer{
		cfg: cfg, store: store, machines: machines, lifecycle: lifecycle, logger: logger,
		metrics: newMetrics(reg), Now: time.Now, inflight: map[string]bool{},
		sem: make(chan struct{}, cfg.Parallel),
	}
}

// Enabled reports whether pre-warm is on (Lead > 0).
func (p *Prewarmer) Enabled() bool { return p.cfg.Lead > 0 }

// Run passes every Interval until ctx ends, then waits for the creates it
// started. Call it while leading.
func (p *Prewarmer) Run(ctx context.Context) {
	defer p.Wait()
	if !p.Enabled() {
		return
	}
	p.mu.Lock()
	p.leadingSince = p.Now()
	p.mu.Unlock()
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := p.RunOnce(ctx); err != nil && ctx.Err() == nil {
			p.logger.Error("pre-warm pass failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Wait waits for the creates started by passes.
func (p *Prewarmer) Wait() { p.wg.Wait() }

// Report says what one pass did.
type Report struct {
	// Created counts the creates the pass started (they finish in the
	// background: Wait for them).
	Created   int
	Destroyed int
	// Resolved counts abandoned claims settled.
	Resolved int
}

// due is when interview iv's machine is created: the lead window's start,
// plus a spread of up to half the lead taken from the interview's id, so
// interviews scheduled at the same minute are not created at once.
func (p *Prewarmer) due(iv session.Interview) time.Time {
	h := fnv.New64a()
	_, _ = h.Write([]byte(iv.ID))
	spread := time.Duration(0)
	if half := p.cfg.Lead / 2; half > 0 {
		spread = time.Duration(h.Sum64() % uint64(half))
	}
	return iv.ScheduledAt.Add(-p.cfg.Lead + spread)
}

// inWindow reports whether a pre-warmed machine of iv may exist at now.
func (p *Prewarmer) inWindow(iv session.Interview, now time.Time) bool {
	return iv.ScheduledAt != nil && !now.Before(iv.ScheduledAt.Add(-p.cfg.Lead)) && now.Before(iv.ScheduledAt.Add(p.cfg.TTL))
}

func hasMachine(iv *session.Interview) bool {
	return iv.Machine != nil && iv.Machine.ID != "" && iv.Machine.State != session.MachineDestroyed
}

// RunOnce makes one pass.
func (p *Prewarmer) RunOnce(ctx context.Context) (Report, error) {
	var rep Report
	if !p.Enabled() {
		return rep, nil
	}
	now := p.Now()
	ivs, err := p.store.PrewarmInterviews(ctx, now.Add(p.cfg.Lead))
	if err != nil {
		return rep, err
	}
	// The machines, listed once a pass and only when needed.
	var listed []session.Machine
	var listErr error
	didList := false
	list := func() ([]session.Machine, error) {
		if !didList {
			didList = true
			listed, listErr = p.machines.List(ctx)
		}
		return listed, listErr
	}
	warm := 0
	for _, iv := range ivs {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		log := p.logger.With("session_id", iv.ID, "tenant_id", iv.TenantID)
		switch {
		case iv.PrewarmClaimedAt != nil:
			if p.busy(iv.ID) || !p.abandoned(*iv.PrewarmClaimedAt, now) {
				continue
			}
			ms, err := list()
			if err != nil {
				return rep, err
			}
			p.resolve(ctx, iv, ms, log)
			rep.Resolved++
		case iv.Status != session.StateScheduled:
		case hasMachine(&iv) && iv.PrewarmStale():
			// The interview moved to another region after its pre-warm:
			// its machine is in the wrong place. Destroy it, then create
			// the new one right away when its time has come (a crash in
			// between leaves a scheduled interview without a machine,
			// which the next pass creates).
			log.Info("interview moved to another region: replacing its pre-warmed machine",
				"machine_id", iv.Machine.ID, "from", iv.PrewarmRegion, "to", iv.Region)
			if !p.expire(ctx, iv, outcomeCancelled, log) {
				continue
			}
			rep.Destroyed++
			if iv.ScheduledAt != nil && !now.Before(p.due(iv)) && p.inWindow(iv, now) && p.create(ctx, iv, now, log) {
				rep.Created++
			}
		case hasMachine(&iv):
			if !p.inWindow(iv, now) {
				outcome := outcomeExpired
				if iv.ScheduledAt == nil || now.Before(iv.ScheduledAt.Add(-p.cfg.Lead)) {
					outcome = outcomeCancelled // rescheduled out of the window
				}
				if p.expire(ctx, iv, outcome, log) {
					rep.Destroyed++
				}
				continue
			}
			ms, err := list()
			if err != nil {
				return rep, err
			}
			if !containsMachine(ms, iv.Machine.ID) {
				// Lost (a list may lag a create: the claim made it a pass
				// ago at least). Forget it: the next pass creates it again.
				log.Warn("pre-warmed machine is gone; it will be created again", "machine_id", iv.Machine.ID)
				p.forget(ctx, iv)
				continue
			}
			warm++
		default:
			if iv.ScheduledAt == nil || now.Before(p.due(iv)) || !now.Before(iv.ScheduledAt.Add(p.cfg.TTL)) {
				continue
			}
			ms, err := list()
			if err != nil {
				return rep, err
			}
			if stray := machineOf(ms, iv.ID); stray != nil {
				// A machine nobody recorded (an abandoned create that landed
				// late): its token is unknown, so it cannot serve. Destroy
				// it and create afresh next pass.
				log.Warn("destroying an unrecorded machine of a scheduled interview", "machine_id", stray.ID)
				if err := p.machines.Destroy(ctx, stray.ID); err != nil {
					log.Error("destroy unrecorded machine", "machine_id", stray.ID, "error", err)
				}
				rep.Destroyed++
				continue
			}
			if p.create(ctx, iv, now, log) {
				rep.Created++
			}
		}
	}
	p.metrics.machines.Set(float64(warm))
	return rep, nil
}

func containsMachine(ms []session.Machine, id string) bool {
	for _, m := range ms {
		if m.ID == id {
			return true
		}
	}
	return false
}

func machineOf(ms []session.Machine, sessionID string) *session.Machine {
	for _, m := range ms {
		if m.SessionID == sessionID && m.State != session.MachineDestroyed {
			return &m
		}
	}
	return nil
}

// abandoned reports whether a claim made at claimed, by no create of this
// process, is old enough to settle.
func (p *Prewarmer) abandoned(claimed, now time.Time) bool {
	p.mu.Lock()
	since := p.leadingSince
	p.mu.Unlock()
	if !since.IsZero() && claimed.Before(since) {
		return now.Sub(claimed) >= p.cfg.InheritedClaimAfter
	}
	return now.Sub(claimed) >= p.cfg.ClaimTimeout
}

func (p *Prewarmer) busy(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inflight[id]
}

var errNothingToDo = errors.New("nothing to do")

// create claims interview iv and creates its machine in the background.
func (p *Prewarmer) create(ctx context.Context, iv session.Interview, now time.Time, log *slog.Logger) bool {
	p.mu.Lock()
	if p.inflight[iv.ID] {
		p.mu.Unlock()
		return false
	}
	p.inflight[iv.ID] = true
	p.mu.Unlock()
	release := func() {
		p.mu.Lock()
		delete(p.inflight, iv.ID)
		p.mu.Unlock()
	}
	token, hash := p.lifecycle.NewToken()
	claimed, err := p.store.UpdateInterview(ctx, session.SystemScope(), iv.ID, func(cur *session.Interview) ([]session.Event, error) {
		if cur.Status != session.StateScheduled || cur.PrewarmClaimedAt != nil || hasMachine(cur) || !p.inWindow(*cur, now) {
			return nil, errNothingToDo
		}
		cur.PrewarmClaimedAt = &now
		cur.PrewarmedAt = nil
		cur.PrewarmRegion = cur.Region
		cur.TokenHash = hash
		return nil, nil
	})
	if err != nil {
		release()
		if !errors.Is(err, errNothingToDo) {
			log.Error("claim pre-warm failed", "error", err)
		}
		return false
	}
	spec := p.lifecycle.MachineSpec(claimed, token)
	spec.SkipLaunch, spec.Background = true, true
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer release()
		select {
		case p.sem <- struct{}{}:
		case <-ctx.Done():
			return // the claim is resolved by the next leader
		}
		defer func() { <-p.sem }()
		cctx, cancel := context.WithTimeout(ctx, p.cfg.CreateTimeout)
		defer cancel()
		m, err := p.machines.Create(cctx, spec)
		if err != nil {
			if ctx.Err() != nil {
				return // stopping: the claim is resolved by the next leader
			}
			log.Error("pre-warm create failed", "machine_name", spec.Name, "error", err)
			p.release(ctx, claimed, outcomeFailed)
			return
		}
		log.Info("machine pre-warmed", "machine_id", m.ID, "machine_name", m.Name, "region", m.Region)
		p.record(ctx, iv.ID, m, log)
	}()
	return true
}

// record stores the pre-warmed machine m on interview id and clears the
// claim. When the interview ended meanwhile, or already has another
// machine, m is destroyed.
func (p *Prewarmer) record(ctx context.Context, id string, m session.Machine, log *slog.Logger) {
	stale := false
	iv, err := p.store.UpdateInterview(ctx, session.SystemScope(), id, func(cur *session.Interview) ([]session.Event, error) {
		if hasMachine(cur) && cur.Machine.ID == m.ID {
			cur.PrewarmClaimedAt = nil
			return nil, nil
		}
		if (!cur.Status.Live() && cur.Status != session.StateScheduled) || hasMachine(cur) {
			stale = true
			cur.PrewarmClaimedAt = nil
			return nil, nil
		}
		now := p.Now()
		m.SessionID = cur.ID
		cur.Machine = &m
		cur.PrewarmClaimedAt = nil
		cur.PrewarmedAt = &now
		return []session.Event{{At: now, From: cur.Status, To: cur.Status, Reason: session.EventMachinePrewarmed, Actor: session.ActorController}}, nil
	})
	p.lifecycle.Changed(id)
	if err != nil {
		log.Error("record pre-warmed machine failed", "machine_id", m.ID, "error", err)
		return
	}
	if stale {
		log.Info("interview moved on during its pre-warm: destroying the machine", "machine_id", m.ID, "status", iv.Status)
		if err := p.machines.Destroy(ctx, m.ID); err != nil {
			log.Error("destroy machine of a moved-on pre-warm", "machine_id", m.ID, "error", err)
		}
		p.lifecycle.PrewarmEnded(iv, outcomeCancelled)
	}
}

// release clears a claim whose create failed or whose machine was never
// found: a start waiting on it goes cold, and the next pass may try again.
func (p *Prewarmer) release(ctx context.Context, iv session.Interview, outcome string) {
	_, err := p.store.UpdateInterview(ctx, session.SystemScope(), iv.ID, func(cur *session.Interview) ([]session.Event, error) {
		if cur.PrewarmClaimedAt == nil {
			return nil, errNothingToDo
		}
		cur.PrewarmClaimedAt = nil
		return nil, nil
	})
	p.lifecycle.Changed(iv.ID)
	if err != nil && !errors.Is(err, errNothingToDo) {
		p.logger.Error("release pre-warm claim", "session_id", iv.ID, "error", err)
		return
	}
	p.lifecycle.PrewarmEnded(iv, outcome)
}

// resolve settles a claim its pre-warmer abandoned (it died between the
// create and the record): the machine, if the create made one, is found by
// its session id and recorded; otherwise the claim is released.
func (p *Prewarmer) resolve(ctx context.Context, iv session.Interview, ms []session.Machine, log *slog.Logger) {
	if m := machineOf(ms, iv.ID); m != nil {
		log.Info("recording the machine of an abandoned pre-warm", "machine_id", m.ID)
		p.record(ctx, iv.ID, *m, log)
		return
	}
	log.Info("releasing an abandoned pre-warm claim: no machine was created")
	p.release(ctx, iv, outcomeFailed)
}

// expire destroys the pre-warmed machine of a scheduled interview outside
// its window; the interview stays scheduled (a later start is cold).
func (p *Prewarmer) expire(ctx context.Context, iv session.Interview, outcome string, log *slog.Logger) bool {
	mid := iv.Machine.ID
	if err := p.machines.Destroy(ctx, mid); err != nil && !errors.Is(err, session.ErrMachineNotFound) {
		log.Error("destroy expired pre-warmed machine", "machine_id", mid, "error", err)
		return false
	}
	var at *time.Time
	cur, err := p.store.UpdateInterview(ctx, session.SystemScope(), iv.ID, func(cur *session.Interview) ([]session.Event, error) {
		if cur.Machine == nil || cur.Machine.ID != mid {
			return nil, errNothingToDo
		}
		cur.Machine.State = session.MachineDestroyed
		at, cur.PrewarmedAt = cur.PrewarmedAt, nil
		return nil, nil
	})
	p.lifecycle.Changed(iv.ID)
	if err != nil {
		if !errors.Is(err, errNothingToDo) {
			log.Error("record expired pre-warmed machine", "machine_id", mid, "error", err)
		}
		return true
	}
	log.Info("pre-warmed machine destroyed", "machine_id", mid, "outcome", outcome)
	cur.PrewarmedAt = at
	p.lifecycle.PrewarmEnded(cur, outcome)
	return true
}

// forget drops a recorded pre-warmed machine that no longer exists.
func (p *Prewarmer) forget(ctx context.Context, iv session.Interview) {
	mid := iv.Machine.ID
	_, err := p.store.UpdateInterview(ctx, session.SystemScope(), iv.ID, func(cur *session.Interview) ([]session.Event, error) {
		if cur.Status != session.StateScheduled || cur.Machine == nil || cur.Machine.ID != mid {
			return nil, errNothingToDo
		}
		cur.Machine.State = session.MachineDestroyed
		cur.PrewarmedAt = nil
		return nil, nil
	})
	if err != nil && !errors.Is(err, errNothingToDo) {
		p.logger.Error("forget lost pre-warmed machine", "session_id", iv.ID, "error", err)
	}
}
