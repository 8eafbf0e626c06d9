package sessionvm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/interviewvm/controlplane/pkg/controlclient"
	"github.com/interviewvm/controlplane/pkg/realtime"
	"github.com/interviewvm/controlplane/pkg/session"
	"github.com/interviewvm/controlplane/pkg/transcript"
)

// Timing of the VM.
const (
	// defaultHeartbeatInterval applies when the config gives none.
	defaultHeartbeatInterval = 5 * time.Second
	// minHeartbeatTimeout bounds one heartbeat call (with its retries)
	// from below; above it, a call may take two intervals.
	minHeartbeatTimeout = 5 * time.Second
	// endedTimeout bounds reporting ended, retries included.
	endedTimeout = 10 * time.Second
	// shutdownTimeout bounds the HTTP server's graceful shutdown.
	shutdownTimeout = 5 * time.Second
	// hangupTimeout bounds hanging the call up at the end.
	hangupTimeout = 5 * time.Second
	// flushTimeout bounds delivering the rest of the transcript at the
	// end, retries included.
	flushTimeout = 10 * time.Second
	// retryWaitMin and retryWaitMax bound the waits between the rounds of
	// calls that must eventually succeed (config, ready, ended); each
	// round is itself a client call with retries.
	retryWaitMin = 500 * time.Millisecond
	retryWaitMax = 5 * time.Second
)

// Run is sessionvm: it reads its settings from getenv, logs JSON lines to
// stderr, and returns when the interview has ended (nil) or the VM cannot
// go on (the error, which it has logged). Cancelling ctx (SIGTERM, SIGINT)
// ends the interview with reason ended_by_user.
func Run(ctx context.Context, getenv func(string) string, stderr io.Writer) (err error) {
	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("session_id", getenv(session.EnvSessionID))
	defer func() {
		if err != nil {
			log.Error("sessionvm failed", "error", err)
		}
	}()
	set, err := readSettings(getenv)
	if err != nil {
		return fmt.Errorf("read environment: %w", err)
	}
	ln, err := set.listen()
	if err != nil {
		return err
	}
	client := controlclient.New(controlclient.Config{
		BaseURL:   set.controllerURL,
		SessionID: set.sessionID,
		Token:     set.token,
		Logger:    log,
	})
	defer client.CloseIdleConnections()
	v := &vm{
		log:       log,
		client:    client,
		set:       set,
		sessionID: set.sessionID,
		machineID: set.machineID,
		ends:      make(chan endCause, 1),
		started:   make(chan struct{}),
		asm:       transcript.NewAssembler(transcript.AssemblerConfig{Logger: log}),
		box: transcript.NewOutbox(transcript.OutboxConfig{
			Poster:    client,
			Logger:    log.With("component", "transcript"),
			Permanent: controlclient.IsPermanent,
		}),
	}
	log.Info("sessionvm starting", "addr", ln.Addr().String(), "controller", redact(set.controllerURL), "machine_id", set.machineID)
	return v.run(ctx, ln)
}

// vm is one session VM's state.
type vm struct {
	log       *slog.Logger
	client    *controlclient.Client
	set       settings
	sessionID string
	machineID string
	cfg       session.VMConfig // set once known, then read-only
	// ends receives the first request to end the interview; later ones
	// are dropped. Capacity 1.
	ends chan endCause
	// started is closed when the first call begins.
	started     chan struct{}
	startedOnce sync.Once

	asm *transcript.Assembler
	box *transcript.Outbox
	brk broker // set once configured
	// exit ends the process after a crash report (os.Exit; tests replace it).
	exit func(code int)
}

// endCause is why the VM ends and what it does about it.
type endCause struct {
	// why is logged.
	why string
	// reason is reported to the controller when report is set.
	reason session.EndReason
	report bool
	// err, when set, makes sessionvm exit non-zero.
	err error
}

