// Package provision runs the interview lifecycle: it starts an interview
// by creating its VM through a machine provider, follows the VM's reports
// (ready, heartbeat, ended), ends and cancels interviews, and destroys
// their machines. It declares the two small interfaces it needs: Store
// (implemented by postgres.DB) and Machines (implemented by the local and
// Fly providers).
package provision

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Store is the persistence the lifecycle needs.
type Store interface {
	Interview(ctx context.Context, scope session.Scope, id string) (session.Interview, error)
	UpdateInterview(ctx context.Context, scope session.Scope, id string,
		fn func(iv *session.Interview) ([]session.Event, error)) (session.Interview, error)
	// StartInterview is UpdateInterview for a start: with countLive
	// serialised per tenant, telling fn how many other interviews of the
	// tenant are live (else otherLive is 0); it also returns the
	// interview's position (nil when not found), read in the same round
	// trip, for the VM's configuration.
	// sent, when not nil, is called once the change and its COMMIT are
	// sent, before their answer is read (not when nothing is written); the
	// error returned says whether it committed.
	StartInterview(ctx context.Context, scope session.Scope, id string, countLive bool,
		fn func(iv *session.Interview, otherLive int) ([]session.Event, error),
		sent func(iv session.Interview, pos *session.PositionRecord)) (session.Interview, *session.PositionRecord, error)
	// AppendTranscript stores segments idempotently, advancing AckedSeq;
	// check runs first on the locked interview, after once AckedSeq is new.
	AppendTranscript(ctx context.Context, id string, segs []session.Segment,
		check func(iv *session.Interview) error,
		after func(iv *session.Interview) ([]session.Event, error)) (session.Interview, error)
	Position(ctx context.Context, scope session.Scope, id string) (session.PositionRecord, error)
	// RecordHeartbeats writes a batch of heartbeats and returns the state
	// of the interviews among them that are still live, as they now stand.
	RecordHeartbeats(ctx context.Context, beats []session.HeartbeatRecord) (map[string]session.HeartbeatState, error)
	// HeartbeatStates returns the state of the interviews among ids that
	// are live, writing nothing.
	HeartbeatStates(ctx context.Context, ids []string) (map[string]session.HeartbeatState, error)
}

// Machines is a machine provider: one VM per interview.
type Machines interface {
	// Create creates (and, unless spec.SkipLaunch, starts) a machine.
	Create(ctx context.Context, spec session.MachineSpec) (session.Machine, error)
	Start(ctx context.Context, id string) error
	// WaitStarted returns once the machine runs.
	WaitStarted(ctx context.Context, id string) (session.Machine, error)
	// Get returns an error wrapping session.ErrMachineNotFound for a
	// machine that does not exist.
	Get(ctx context.Context, id string) (session.Machine, error)
	List(ctx context.Context) ([]session.Machine, error)
	// Destroy is idempotent: a machine already gone is destroyed.
	Destroy(ctx context.Context, id string) error
}

// Config holds the lifecycle's settings.
type Config struct {
	// Provider names the machine provider ("local" or "fly").
	Provider string
	// ControllerURL is the URL session VMs use to reach the internal API.
	ControllerURL string
	// Realtime is the interviewer VMs run: "simulated", "openai" or
	// "synthetic".
	Realtime string
	// SyntheticTurn is the scripted candidate's pace in synthetic mode.
	SyntheticTurn time.Duration
	// RealtimeModel, RealtimeVoice and TranscribeModel are handed to each
	// VM in its configuration: the realtime model, the interviewer's voice
	// and the transcription model in openai mode (empty: the VM's
	// defaults).
	RealtimeModel, RealtimeVoice, TranscribeModel string
	// Region is the preferred machine region.
	Region string
	// HeartbeatInterval is how often VMs report.
	HeartbeatInterval time.Duration
	// HeartbeatFlush is how often the heartbeats received are written, in
	// one batch (default 1s).
	HeartbeatFlush time.Duration
	// HeartbeatPersist is how much older than the latest heartbeat a live
	// VM's stored heartbeat may be before a batch writes it again (0:
	// every batch writes every heartbeat received). A VM whose heartbeats
	// stop has its last one written at most min(2 × HeartbeatInterval,
	// HeartbeatPersist) after it arrived. Keep it well under the
	// reconciler's HeartbeatTimeout.
	HeartbeatPersist time.Duration
	// IdleTimeout ends an interview no browser joins in time (0: never).
	IdleTimeout time.Duration
	// ProvisionTimeout bounds machine creation plus the VM's ready report.
	ProvisionTimeout time.Duration
	// TenantMaxConcurrent caps each tenant's live interviews (0: no cap).
	TenantMaxConcurrent int
}

// Service runs the lifecycle. Its background work (launching and
// destroying machines) is owned by the Service and stopped by Close.
type Service struct {
	cfg      Config
	store    Store
	machines Machines
	logger   *slog.Logger
	metrics  *metrics
	now      func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	beats     *beats        // heartbeats answered from memory, written in batches
	beatsDone chan struct{} // closed when the heartbeat writer returned

	// readyPoll is how often a launch waiting for the VM's ready report
	// reads the interview should no change have woken it (a safety net).
	readyPoll time.Duration

	mu       sync.Mutex
	watchers map[string]*watch
	// launching holds the sessions this process is provisioning.
	launching map[string]bool
}

