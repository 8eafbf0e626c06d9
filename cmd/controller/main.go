// Command controller runs the interview control plane: the public API for
// frontends, the internal API for session VMs, the interview lifecycle on a
// machine provider, and Prometheus metrics. Subcommands: serve (default),
// migrate, token. `controller --help` lists every setting.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/interviewvm/controlplane/pkg/controlapi"
	"github.com/interviewvm/controlplane/pkg/livefeed"
	"github.com/interviewvm/controlplane/pkg/postgres"
	"github.com/interviewvm/controlplane/pkg/provision"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(1)
	}
}

// run is the whole program. ready, when not nil, receives the API's
// address once it listens.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready chan<- string) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve", "migrate":
	case "token":
		return runToken(args, getenv, stdout, stderr)
	case "sessions", "machines":
		return runCLI(ctx, cmd, args, getenv, stdout, stderr)
	default:
		return fmt.Errorf("unknown command %q (want serve, migrate, token, sessions or machines)", cmd)
	}
	cfg, err := parseConfig("controller "+cmd, args, getenv, stderr)
	if err != nil {
		return err
	}
	logger, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	if cmd == "migrate" {
		if cfg.DatabaseURL == "" {
			return errors.New("DATABASE_URL is required")
		}
		db, err := postgres.Open(ctx, cfg.DatabaseURL, logger)
		if err != nil {
			return err
		}
		defer db.Close()
		return db.Migrate(ctx)
	}
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	return serve(ctx, cfg, logger, ready)
}

func newLogger(cfg Config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("LOG_LEVEL: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	format := cfg.LogFormat
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}

func serve(ctx context.Context, cfg Config, logger *slog.Logger, ready chan<- string) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	db, err := postgres.Open(ctx, cfg.DatabaseURL, logger.With("component", "postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	reg.MustRegister(db.Collector(), db.FleetCollector())
	if cfg.MigrateOnStart {
		if err := db.Migrate(ctx); err != nil {
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
	feed := livefeed.New()
	listenCtx, stopListen := context.WithCancel(context.WithoutCancel(ctx))
	listening := make(chan struct{})
	go func() {
		defer close(listening)
		db.Listen(listenCtx, feed.Publish)
	}()
	defer func() { stopListen(); <-listening }()

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

// runToken prints a development JWT signed with JWT_SECRET.
func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("controller token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tenant := fs.String("tenant", "", "tenant UUID (default: a new one)")
	role := fs.String("role", "admin", "user_role claim: admin, recruiter or viewer")
	ttl := fs.Duration("ttl", 24*time.Hour, "lifetime")
	secret := fs.String("jwt-secret", getenv("JWT_SECRET"), "HS256 secret (env JWT_SECRET)")
	aud := fs.String("jwt-audience", firstNonEmpty(getenv("JWT_AUDIENCE"), "authenticated"), "aud claim (env JWT_AUDIENCE)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tenant == "" {
		*tenant = uuid.NewString()
	}
	tok, err := controlapi.DevToken(*secret, *aud, *tenant, *role, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