// requestEnd asks the VM to end the interview. It never blocks; the first
// request wins. Heartbeats, the broker (call over), the transcript outbox
// (controller refuses, buffer full) and the VM's timers call it.
func (v *vm) requestEnd(c endCause) {
	select {
	case v.ends <- c:
	default:
	}
}

// run takes the config (given with the machine, or fetched), serves HTTP
// on ln, reports ready and heartbeats until the interview ends; then it
// hangs the call up, delivers the rest of the transcript, reports ended
// with the last seq and shuts down.
func (v *vm) run(ctx context.Context, ln net.Listener) error {
	defer v.recoverCrash()
	cfg, err := v.config(ctx)
	if err != nil {
		ln.Close()
		if ctx.Err() != nil {
			v.log.Info("terminated before the configuration arrived")
			return nil
		}
		return err
	}
	v.cfg = cfg
	if v.brk, err = v.newBroker(cfg); err != nil {
		ln.Close()
		return err
	}
	v.log.Info("configured", "realtime", cfg.Realtime, "deadline", cfg.Deadline,
		"heartbeat_interval", cfg.HeartbeatInterval().String(), "idle_timeout", cfg.IdleTimeout().String())

	srv := &http.Server{
		Handler:           v.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(v.log.Handler(), slog.LevelWarn),
	}
	var serveErr error
	served := make(chan struct{})
	go func() { // owned: ends with Shutdown below
		defer v.recoverCrash()
		defer close(served)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			serveErr = err
		}
	}()

	// The outbox outlives the heartbeats: it delivers until the flush.
	boxCtx, stopBox := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBox()
	var boxWG sync.WaitGroup
	boxWG.Go(func() {
		if err := v.box.Run(boxCtx); err != nil {
			v.requestEnd(refused(err))
		}
	})

	loopCtx, stopLoop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer v.recoverCrash()
		v.report(loopCtx)
	})

	cause := v.await(ctx, served, &serveErr)
	stopLoop()
	wg.Wait()

	v.log.Info("ending", "why", cause.why, "reason", cause.reason, "report", cause.report)
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), hangupTimeout)
	v.brk.close(hctx)
	cancel()
	v.enqueue(v.asm.Flush())
	if cause.report {
		v.flush(ctx)
	}
	stopBox()
	boxWG.Wait()
	if cause.report {
		v.reportEnded(ctx, cause.reason)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		v.log.Warn("http shutdown", "error", err)
		srv.Close()
	}
	<-served
	if cause.err != nil {
		return cause.err
	}
	v.log.Info("exiting")
	return nil
}

// await waits for the first reason to end: termination, the deadline, the
// idle timeout (no call before it), a component's request, or the HTTP
// server failing.
func (v *vm) await(ctx context.Context, served <-chan struct{}, serveErr *error) endCause {
	var deadline <-chan time.Time
	if !v.cfg.Deadline.IsZero() {
		t := time.NewTimer(time.Until(v.cfg.Deadline))
		defer t.Stop()
		deadline = t.C
	}
	var idle <-chan time.Time
	if d := v.cfg.IdleTimeout(); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		idle = t.C
	}
	started := v.started
	for {
		select {
		case <-ctx.Done():
			return endCause{why: "terminated", reason: session.ReasonEndedByUser, report: true}
		case <-deadline:
			return endCause{why: "deadline passed", reason: session.ReasonMaxDuration, report: true}
		case <-idle:
			return endCause{why: "no call within the idle timeout", reason: session.ReasonIdleTimeout, report: true}
		case <-started:
			idle, started = nil, nil
		case cause := <-v.ends:
			return cause
		case <-served:
			return endCause{why: "http server stopped", err: fmt.Errorf("serve http: %w", *serveErr)}
		}
	}
}