// claim marks a session as being provisioned by this process; false when
// it already is.
func (s *Service) claim(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.launching[id] {
		return false
	}
	s.launching[id] = true
	return true
}

func (s *Service) release(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.launching, id)
}

// Launching reports whether this process is provisioning the session.
func (s *Service) Launching(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.launching[id]
}

// New returns a Service. reg receives its metrics.
func New(cfg Config, store Store, machines Machines, logger *slog.Logger, reg prometheus.Registerer) *Service {
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 2 * time.Second
	}
	if cfg.ProvisionTimeout <= 0 {
		cfg.ProvisionTimeout = 5 * time.Minute
	}
	if cfg.HeartbeatFlush <= 0 {
		cfg.HeartbeatFlush = time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		cfg: cfg, store: store, machines: machines, logger: logger,
		metrics: newMetrics(reg), now: storedNow, beats: newBeats(), beatsDone: make(chan struct{}),
		ctx: ctx, cancel: cancel, watchers: map[string]*watch{}, launching: map[string]bool{},
		readyPoll: time.Second,
	}
	// Not in wg: that one tracks launches and destroys.
	go func() {
		defer close(s.beatsDone)
		s.flushBeats(ctx)
	}()
	return s
}

// storedNow is the time as PostgreSQL stores it (microseconds): an
// interview this process changed and hands over without reading it back
// (waitReady) shows the same times as one read from the store.
func storedNow() time.Time { return time.Now().Truncate(time.Microsecond) }

// Close stops background work and waits for it.
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
	<-s.beatsDone
}

func (s *Service) goOwned(fn func(ctx context.Context)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn(s.ctx)
	}()
}

// watch is the next change of one interview.
type watch struct {
	done chan struct{} // closed at the change
	// iv, set before done closes, is the interview as the change left it
	// when this process made it; nil otherwise (read it).
	iv *session.Interview
}

// watch returns the next change of interview id.
func (s *Service) watch(id string) *watch {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.watchers[id]
	if !ok {
		w = &watch{done: make(chan struct{})}
		s.watchers[id] = w
	}
	return w
}

