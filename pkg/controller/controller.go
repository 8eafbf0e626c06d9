// Package controller assembles the interview control plane from its
// packages: the database (pkg/postgres), the machine provider (pkg/localvm
// or pkg/flyvm over pkg/flymachines), the lifecycle and reconciler
// (pkg/provision), the live feed (pkg/livefeed) and the HTTP API
// (pkg/controlapi). It owns the controller's configuration (every setting
// as an environment variable and a flag), the serve and migrate commands,
// and the operator CLI (sessions, machines, token). cmd/controller, the
// benchmarks and the end-to-end tests all start the controller through it
// (docs/architecture.md, "Packages"). Nothing under pkg/ imports it.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/interviewvm/controlplane/pkg/controlapi"
	"github.com/interviewvm/controlplane/pkg/livefeed"
	"github.com/interviewvm/controlplane/pkg/postgres"
	"github.com/interviewvm/controlplane/pkg/prewarm"
	"github.com/interviewvm/controlplane/pkg/provision"
)

// Serve runs the controller until ctx ends: it opens the database (and
// migrates it when MIGRATE_ON_START is set), builds the machine provider,
// the lifecycle service, the reconciler (run while this replica holds the
// leader lock), the live feed and the API, and serves HTTP on
// cfg.ListenAddr, plus /metrics on cfg.MetricsAddr and the session VMs'
// internal API on cfg.InternalAddr when those are set (the API's listener
// then answers them 404). ready, when not nil, receives the API's address
// once every listener listens. On return every goroutine it started has
// stopped. cfg must have passed Validate.
func Serve(ctx context.Context, cfg Config, logger *slog.Logger, ready chan<- string) error {
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every family of ours is namespaced interview_ (the Go and process
	// collectors keep their standard names): a shared Prometheus, like
	// Fly's per-organisation one, tells them from other apps' metrics.
	reg := prometheus.WrapRegistererWithPrefix(metricPrefix, registry)

	db, err := postgres.Open(ctx, cfg.DatabaseURL, logger.With("component", "postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	reg.MustRegister(db.Collector(), db.FleetCollector())
	if cfg.MigrateOnStart {
		if err := migrate(ctx, db, logger.With("component", "migrate")); err != nil {
			return err
		}
	}

	// Durable jobs: features with jobs add their workers and queues to q
	// before open, and enqueue through jc in transition hooks. This comes
	// before anything that changes interviews runs, so every hook is in
	// place for the first change.
	q := newJobQueue()
	q.rescueAfter = cfg.JobRescueAfter
	hooks, err := addWebhooks(cfg, db, q, logger.With("component", "webhooks"), reg)
	if err != nil {
		return err
	}
	defer hooks.close()
	ins, err := addInsights(cfg, db, q, logger.With("component", "insights"), reg)
	if err != nil {
		return err
	}
	jc, err := q.open(db, logger.With("component", "jobs"), reg)
	if err != nil {
		return err
	}
	hooks.attach(jc)
	ins.setQueue(jc)
	if len(q.queues) > 0 {
		if err := jc.Start(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("start job queue: %w", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
			defer cancel()
			if err := jc.Stop(sctx); err != nil {
				// Jobs still running past the grace period are cancelled:
				// they return (an analysis snoozes) and any replica runs
				// them again, rather than waiting for River's rescuer.
				logger.Warn("stop job queue: cancelling the jobs still running", "error", err)
				cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := jc.StopAndCancel(cctx); err != nil {
					logger.Warn("stop job queue", "error", err)
				}
			}
		}()
	}

	lns, err := listen(cfg)
	if err != nil {
		return err
	}
	defer lns.close()
	internalURL := cfg.InternalURL
	if internalURL == "" {
		internalURL = lns.internalURL()
	}

	machines, closeMachines, err := newMachines(cfg, logger, reg)
	if err != nil {
		return err
	}
	defer func() {
		if err := closeMachines(); err != nil {
			logger.Error("stop machine provider", "error", err)
		}
	}()

	lifecycle := provision.New(provision.Config{
		Provider: cfg.Provider, ControllerURL: internalURL, Realtime: cfg.Realtime, Region: cfg.FlyRegion,
		SyntheticTurn: cfg.SyntheticTurn, RealtimeModel: cfg.RealtimeModel, RealtimeVoice: cfg.RealtimeVoice,
		TranscribeModel:   cfg.TranscribeModel,
		HeartbeatInterval: cfg.HeartbeatInterval, IdleTimeout: cfg.IdleTimeout,
		// A live VM's stored heartbeat stays within a quarter of the
		// timeout (plus an interval and a few flushes) of its latest.
		HeartbeatPersist:    heartbeatPersist(cfg),
		TenantMaxConcurrent: cfg.TenantMaxConcurrent, ProvisionTimeout: cfg.ProvisionTimeout,
	}, db, machines, logger.With("component", "provision"), reg)
	defer lifecycle.Close()

	// The leader among replicas reconciles: no machine outlives its
	// session, no live session outlives its machine.
	reconciler := provision.NewReconciler(provision.ReconcileConfig{
		Interval: cfg.ReconcileInterval, HeartbeatTimeout: cfg.HeartbeatTimeout,
		AdoptAfter: cfg.AdoptAfter, DeadlineGrace: cfg.DeadlineGrace,
	}, lifecycle, db, machines, logger.With("component", "reconciler"), reg)
	// The leader also pre-warms the machines of scheduled interviews.
	prewarmer := prewarm.New(prewarm.Config{
		Lead: cfg.PrewarmLead, TTL: cfg.PrewarmTTL, Interval: prewarmInterval(cfg),
		CreateTimeout: cfg.ProvisionTimeout,
	}, db, machines, lifecycle, logger.With("component", "prewarm"), reg)
	leadCtx, stopLeading := context.WithCancel(context.WithoutCancel(ctx))
	leading := make(chan struct{})
	go func() {
		defer close(leading)
		db.Lead(leadCtx, postgres.LeaderLockID, time.Second, reconciler.SetLeader, func(ctx context.Context) {
			done := make(chan struct{})
			go func() {
				defer close(done)
				prewarmer.Run(ctx)
			}()
			reconciler.Run(ctx)
			<-done
		})
	}()
	defer func() { stopLeading(); <-leading }()

	// Interview changes on any replica reach this one's live streams and
	// its waiting start requests through PostgreSQL LISTEN/NOTIFY; segments
	// ingested here reach this replica's streams from memory.
	feed := livefeed.New(db, 0, logger.With("component", "livefeed"), reg)
	defer feed.Close()
	db.OnAppended(feed.Appended)
	listenCtx, stopListen := context.WithCancel(context.WithoutCancel(ctx))
	listening := make(chan struct{})
	go func() {
		defer close(listening)
		db.Listen(listenCtx, func(id string, upTo int64) {
			feed.Publish(id, upTo)
			if upTo == 0 { // a transcript alone (upTo > 0) wakes no start
				lifecycle.Notified(id)
			}
		})
	}()
	defer func() { stopListen(); <-listening }()

	api, err := controlapi.New(controlapi.Config{
		Auth: controlapi.AuthConfig{
			Secret: cfg.JWTSecret, JWKSURL: cfg.JWKSURL, Audience: cfg.JWTAudience, AccessSecret: cfg.AccessTokenSecret,
		},
		MaxDuration: cfg.MaxDuration, Regions: cfg.regions(),
		StreamKeepAlive: cfg.StreamKeepAlive, RateLimit: cfg.RateLimit, RateBurst: cfg.RateBurst,
		BehindFlyProxy: cfg.BehindFlyProxy, FlyReplayApp: cfg.FlyReplayApp,
		Demo: demoPage(cfg), CORSOrigins: controlapi.ParseOrigins(cfg.CORSOrigins),
		Insights:        ins,
		SeparateMetrics: lns.metrics != nil, SeparateInternal: lns.internal != nil,
		Webhooks: hooks,
	}, db, lifecycle, db, feed, logger.With("component", "api"), reg, registry)
	if err != nil {
		return err
	}
	defer api.Close()
	servers := lns.servers(api, slog.NewLogLogger(logger.Handler(), slog.LevelWarn))
	errc := make(chan error, len(servers))
	for _, srv := range servers {
		go func() { errc <- srv.serve() }()
	}
	logger.Info("controller listening", lns.logAttrs("internal_url", internalURL, "provider", cfg.Provider, "realtime", cfg.Realtime)...)
	if ready != nil {
		ready <- lns.public.Addr().String()
	}

	var serveErr error
	select {
	case serveErr = <-errc:
		serveErr = fmt.Errorf("serve http: %w", serveErr)
	case <-ctx.Done():
	}
	logger.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	api.CloseStreams() // live streams end now; clients resume elsewhere with Last-Event-ID
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(sctx); err != nil {
			logger.Warn("http shutdown", "listener", srv.name, "error", err)
		}
	}
	// Every server has returned once Shutdown did; collect their errors
	// (the one already read above excepted).
	n := len(servers)
	if serveErr != nil {
		n--
	}
	for range n {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) && serveErr == nil {
			serveErr = fmt.Errorf("serve http: %w", err)
		}
	}
	return serveErr
}

// prewarmInterval is the period of pre-warm passes: the reconciler's, but
// at least a few passes per lead window.
func prewarmInterval(cfg Config) time.Duration {
	iv := cfg.ReconcileInterval
	if cfg.PrewarmLead > 0 && iv > cfg.PrewarmLead/4 {
		iv = max(cfg.PrewarmLead/4, 100*time.Millisecond)
	}
	return iv
}

// heartbeatPersist is HEARTBEAT_PERSIST, by default a quarter of
// HEARTBEAT_TIMEOUT: a live VM's stored heartbeat then stays within that
// (plus an interval and a few flushes) of its latest, far from the timeout.
func heartbeatPersist(cfg Config) time.Duration {
	if cfg.HeartbeatPersist > 0 {
		return cfg.HeartbeatPersist
	}
	return cfg.HeartbeatTimeout / 4
}