// newBroker returns the broker of the configured realtime mode.
func (v *vm) newBroker(cfg session.VMConfig) (broker, error) {
	hooks := brokerHooks{
		log:     v.log.With("component", "broker"),
		event:   v.onEvent,
		pending: v.asm.Pending,
		placed:  v.asm.Placed,
		end:     v.requestEnd,
		started: func() { v.startedOnce.Do(func() { close(v.started) }) },
		crash:   v.recoverCrash,
	}
	switch cfg.Realtime {
	case session.RealtimeSimulated, "":
		return newSimulatedBroker(hooks, cfg.Position), nil
	case session.RealtimeSynthetic:
		return newSyntheticBroker(hooks, cfg.Position, time.Duration(cfg.SyntheticTurnMS)*time.Millisecond), nil
	case session.RealtimeOpenAI:
		if v.set.openAIKey == "" {
			return nil, fmt.Errorf("realtime mode %s: %s is not set", cfg.Realtime, envOpenAIKey)
		}
		client := realtime.New(realtime.Config{
			BaseURL: v.set.openAIBaseURL,
			APIKey:  v.set.openAIKey,
			Logger:  v.log.With("component", "realtime"),
		})
		maxDur := time.Duration(cfg.MaxDurationS) * time.Second
		voice := realtime.Voice{Model: cfg.RealtimeModel, Voice: cfg.RealtimeVoice, TranscriptionModel: cfg.TranscribeModel}
		return newOpenAIBroker(hooks, client, sessionConfig(cfg.Position, maxDur, voice)), nil
	}
	return nil, fmt.Errorf("unknown realtime mode %q: want %s, %s or %s", cfg.Realtime,
		session.RealtimeSimulated, session.RealtimeOpenAI, session.RealtimeSynthetic)
}

// onEvent feeds one server event of the call to the transcript.
func (v *vm) onEvent(ev realtime.Event) {
	v.enqueue(v.asm.Apply(ev))
}

// enqueue hands released segments to the outbox. A full outbox ends the
// interview: the controller has not taken the transcript for too long, and
// going on would only pile up lines it may never get.
func (v *vm) enqueue(segs []session.Segment) {
	if len(segs) == 0 {
		return
	}
	if err := v.box.Add(segs...); errors.Is(err, transcript.ErrFull) {
		v.log.Error("transcript buffer full; ending the interview", "buffered", v.box.Stats().Buffered)
		v.requestEnd(endCause{why: "transcript buffer full", reason: session.ReasonCompleted, report: true})
	}
}

// flush delivers what is left of the transcript within flushTimeout.
func (v *vm) flush(ctx context.Context) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	if err := v.box.Flush(fctx); err != nil {
		st := v.box.Stats()
		v.log.Error("transcript not fully delivered", "error", err, "last_seq", st.LastSeq, "acked_seq", st.AckedSeq)
		return
	}
	v.log.Info("transcript delivered", "last_seq", v.asm.LastSeq())
}

// config returns the VM's config: the one given with the machine, else
// the controller's (a pre-warmed machine is created before its interview
// starts, so its config may change until then).
func (v *vm) config(ctx context.Context) (session.VMConfig, error) {
	if v.set.config != nil {
		return *v.set.config, nil
	}
	return v.fetchConfig(ctx)
}

// fetchConfig gets the VM's config, retrying until it works, the context
// ends, or the controller refuses for good (401, 409, other 4xx).
func (v *vm) fetchConfig(ctx context.Context) (session.VMConfig, error) {
	var cfg session.VMConfig
	err := v.retryUntil(ctx, "fetch config", func(ctx context.Context) error {
		var err error
		cfg, err = v.client.Config(ctx)
		return err
	})
	return cfg, err
}