// changedTo is changed for a change this process made and whose result it
// holds: a waiter takes iv instead of reading the row again.
func (s *Service) changedTo(iv session.Interview) {
	s.beats.forget(iv.ID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if w, ok := s.watchers[iv.ID]; ok {
		w.iv = &iv
		close(w.done)
		delete(s.watchers, iv.ID)
	}
}

// changed is called after this process changed interview id: the
// heartbeat cache forgets it and its waiters wake.
func (s *Service) changed(id string) {
	s.beats.forget(id)
	s.Notified(id)
}

// Notified wakes whoever in this process waits on interview id (a start
// request waiting for the ready report, a launch) after a change on any
// replica: the controller's LISTEN loop calls it for every change
// notification, so a ready report received by another replica wakes the
// start request waiting here. The empty id wakes every waiter (the
// listener reconnected: anything may have changed).
func (s *Service) Notified(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id == "" {
		for k, w := range s.watchers {
			close(w.done)
			delete(s.watchers, k)
		}
		return
	}
	if w, ok := s.watchers[id]; ok {
		close(w.done)
		delete(s.watchers, id)
	}
}

func (s *Service) log(iv session.Interview) *slog.Logger {
	l := s.logger.With("session_id", iv.ID, "tenant_id", iv.TenantID)
	if iv.Machine != nil && iv.Machine.ID != "" {
		l = l.With("machine_id", iv.Machine.ID)
	}
	return l
}

// newToken returns a random session token and its SHA-256.
func newToken() (string, []byte) {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	tok := base64.RawURLEncoding.EncodeToString(b)
	h := sha256.Sum256([]byte(tok))
	return tok, h[:]
}

// Start starts interview id of the scope's tenant: the first call moves it
// to provisioning and launches its machine; later and concurrent calls
// join the same provisioning. It waits up to wait for the interview to be
// ready and returns its current state either way. A terminal or ending
// interview is a conflict.
func (s *Service) Start(ctx context.Context, scope session.Scope, id string, wait time.Duration) (session.Interview, error) {
	var token string
	launched, warm := false, false
	var committed chan error // the start's outcome, for a launch begun before it
	// Watched from before the start's read: the interview it returns is
	// current, and any later change wakes the wait (no read of its own).
	var w *watch
	if wait > 0 {
		w = s.watch(id)
	}
	// With a per-tenant cap the start is serialised per tenant, counting
	// its live interviews; without one there is nothing to count, and the
	// start locks only its own interview, so a tenant's simultaneous
	// starts do not queue behind each other.
	iv, _, err := s.store.StartInterview(ctx, scope, id, s.cfg.TenantMaxConcurrent > 0, func(iv *session.Interview, otherLive int) ([]session.Event, error) {
		switch iv.Status {
		case session.StateScheduled:
			if max := s.cfg.TenantMaxConcurrent; max > 0 && otherLive >= max {
				return nil, session.Errorf(session.EQUOTA, "the tenant already has %d live interviews, its limit", otherLive)
			}
			ev, err := iv.Transition(session.StateProvisioning, "", session.ActorUser, s.now())
			if err != nil {
				return nil, err
			}
			// A pre-warmed machine (or a pre-warm create in flight) carries
			// the token already stored: the start only boots it. One made
			// for the interview's former region is replaced by the
			// launcher (destroyed, then a cold create with a new token).
			prewarmed := iv.PrewarmClaimedAt != nil || hasMachine(iv)
			warm = prewarmed && !iv.PrewarmStale()
			if warm {
				ev.Reason = session.EventWarmStart
			}
			if !prewarmed {
				token, iv.TokenHash = newToken()
				iv.PrewarmedAt = nil
				// A pre-warmed machine destroyed earlier (expired, or moved
				// out of its window) is history: the start records its own.
				iv.Machine = nil
			}
			launched = true
			return []session.Event{ev}, nil
		case session.StateProvisioning, session.StateReady, session.StateInProgress:
			return nil, nil
		default:
			return nil, session.Errorf(session.ECONFLICT, "interview is %s and cannot be started", iv.Status)
		}
	}, func(iv session.Interview, pos *session.PositionRecord) {
		if !launched {
			return
		}
		// The launch begins while the start's COMMIT is on its way: the
		// machine's create overlaps the commit's round trip. It records
		// nothing before it learns the outcome from committed, and
		// destroys the machine if the start did not commit; a crash in
		// between leaves a machine of a session that is not live, which
		// the reconciler destroys.
		committed = make(chan error, 1)
		started := s.now()
		s.goOwned(func(ctx context.Context) { s.launch(ctx, iv, token, started, nil, pos, committed) })
	})
	if committed != nil {
		committed <- err
	}
	if err != nil {
		return iv, err
	}
	if launched {
		s.metrics.started.Inc()
		path := "cold"
		if warm {
			path = "warm"
			s.PrewarmEnded(iv, PrewarmUsed)
		}
		s.metrics.starts.WithLabelValues(path).Inc()
		s.log(iv).Info("interview starting", "path", path)
	}
	if wait <= 0 {
		return iv, nil
	}
	return s.waitReady(ctx, scope, iv, w, wait)
}

// waitReady waits until the interview is connectable, leaves provisioning,
// wait passes or ctx ends, and returns its latest state. iv is current as
// of w's registration (the start's own read); it is read again only when
// woken: by this process's own change (the VM's ready report received here
// hands over the interview it wrote: no read) or by a change notification
// from another replica (Notified: read). The status changes it waits for
// always notify.
func (s *Service) waitReady(ctx context.Context, scope session.Scope, iv session.Interview, w *watch, wait time.Duration) (session.Interview, error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		if iv.Connectable() || (iv.Status != session.StateProvisioning && iv.Status != session.StateReady) {
			return iv, nil
		}
		select {
		case <-w.done:
			fresh := w.iv
			w = s.watch(iv.ID)
			cur, err := s.latest(ctx, scope, iv.ID, fresh)
			if err != nil {
				return iv, err
			}
			iv = cur
		case <-timer.C:
			return iv, nil // the caller asks again
		case <-ctx.Done():
			return iv, nil
		}
	}
}

// latest returns interview id: fresh when this process's change handed it
// over, else as read.
func (s *Service) latest(ctx context.Context, scope session.Scope, id string, fresh *session.Interview) (session.Interview, error) {
	if fresh != nil && (scope.System || fresh.TenantID == scope.TenantID) {
		return *fresh, nil
	}
	return s.store.Interview(ctx, scope, id)
}

