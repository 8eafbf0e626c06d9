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
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/interviewvm/controlplane/pkg/controlapi"
	"github.com/interviewvm/controlplane/pkg/livefeed"
	"github.com/interviewvm/controlplane/pkg/postgres"
	"github.com/interviewvm/controlplane/pkg/provision"
)

// Serve runs the controller until ctx ends: it opens the database (and
// migrates it when MIGRATE_ON_START is set), builds the machine provider,
// the lifecycle service, the reconciler (run while this replica holds the
// leader lock), the live feed and the API, and serves HTTP on
// cfg.ListenAddr. ready, when not nil, receives the API's address once it
// listens. On return every goroutine it started has stopped. cfg must have
// passed Validate.
func Serve(ctx context.Context, cfg Config, logger *slog.Logger, ready chan<- string) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

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

	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	internalURL := cfg.InternalURL
	if internalURL == "" {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		internalURL = "http://127.0.0.1:" + port
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
		SyntheticTurn:     cfg.SyntheticTurn,
		HeartbeatInterval: cfg.HeartbeatInterval, IdleTimeout: cfg.IdleTimeout,
		TenantMaxConcurrent: cfg.TenantMaxConcurrent, ProvisionTimeout: cfg.ProvisionTimeout,
	}, db, machines, logger.With("component", "provision"), reg)
	defer lifecycle.Close()

	// The leader among replicas reconciles: no machine outlives its
	// session, no live session outlives its machine.
	reconciler := provision.NewReconciler(provision.ReconcileConfig{
		Interval: cfg.ReconcileInterval, HeartbeatTimeout: cfg.HeartbeatTimeout,
		AdoptAfter: cfg.AdoptAfter, DeadlineGrace: cfg.DeadlineGrace,
	}, lifecycle, db, machines, logger.With("component", "reconciler"), reg)
	leadCtx, stopLeading := context.WithCancel(context.WithoutCancel(ctx))
	leading := make(chan struct{})
	go func() {
		defer close(leading)
		db.Lead(leadCtx, postgres.LeaderLockID, time.Second, reconciler.SetLeader, reconciler.Run)
	}()
	defer func() { stopLeading(); <-leading }()

	// Interview changes on any replica reach this one's live streams
	// through PostgreSQL LISTEN/NOTIFY.
	feed := livefeed.New(db, 0, logger.With("component", "livefeed"), reg)
	defer feed.Close()
	listenCtx, stopListen := context.WithCancel(context.WithoutCancel(ctx))
	listening := make(chan struct{})
	go func() {
		defer close(listening)
		db.Listen(listenCtx, feed.Publish)
	}()
	defer func() { stopListen(); <-listening }()

	// Durable jobs: features with jobs add their workers and queues to q
	// before open, and enqueue through jc in transition hooks.
	q := newJobQueue()
	jc, err := q.open(db, logger.With("component", "jobs"), reg)
	if err != nil {
		return err
	}
	if len(q.queues) > 0 {
		if err := jc.Start(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("start job queue: %w", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
			defer cancel()
			if err := jc.Stop(sctx); err != nil {
				logger.Warn("stop job queue", "error", err)
			}
		}()
	}

	api, err := controlapi.New(controlapi.Config{
		Auth: controlapi.AuthConfig{
			Secret: cfg.JWTSecret, JWKSURL: cfg.JWKSURL, Audience: cfg.JWTAudience, AccessSecret: cfg.AccessTokenSecret,
		},
		MaxDuration:     cfg.MaxDuration,
		StreamKeepAlive: cfg.StreamKeepAlive, RateLimit: cfg.RateLimit, RateBurst: cfg.RateBurst,
		BehindFlyProxy: cfg.BehindFlyProxy, FlyReplayApp: cfg.FlyReplayApp,
		Demo: demoPage(cfg.Demo), CORSOrigins: controlapi.ParseOrigins(cfg.CORSOrigins),
	}, db, lifecycle, db, feed, logger.With("component", "api"), reg, reg)
	if err != nil {
		return err
	}
	defer api.Close()
	srv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("controller listening", "addr", ln.Addr().String(), "internal_url", internalURL, "provider", cfg.Provider, "realtime", cfg.Realtime)
	if ready != nil {
		ready <- ln.Addr().String()
	}

	select {
	case err := <-errc:
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	api.CloseStreams() // live streams end now; clients resume elsewhere with Last-Event-ID
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("http shutdown", "error", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}
