package main

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
	"github.com/interviewvm/controlplane/pkg/session"
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
	// retryWaitMin and retryWaitMax bound the waits between the rounds of
	// calls that must eventually succeed (config, ready, ended); each
	// round is itself a client call with retries.
	retryWaitMin = 500 * time.Millisecond
	retryWaitMax = 5 * time.Second
)

// run is sessionvm: it reads its settings from getenv, logs JSON lines to
// stderr, and returns when the interview has ended (nil) or the VM cannot
// go on (the error, which it has logged). Cancelling ctx (SIGTERM, SIGINT)
// ends the interview with reason ended_by_user.
func run(ctx context.Context, getenv func(string) string, stderr io.Writer) (err error) {
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
		sessionID: set.sessionID,
		machineID: set.machineID,
		ends:      make(chan endCause, 1),
	}
	log.Info("sessionvm starting", "addr", ln.Addr().String(), "controller", redact(set.controllerURL), "machine_id", set.machineID)
	return v.run(ctx, ln)
}

// vm is one session VM's state.
type vm struct {
	log       *slog.Logger
	client    *controlclient.Client
	sessionID string
	machineID string
	cfg       session.VMConfig // set once fetched, then read-only
	// ends receives the first request to end the interview; later ones
	// are dropped. Capacity 1.
	ends chan endCause
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
// request wins. Components (heartbeats now; the realtime broker later: call
// hung up, idle timeout) call it.
func (v *vm) requestEnd(c endCause) {
	select {
	case v.ends <- c:
	default:
	}
}

// run fetches the config, serves HTTP on ln, reports ready and heartbeats
// until the interview ends, then reports ended and shuts down.
func (v *vm) run(ctx context.Context, ln net.Listener) error {
	cfg, err := v.fetchConfig(ctx)
	if err != nil {
		ln.Close()
		if ctx.Err() != nil {
			v.log.Info("terminated before the configuration arrived")
			return nil
		}
		return err
	}
	v.cfg = cfg
	v.log.Info("configured", "realtime", cfg.Realtime, "deadline", cfg.Deadline,
		"heartbeat_interval", cfg.HeartbeatInterval().String())

	srv := &http.Server{
		Handler:           v.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(v.log.Handler(), slog.LevelWarn),
	}
	var serveErr error
	served := make(chan struct{})
	go func() { // owned: ends with Shutdown below
		defer close(served)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			serveErr = err
		}
	}()

	loopCtx, stopLoop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { v.report(loopCtx) })

	var deadline <-chan time.Time
	if !cfg.Deadline.IsZero() {
		t := time.NewTimer(time.Until(cfg.Deadline))
		defer t.Stop()
		deadline = t.C
	}
	var cause endCause
	select {
	case <-ctx.Done():
		cause = endCause{why: "terminated", reason: session.ReasonEndedByUser, report: true}
	case <-deadline:
		cause = endCause{why: "deadline passed", reason: session.ReasonMaxDuration, report: true}
	case cause = <-v.ends:
	case <-served:
		cause = endCause{why: "http server stopped", err: fmt.Errorf("serve http: %w", serveErr)}
	}
	stopLoop()
	wg.Wait()

	v.log.Info("ending", "why", cause.why, "reason", cause.reason, "report", cause.report)
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
		ans, err := v.client.Heartbeat(hctx, session.Heartbeat{})
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

// refused is the end cause of a call the controller refused for good: a
// session that is no longer live exits cleanly without reporting (the
// controller already knows); anything else is an error.
func refused(err error) endCause {
	if errors.Is(err, controlclient.ErrNotLive) {
		return endCause{why: "session is no longer live"}
	}
	return endCause{why: "controller refused the VM", err: err}
}

// reportEnded tells the controller the interview ended, retrying for at
// most endedTimeout even when ctx is already cancelled.
func (v *vm) reportEnded(ctx context.Context, reason session.EndReason) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endedTimeout)
	defer cancel()
	err := v.retryUntil(ctx, "report ended", func(ctx context.Context) error {
		// LastSeq stays 0 until the broker produces a transcript.
		return v.client.Ended(ctx, session.Ended{Reason: reason, LastSeq: 0})
	})
	switch {
	case err == nil:
		v.log.Info("reported ended", "reason", reason)
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

// routes returns the VM's HTTP handler. The realtime broker's routes
// (/session/sdp, /session/token) will be registered here.
func (v *vm) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", v.handleHealthz)
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