// launch creates and starts the interview's machine and waits for it to
// run; the VM's ready report then completes provisioning.
//
// existing, when set, is a machine found for the session after a restart
// (adoption): it is not created again. pos, when set, is the interview's
// position as the start read it, for the VM's configuration (else read).
// committed, when set, delivers the outcome of the start's transaction,
// which was still in flight when the launch began: a cold create goes
// ahead meanwhile, anything else waits for it, and nothing is recorded
// (a created machine is destroyed) unless it committed.
func (s *Service) launch(ctx context.Context, iv session.Interview, token string, started time.Time,
	existing *session.Machine, pos *session.PositionRecord, committed <-chan error) {
	if !s.claim(iv.ID) {
		return // this process already launches it
	}
	defer s.release(iv.ID)
	startCommitted := func() bool {
		if committed == nil {
			return true
		}
		err := <-committed
		committed = nil
		return err == nil // the start reports its own failure
	}
	if existing != nil || iv.PrewarmClaimedAt != nil || hasMachine(&iv) {
		// Warm or adopted: nothing to do before the start committed.
		if !startCommitted() {
			return
		}
	}
	// queued: from the start request until this launch began (a start that
	// waits for Fly's rate limit waits inside Create: see flymachines'
	// ratelimit metrics).
	s.metrics.phase.WithLabelValues("queued").Observe(s.now().Sub(started).Seconds())
	log := s.log(iv)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ProvisionTimeout)
	defer cancel()
	spec := s.MachineSpec(iv, token)
	name := spec.Name
	var m session.Machine
	var err error
	if existing == nil && (iv.PrewarmClaimedAt != nil || hasMachine(&iv)) {
		// Warm: the pre-warmed machine, or the one its create in flight
		// is about to record; nil when the pre-warm was given up.
		var stale bool
		existing, stale = s.awaitPrewarmed(ctx, iv.ID)
		if existing != nil && stale {
			// Pre-warmed for the interview's former region: destroy it and
			// start cold in the new one.
			log.Info("the interview moved to another region after its pre-warm: replacing the machine",
				"machine_id", existing.ID, "machine_region", existing.Region, "region", iv.Region)
			if err := s.dropStalePrewarm(ctx, iv.ID, existing.ID); err != nil {
				if s.ctx.Err() != nil {
					return
				}
				log.Error("destroy the pre-warmed machine of the former region failed", "error", err)
				s.fail(iv.ID, session.ReasonProvisionFailed, err.Error())
				return
			}
			existing = nil
		}
		if existing == nil {
			if ctx.Err() != nil {
				return
			}
			if token, err = s.renewToken(ctx, iv.ID); err != nil {
				log.Warn("pre-warm gone and the start moved on", "error", err)
				return
			}
			spec = s.MachineSpec(iv, token)
			log.Info("pre-warm given up: starting cold")
		}
	}
	if existing == nil {
		s.withConfig(ctx, iv, pos, &spec)
	}
	if existing != nil {
		m = *existing // pre-warmed, or adopted: created earlier with the session's token
	} else if m, err = s.machines.Create(ctx, spec); err != nil {
		if s.ctx.Err() != nil {
			return // shutting down: the reconciler of the next leader adopts the session
		}
		if !startCommitted() {
			return
		}
		log.Error("create machine failed", "machine_name", name, "error", err)
		s.fail(iv.ID, session.ReasonProvisionFailed, fmt.Sprintf("create machine %s: %v", name, err))
		return
	}
	if !startCommitted() {
		// The start did not commit: its interview is not provisioning and
		// will not record this machine.
		log.Warn("start not committed: destroying the machine created meanwhile", "machine_id", m.ID)
		if err := s.machines.Destroy(s.ctx, m.ID); err != nil {
			log.Error("destroy machine of an uncommitted start failed", "machine_id", m.ID, "error", err)
		}
		return
	}
	s.metrics.phase.WithLabelValues("machine_created").Observe(s.now().Sub(started).Seconds())
	log = log.With("machine_id", m.ID)
	// Watched from before the machine is recorded: the interview that
	// records it is current, and any later change (the ready report)
	// wakes the wait below.
	w := s.watch(iv.ID)
	cur, ok := s.recordMachine(iv.ID, m)
	if !ok {
		return
	}
	// A provider that creates a machine running (the local one) reports
	// the same machine once it runs: nothing more to record.
	created := m
	mid := m.ID
	if m.State == session.MachineCreated || m.State == session.MachineStopped {
		// Created without booting (pre-warmed): boot it.
		if err := s.machines.Start(ctx, mid); err != nil {
			if s.ctx.Err() != nil {
				return
			}
			log.Error("start pre-warmed machine failed", "error", err)
			s.fail(iv.ID, session.ReasonProvisionFailed, fmt.Sprintf("start machine %s: %v", mid, err))
			return
		}
	}
	m, err = s.machines.WaitStarted(ctx, mid)
	if err != nil {
		if s.ctx.Err() != nil {
			return
		}
		// The VM may have reported ready while the wait failed: only a
		// session still provisioning has failed.
		if cur, gerr := s.store.Interview(s.ctx, session.SystemScope(), iv.ID); gerr == nil && cur.Status != session.StateProvisioning {
			log.Warn("wait for machine failed, but the interview moved on", "status", cur.Status, "error", err)
			return
		}
		log.Error("machine did not start", "error", err)
		s.fail(iv.ID, session.ReasonProvisionFailed, fmt.Sprintf("wait for machine %s: %v", mid, err))
		return
	}
	s.metrics.phase.WithLabelValues("machine_started").Observe(s.now().Sub(started).Seconds())
	if m != created && !onlyStarted(created, m) {
		// A change since the first record is in this one's result (a
		// machine that merely started is recorded so by the ready report).
		next := s.watch(iv.ID)
		if cur, ok = s.recordMachine(iv.ID, m); !ok {
			return
		}
		w = next
	}
	// The VM's ready report moves the interview on; give up if it never
	// comes. cur is the interview as last recorded (nil: read it).
	for {
		if cur == nil {
			next := s.watch(iv.ID)
			if got, err := s.store.Interview(ctx, session.SystemScope(), iv.ID); err == nil {
				cur = &got
				w = next
			}
		}
		if cur != nil && cur.Status != session.StateProvisioning {
			if cur.Connectable() {
				d := s.now().Sub(started).Seconds()
				s.metrics.phase.WithLabelValues("vm_ready").Observe(d)
				s.metrics.startLatency.Observe(d)
				log.Info("interview ready", "start_seconds", d)
			}
			return
		}
		select {
		case <-w.done:
			// This process's change hands over the interview; another
			// replica's is read.
			cur = w.iv
			w = s.watch(iv.ID)
		case <-time.After(s.readyPoll):
			cur = nil
		case <-ctx.Done():
			if s.ctx.Err() != nil {
				return // controller shutting down: another replica or a restart takes over
			}
			log.Error("session VM never reported ready", "timeout", s.cfg.ProvisionTimeout)
			s.fail(iv.ID, session.ReasonProvisionFailed, "session VM never reported ready")
			return
		}
	}
}