// report sends ready, then heartbeats every interval until ctx ends or an
// answer ends the interview.
func (v *vm) report(ctx context.Context) {
	err := v.retryUntil(ctx, "report ready", func(ctx context.Context) error {
		return v.client.Ready(ctx, session.ReadyRequest{MachineID: v.machineID})
	})
	if err != nil {
		if ctx.Err() == nil {
			v.requestEnd(refused(err))
		}
		return
	}
	v.log.Info("reported ready")

	interval := v.cfg.HeartbeatInterval()
	if interval <= 0 {
		interval = defaultHeartbeatInterval
	}
	timeout := max(2*interval, minHeartbeatTimeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		hctx, cancel := context.WithTimeout(ctx, timeout)
		ans, err := v.client.Heartbeat(hctx, v.heartbeat())
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, controlclient.ErrNotLive), errors.Is(err, controlclient.ErrUnauthorized):
			v.requestEnd(refused(err))
			return
		case err != nil:
			// The controller's heartbeat timeout is the safety net; keep
			// trying.
			v.log.Warn("heartbeat failed", "error", err)
		case ans.Action == session.ActionEnd:
			reason := ans.Reason
			if !reason.Valid() {
				if reason != "" {
					v.log.Warn("heartbeat answer has an unknown end reason", "reason", reason)
				}
				reason = session.ReasonEndedByUser
			}
			v.requestEnd(endCause{why: "controller answered end", reason: reason, report: true})
			return
		case ans.Action != session.ActionContinue:
			v.log.Warn("heartbeat answer has an unknown action; continuing", "action", ans.Action)
		}
	}
}

// heartbeat is the VM's current report.
func (v *vm) heartbeat() session.Heartbeat {
	st := v.box.Stats()
	return session.Heartbeat{
		LastSeq:          v.asm.LastSeq(),
		AckedSeq:         st.AckedSeq,
		BufferedSegments: st.Buffered,
		Retries:          st.Retries,
		Sideband:         v.brk.state(),
	}
}

// refused is the end cause of a call the controller refused for good: a
// session that is no longer live exits cleanly without reporting (the
// controller already knows); anything else is an error.
func refused(err error) endCause {
	if errors.Is(err, controlclient.ErrNotLive) {
		return endCause{why: "session is no longer live"}
	}
	return endCause{why: "controller refused the VM", err: err}
}

// reportEnded tells the controller the interview ended and the last seq
// assigned, retrying for at most endedTimeout even when ctx is already
// cancelled.
func (v *vm) reportEnded(ctx context.Context, reason session.EndReason) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endedTimeout)
	defer cancel()
	last := v.asm.LastSeq()
	err := v.retryUntil(ctx, "report ended", func(ctx context.Context) error {
		return v.client.Ended(ctx, session.Ended{Reason: reason, LastSeq: last})
	})
	switch {
	case err == nil:
		v.log.Info("reported ended", "reason", reason, "last_seq", last)
	case errors.Is(err, controlclient.ErrNotLive):
		// Typically the controller is destroying the VM after an end it
		// initiated: the session is already past ending.
		v.log.Info("controller no longer takes ended: session already over", "reason", reason)
	default:
		v.log.Error("report ended failed", "reason", reason, "error", err)
	}
}

// retryUntil calls f until it succeeds, fails permanently, or ctx ends,
// waiting between rounds with exponential backoff.
func (v *vm) retryUntil(ctx context.Context, what string, f func(context.Context) error) error {
	wait := retryWaitMin
	for {
		err := f(ctx)
		if err == nil || controlclient.IsPermanent(err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		v.log.Warn(what+" failed; retrying", "error", err, "wait", wait.String())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w (last error: %w)", what, ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, retryWaitMax)
	}
}

// routes returns the VM's HTTP handler. The controller reverse-proxies
// /v1/interviews/{id}/session/<x> here as /session/<x>, having
// authenticated the browser.
func (v *vm) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", v.handleHealthz)
	mux.HandleFunc("POST /session/sdp", v.handleSDP)
	mux.HandleFunc("POST /session/token", v.handleToken)
	mux.HandleFunc("POST /session/call", v.handleCall)
	return mux
}

// handleHealthz handles "GET /healthz": the process is up.
func (v *vm) handleHealthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"status": "ok", "session_id": v.sessionID})
}

// redact strips userinfo from a URL for logging.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	u.User = nil
	return u.String()
}