// onlyStarted reports whether the machine as it runs differs from the one
// recorded at its creation only by its state having become started. That
// needs no write of its own on the start's path: the VM's ready report
// records the machine as started with the interview's move to ready
// (Ready), in the same write.
func onlyStarted(created, running session.Machine) bool {
	if running.State != session.MachineStarted {
		return false
	}
	running.State = created.State
	return running == created
}

// markStarted records iv's machine as started: its VM reported ready, so
// it runs, whatever the provider said when it was recorded.
func markStarted(iv *session.Interview) {
	if m := iv.Machine; m != nil && m.ID != "" && m.State != session.MachineDestroyed {
		m.State = session.MachineStarted
	}
}

// recordMachine stores what the provider said about the machine and
// returns the interview as it now stands (nil when the store failed). When
// the interview has ended meanwhile the machine is destroyed and false
// returned.
func (s *Service) recordMachine(id string, m session.Machine) (*session.Interview, bool) {
	ctx := s.ctx
	iv, err := s.store.UpdateInterview(ctx, session.SystemScope(), id, func(iv *session.Interview) ([]session.Event, error) {
		m.SessionID = iv.ID
		if iv.Machine != nil && iv.Machine.State == session.MachineDestroyed {
			return nil, nil
		}
		iv.Machine = &m
		if iv.ReadyAt != nil {
			// The VM reported ready before its creation was recorded
			// (a slow store): it runs.
			markStarted(iv)
		}
		return nil, nil
	})
	// Those waiting on the interview wait for it to leave provisioning, or
	// to be connectable, which needs its machine: they have nothing to
	// see while it is still provisioning.
	if err != nil || iv.Status != session.StateProvisioning {
		s.changed(id)
	}
	if err != nil {
		s.logger.Error("record machine failed", "session_id", id, "machine_id", m.ID, "error", err)
		return nil, true
	}
	if !iv.Status.Live() {
		s.destroy(iv)
		return nil, false
	}
	return &iv, true
}

// fail moves a live interview to failed and destroys its machine.
func (s *Service) fail(id string, reason session.EndReason, detail string) {
	s.failAs(id, reason, session.ActorController, detail)
}

// failAs is fail on behalf of actor.
func (s *Service) failAs(id string, reason session.EndReason, actor, detail string) {
	iv, err := s.store.UpdateInterview(s.ctx, session.SystemScope(), id, func(iv *session.Interview) ([]session.Event, error) {
		if iv.Status.Terminal() {
			return nil, errNothingToDo
		}
		ev, err := iv.Transition(session.StateFailed, reason, actor, s.now())
		return []session.Event{ev}, err
	})
	if errors.Is(err, errNothingToDo) {
		return
	}
	s.changed(id)
	if err != nil {
		s.logger.Error("mark interview failed", "session_id", id, "error", err)
		return
	}
	s.metrics.ended.WithLabelValues(string(reason)).Inc()
	s.log(iv).Warn("interview failed", "reason", reason, "detail", detail)
	s.destroy(iv)
}

// destroy destroys the interview's machine in the background and records it.
func (s *Service) destroy(iv session.Interview) {
	if iv.Machine == nil || iv.Machine.ID == "" || iv.Machine.State == session.MachineDestroyed {
		return
	}
	mid := iv.Machine.ID
	log := s.log(iv)
	s.goOwned(func(ctx context.Context) {
		if err := s.machines.Destroy(ctx, mid); err != nil {
			log.Error("destroy machine failed", "error", err)
			return
		}
		_, err := s.store.UpdateInterview(ctx, session.SystemScope(), iv.ID, func(iv *session.Interview) ([]session.Event, error) {
			if iv.Machine != nil && iv.Machine.ID == mid {
				iv.Machine.State = session.MachineDestroyed
			}
			return nil, nil
		})
		if err != nil {
			log.Error("record destroyed machine", "error", err)
		}
		s.changed(iv.ID)
		log.Info("machine destroyed")
	})
}

// End asks a started interview to end gracefully: it becomes ending, and
// the VM learns it from its next heartbeat, flushes and reports ended.
// Ending an interview already ending changes nothing.
func (s *Service) End(ctx context.Context, scope session.Scope, id string) (session.Interview, error) {
	iv, err := s.store.UpdateInterview(ctx, scope, id, func(iv *session.Interview) ([]session.Event, error) {
		switch iv.Status {
		case session.StateEnding:
			return nil, nil
		case session.StateScheduled:
			return nil, session.Errorf(session.ECONFLICT, "interview has not started; cancel it instead")
		}
		ev, err := iv.Transition(session.StateEnding, session.ReasonEndedByUser, session.ActorUser, s.now())
		return []session.Event{ev}, err
	})
	s.changed(id)
	return iv, err
}

// Cancel cancels an interview in any non-terminal state and destroys its
// machine.
func (s *Service) Cancel(ctx context.Context, scope session.Scope, id string) (session.Interview, error) {
	iv, err := s.store.UpdateInterview(ctx, scope, id, func(iv *session.Interview) ([]session.Event, error) {
		ev, err := iv.Transition(session.StateCancelled, session.ReasonCancelled, session.ActorUser, s.now())
		return []session.Event{ev}, err
	})
	s.changed(id)
	if err != nil {
		return iv, err
	}
	s.metrics.ended.WithLabelValues(string(session.ReasonCancelled)).Inc()
	if iv.PrewarmedAt != nil && iv.StartedAt == nil {
		// Its pre-warmed machine goes unused. (A pre-warm still in flight
		// is counted by the pre-warmer, which destroys what it creates.)
		s.PrewarmEnded(iv, PrewarmCancelled)
	}
	s.destroy(iv)
	return iv, nil
}

// errNotLive is what a VM whose session is over hears: it must exit.
var errNotLive = session.Errorf(session.ECONFLICT, "session is no longer live")

// authenticate checks a VM's token for session id in constant time and
// that the session is live. A fenced session's token writes nothing.
func (s *Service) authenticate(iv *session.Interview, token string) error {
	h := sha256.Sum256([]byte(token))
	if len(iv.TokenHash) != sha256.Size || subtle.ConstantTimeCompare(h[:], iv.TokenHash) != 1 {
		return session.Errorf(session.EUNAUTHENTICATED, "invalid session token")
	}
	if !iv.Status.Live() {
		return errNotLive
	}
	return nil
}

// vmSession reads the VM's session and authenticates the VM, without a
// lock or a write: for calls that change nothing.
func (s *Service) vmSession(ctx context.Context, id, token string) (session.Interview, error) {
	iv, err := s.store.Interview(ctx, session.SystemScope(), id)
	if err == nil {
		err = s.authenticate(&iv, token)
	}
	return iv, hideUnknown(err)
}

// hideUnknown answers an unknown or malformed session id like a wrong
// token: never reveal whether a session exists to a caller without its
// token.
func hideUnknown(err error) error {
	if code := session.ErrorCode(err); code == session.ENOTFOUND || code == session.EINVALID {
		return session.Errorf(session.EUNAUTHENTICATED, "invalid session token")
	}
	return err
}

// vmUpdate authenticates the VM and applies fn to its session.
func (s *Service) vmUpdate(ctx context.Context, id, token string, fn func(iv *session.Interview) ([]session.Event, error)) (session.Interview, error) {
	iv, err := s.store.UpdateInterview(ctx, session.SystemScope(), id, func(iv *session.Interview) ([]session.Event, error) {
		if err := s.authenticate(iv, token); err != nil {
			return nil, err
		}
		return fn(iv)
	})
	return iv, hideUnknown(err)
}

// VMConfig answers a VM's request for its configuration (a VM whose
// machine was created without it: a pre-warmed one).
func (s *Service) VMConfig(ctx context.Context, id, token string) (session.VMConfig, error) {
	iv, err := s.vmSession(ctx, id, token)
	if err != nil {
		return session.VMConfig{}, err
	}
	return s.vmConfig(ctx, iv, nil)
}

// vmConfig is the configuration of iv's VM; pos is its position, read
// when nil.
func (s *Service) vmConfig(ctx context.Context, iv session.Interview, pos *session.PositionRecord) (session.VMConfig, error) {
	if pos == nil {
		p, err := s.store.Position(ctx, session.TenantScope(iv.TenantID), iv.PositionID)
		if err != nil {
			return session.VMConfig{}, fmt.Errorf("load position of session %s: %w", iv.ID, err)
		}
		pos = &p
	}
	started := s.now()
	if iv.StartedAt != nil {
		started = *iv.StartedAt
	}
	return session.VMConfig{
		SessionID: iv.ID, TenantID: iv.TenantID, Architecture: iv.Architecture, Realtime: s.cfg.Realtime,
		SyntheticTurnMS: s.cfg.SyntheticTurn.Milliseconds(),
		Deadline:        started.Add(iv.MaxDuration()), MaxDurationS: iv.MaxDurationS,
		HeartbeatIntervalMS: s.cfg.HeartbeatInterval.Milliseconds(), IdleTimeoutMS: s.cfg.IdleTimeout.Milliseconds(),
		Position:      session.Position{Title: pos.Title, Description: pos.Description, Competencies: pos.Competencies},
		RealtimeModel: s.cfg.RealtimeModel, RealtimeVoice: s.cfg.RealtimeVoice, TranscribeModel: s.cfg.TranscribeModel,
	}, nil
}

// readyTimeout bounds recording a ready report.
const readyTimeout = 10 * time.Second

// Ready records the VM's report that it serves its endpoints.
func (s *Service) Ready(ctx context.Context, id, token string, req session.ReadyRequest) error {
	// Not cancelled with the VM's request: the change's NOTIFY may wake
	// the start request, whose client may cancel the interview (and so
	// stop the VM, closing its request) before the COMMIT's answer is
	// read here; a committed report must not be answered as failed.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readyTimeout)
	defer cancel()
	iv, err := s.vmUpdate(ctx, id, token, func(iv *session.Interview) ([]session.Event, error) {
		now := s.now()
		iv.LastHeartbeatAt = &now
		if iv.Status != session.StateProvisioning {
			return nil, nil // a repeated report
		}
		ev, err := iv.Transition(session.StateReady, "", session.ActorVM, now)
		markStarted(iv)
		return []session.Event{ev}, err
	})
	if err != nil {
		s.changed(id)
		return err
	}
	s.changedTo(iv)
	s.log(iv).Info("session VM ready")
	return nil
}

// Heartbeat records a VM's heartbeat and tells it whether to go on.
func (s *Service) Heartbeat(ctx context.Context, id, token string, hb session.Heartbeat) (session.HeartbeatAnswer, error) {
	// Known session: from memory, written with the next batch (heartbeat.go).
	if e, ok := s.beats.record(id, token, s.now(), hb); ok {
		return heartbeatAnswer(e.status, e.endReason), nil
	}
	iv, err := s.vmUpdate(ctx, id, token, func(iv *session.Interview) ([]session.Event, error) {
		now := s.now()
		iv.LastHeartbeatAt = &now
		iv.VM = vmStats(hb)
		return nil, nil
	})
	if err != nil {
		return session.HeartbeatAnswer{}, err
	}
	s.beats.remember(iv)
	return heartbeatAnswer(iv.Status, iv.EndReason), nil
}

// Ended records the VM's last report. The interview is completed, and its
// machine destroyed, once every transcript segment up to last_seq is
// stored; until then it stays ending and late segments complete it.
func (s *Service) Ended(ctx context.Context, id, token string, req session.Ended) error {
	if !req.Reason.Valid() {
		return session.Errorf(session.EINVALID, "unknown end reason %q", req.Reason)
	}
	if req.LastSeq < 0 {
		return session.Errorf(session.EINVALID, "last_seq must not be negative")
	}
	if req.Failed {
		iv, err := s.vmUpdate(ctx, id, token, func(iv *session.Interview) ([]session.Event, error) {
			last := req.LastSeq
			iv.LastSeqReported = &last
			ev, err := iv.Transition(session.StateFailed, req.Reason, session.ActorVM, s.now())
			return []session.Event{ev}, err
		})
		s.changed(id)
		if err != nil {
			return err
		}
		s.metrics.ended.WithLabelValues(string(req.Reason)).Inc()
		s.log(iv).Error("session VM crashed", "reason", req.Reason, "last_seq", req.LastSeq)
		s.destroy(iv)
		return nil
	}
	iv, err := s.vmUpdate(ctx, id, token, func(iv *session.Interview) ([]session.Event, error) {
		now := s.now()
		var events []session.Event
		if iv.Status != session.StateEnding {
			ev, err := iv.Transition(session.StateEnding, req.Reason, session.ActorVM, now)
			if err != nil {
				return nil, err
			}
			events = append(events, ev)
		}
		last := req.LastSeq
		iv.LastSeqReported = &last
		more, err := s.completeIfDone(iv)
		return append(events, more...), err
	})
	s.changed(id)
	if err != nil {
		return err
	}
	if iv.Status != session.StateCompleted {
		s.log(iv).Warn("session VM ended with transcript segments missing; waiting for them",
			"last_seq", req.LastSeq, "acked_seq", iv.AckedSeq)
		return nil
	}
	s.completed(iv)
	return nil
}

// completeIfDone completes an ending interview whose transcript is complete.
func (s *Service) completeIfDone(iv *session.Interview) ([]session.Event, error) {
	if iv.Status != session.StateEnding || !iv.TranscriptComplete() {
		return nil, nil
	}
	ev, err := iv.Transition(session.StateCompleted, "", session.ActorVM, s.now())
	if err != nil {
		return nil, err
	}
	return []session.Event{ev}, nil
}

// completed accounts for a completed interview and destroys its machine.
func (s *Service) completed(iv session.Interview) {
	reason := session.ReasonCompleted
	if iv.EndReason != nil {
		reason = *iv.EndReason
	}
	s.metrics.ended.WithLabelValues(string(reason)).Inc()
	if iv.StartedAt != nil && iv.EndedAt != nil {
		s.metrics.duration.Observe(iv.EndedAt.Sub(*iv.StartedAt).Seconds())
	}
	last := int64(0)
	if iv.LastSeqReported != nil {
		last = *iv.LastSeqReported
	}
	s.log(iv).Info("interview completed", "end_reason", reason, "last_seq", last)
	s.destroy(iv)
}

// MaxSegmentsPerBatch bounds one transcript batch.
const MaxSegmentsPerBatch = 500

// MaxSegmentText bounds one segment's text, in characters.
const MaxSegmentText = 20000

// Transcript stores a batch of the VM's transcript segments and returns
// the highest seq up to which the stored transcript has no gap.
func (s *Service) Transcript(ctx context.Context, id, token string, batch session.TranscriptBatch) (int64, error) {
	if len(batch.Segments) == 0 || len(batch.Segments) > MaxSegmentsPerBatch {
		s.metrics.ingestErrors.WithLabelValues("invalid").Inc()
		return 0, session.Errorf(session.EINVALID, "a batch holds 1 to %d segments", MaxSegmentsPerBatch)
	}
	for i, seg := range batch.Segments {
		if err := validSegment(seg); err != nil {
			s.metrics.ingestErrors.WithLabelValues("invalid").Inc()
			return 0, session.Errorf(session.EINVALID, "segments[%d]: %s", i, session.ErrorMessage(err))
		}
	}
	var completedNow bool
	iv, err := s.store.AppendTranscript(ctx, id, batch.Segments,
		func(iv *session.Interview) error { return s.authenticate(iv, token) },
		func(iv *session.Interview) ([]session.Event, error) {
			events, err := s.completeIfDone(iv)
			completedNow = len(events) > 0
			return events, err
		})
	switch code := session.ErrorCode(err); {
	case err == nil:
	case code == session.ENOTFOUND || code == session.EUNAUTHENTICATED:
		s.metrics.ingestErrors.WithLabelValues("unauthenticated").Inc()
		return 0, session.Errorf(session.EUNAUTHENTICATED, "invalid session token")
	case code == session.ECONFLICT:
		s.metrics.ingestErrors.WithLabelValues("not_live").Inc()
		return 0, err
	default:
		s.metrics.ingestErrors.WithLabelValues("store").Inc()
		return 0, err
	}
	s.metrics.segments.Add(float64(len(batch.Segments)))
	s.metrics.batchSize.Observe(float64(len(batch.Segments)))
	if completedNow {
		s.changed(id)
		s.completed(iv)
	}
	return iv.AckedSeq, nil
}

func validSegment(seg session.Segment) error {
	if seg.Seq < 1 {
		return session.Errorf(session.EINVALID, "seq must be at least 1")
	}
	if seg.Speaker != session.SpeakerCandidate && seg.Speaker != session.SpeakerInterviewer {
		return session.Errorf(session.EINVALID, "speaker must be candidate or interviewer")
	}
	if utf8.RuneCountInString(seg.Text) > MaxSegmentText {
		return session.Errorf(session.EINVALID, "text is longer than %d characters", MaxSegmentText)
	}
	if !utf8.ValidString(seg.Text) || strings.ContainsRune(seg.Text, 0) {
		return session.Errorf(session.EINVALID, "text must be valid UTF-8 without NUL")
	}
	if len(seg.ItemID) > 200 || strings.ContainsRune(seg.ItemID, 0) {
		return session.Errorf(session.EINVALID, "item_id must be at most 200 bytes")
	}
	return nil
}

// Connected records that a browser's SDP offer was answered: a ready
// interview becomes in_progress.
func (s *Service) Connected(ctx context.Context, scope session.Scope, id string) error {
	first := false
	iv, err := s.store.UpdateInterview(ctx, scope, id, func(iv *session.Interview) ([]session.Event, error) {
		if iv.Status != session.StateReady {
			return nil, nil
		}
		first = true
		ev, err := iv.Transition(session.StateInProgress, "", session.ActorUser, s.now())
		return []session.Event{ev}, err
	})
	s.changed(id)
	if err == nil && first && iv.StartedAt != nil {
		// The start as the candidate perceives it: until the first answer.
		s.metrics.phase.WithLabelValues("first_sdp").Observe(s.now().Sub(*iv.StartedAt).Seconds())
	}
	return err
}

// IsNotLive reports whether err says the session is over.
func IsNotLive(err error) bool { return errors.Is(err, errNotLive) }

// Retire makes an interview safe to erase: a live one is cancelled, and
// its machine, if it may still exist, is destroyed now rather than in the
// background, so nothing of the interview outlives its erasure. A machine
// already gone counts as destroyed.
func (s *Service) Retire(ctx context.Context, scope session.Scope, id string) error {
	iv, err := s.store.Interview(ctx, scope, id)
	if err != nil {
		return err
	}
	if iv.Status.Live() {
		cancelled := false
		iv, err = s.store.UpdateInterview(ctx, scope, id, func(iv *session.Interview) ([]session.Event, error) {
			if !iv.Status.Live() {
				return nil, nil
			}
			cancelled = true
			ev, err := iv.Transition(session.StateCancelled, session.ReasonCancelled, session.ActorUser, s.now())
			return []session.Event{ev}, err
		})
		s.changed(id)
		if err != nil {
			return err
		}
		if cancelled {
			s.metrics.ended.WithLabelValues(string(session.ReasonCancelled)).Inc()
		}
	}
	if iv.Machine == nil || iv.Machine.ID == "" || iv.Machine.State == session.MachineDestroyed {
		return nil
	}
	if iv.PrewarmedAt != nil && iv.StartedAt == nil && iv.Status != session.StateCancelled {
		s.PrewarmEnded(iv, PrewarmCancelled) // erased before its start
	}
	if err := s.machines.Destroy(ctx, iv.Machine.ID); err != nil && !errors.Is(err, session.ErrMachineNotFound) {
		s.log(iv).Error("destroy machine before erasure failed", "error", err)
		return session.Errorf(session.EUNAVAILABLE, "could not destroy the interview's machine: try again")
	}
	s.log(iv).Info("machine destroyed before erasure", "machine_id", iv.Machine.ID)
	return nil
}
