package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/time/rate"

	"github.com/interviewvm/controlplane/pkg/controlapi"
	"github.com/interviewvm/controlplane/pkg/flymachines"
	"github.com/interviewvm/controlplane/pkg/flyvm"
	"github.com/interviewvm/controlplane/pkg/livefeed"
	"github.com/interviewvm/controlplane/pkg/postgres"
	"github.com/interviewvm/controlplane/pkg/provision"
)

// ProfileLabel is the pprof label key of the in-process controller's
// goroutines; its value is ProfileLabelValue. Every goroutine the
// controller starts inherits it, so a profile of the whole harness can be
// narrowed to the controller with -tagfocus=side=controller.
const (
	ProfileLabel      = "side"
	ProfileLabelValue = "controller"
)

// startInProcess runs the controller inside the harness, wired as
// cmd/controller's serve wires it (package main cannot be imported), on
// the fly provider only, with the settings of env and cmd/controller's
// defaults for the rest. It exists for profiling: the measured runs use
// the real binary.
func startInProcess(ctx context.Context, env map[string]string, logw io.Writer) (*Controller, error) {
	get := func(k, def string) string {
		if v, ok := env[k]; ok && v != "" {
			return v
		}
		return def
	}
	dur := func(k, def string) time.Duration {
		d, err := time.ParseDuration(get(k, def))
		if err != nil {
			d, _ = time.ParseDuration(def)
		}
		return d
	}
	num := func(k, def string) float64 {
		f, err := strconv.ParseFloat(get(k, def), 64)
		if err != nil {
			f, _ = strconv.ParseFloat(def, 64)
		}
		return f
	}
	if get("PROVIDER", "local") != "fly" {
		return nil, errors.New("the in-process controller runs the fly provider only")
	}
	logger := slog.New(slog.NewJSONHandler(logw, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if get("LOG_LEVEL", "info") == "warn" {
		logger = slog.New(slog.NewJSONHandler(logw, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}

	var c *Controller
	var startErr error
	started := make(chan struct{})
	labels := pprof.Labels(ProfileLabel, ProfileLabelValue)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go pprof.Do(runCtx, labels, func(ctx context.Context) {
		var closers []func()
		defer func() {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}()
		fail := func(err error) {
			startErr = err
			close(started)
			done <- err
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		db, err := postgres.Open(ctx, env["DATABASE_URL"], logger)
		if err != nil {
			fail(err)
			return
		}
		closers = append(closers, db.Close)
		reg.MustRegister(db.Collector(), db.FleetCollector())
		if err := db.Migrate(ctx); err != nil {
			fail(err)
			return
		}
		ln, err := net.Listen("tcp", get("LISTEN_ADDR", "127.0.0.1:0"))
		if err != nil {
			fail(err)
			return
		}
		base := "http://" + ln.Addr().String()
		perSecond := rate.Limit(num("FLY_RATE_LIMIT", "1"))
		client, err := flymachines.New(flymachines.Config{
			BaseURL: env["FLY_API_URL"], Token: env["FLY_API_TOKEN"], Logger: logger,
			ActionLimit: flymachines.Limit{Rate: perSecond, Burst: 2},
			GetLimit:    flymachines.Limit{Rate: 5 * perSecond, Burst: 9},
			Registerer:  reg,
		})
		if err != nil {
			ln.Close()
			fail(err)
			return
		}
		closers = append(closers, func() { _ = client.Close() })
		port, _ := strconv.Atoi(get("SESSION_PORT", "8080"))
		machines, err := flyvm.New(flyvm.Config{
			Client: client, App: env["FLY_APP"], Image: env["SESSION_IMAGE"], Region: env["FLY_REGION"],
			SessionPort: port, Logger: logger,
		})
		if err != nil {
			ln.Close()
			fail(err)
			return
		}
		lifecycle := provision.New(provision.Config{
			Provider: "fly", ControllerURL: base, Realtime: "simulated", Region: env["FLY_REGION"],
			HeartbeatInterval: dur("HEARTBEAT_INTERVAL", "2s"), ProvisionTimeout: dur("PROVISION_TIMEOUT", "5m"),
		}, db, machines, logger, reg)
		closers = append(closers, lifecycle.Close)
		reconciler := provision.NewReconciler(provision.ReconcileConfig{
			Interval: dur("RECONCILE_INTERVAL", "10s"), HeartbeatTimeout: dur("HEARTBEAT_TIMEOUT", "30s"),
		}, lifecycle, db, machines, logger, reg)
		leadCtx, stopLeading := context.WithCancel(ctx)
		leading := make(chan struct{})
		go func() {
			defer close(leading)
			db.Lead(leadCtx, postgres.LeaderLockID, time.Second, reconciler.SetLeader, reconciler.Run)
		}()
		closers = append(closers, func() { stopLeading(); <-leading })
		feed := livefeed.New()
		listenCtx, stopListen := context.WithCancel(ctx)
		listening := make(chan struct{})
		go func() {
			defer close(listening)
			db.Listen(listenCtx, feed.Publish)
		}()
		closers = append(closers, func() { stopListen(); <-listening })
		api, err := controlapi.New(controlapi.Config{
			Auth:      controlapi.AuthConfig{Secret: JWTSecret, Audience: "authenticated"},
			RateLimit: num("RATE_LIMIT", "20"), RateBurst: int(num("RATE_BURST", "40")),
			StreamKeepAlive: dur("STREAM_KEEPALIVE", "15s"), MaxDuration: dur("MAX_DURATION", "45m"),
		}, db, lifecycle, db, feed, logger, reg, reg)
		if err != nil {
			ln.Close()
			fail(err)
			return
		}
		closers = append(closers, api.Close)
		srv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second}
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ln) }()
		// Its memory and CPU are the harness's: PID is this process.
		c = &Controller{Base: base, Settings: env, PID: os.Getpid()}
		close(started)
		select {
		case err := <-errc:
			done <- fmt.Errorf("serve http: %w", err)
			return
		case <-ctx.Done():
		}
		api.CloseStreams()
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		done <- nil
	})
	select {
	case <-started:
	case <-ctx.Done():
		cancel()
		return nil, ctx.Err()
	}
	if startErr != nil {
		cancel()
		return nil, startErr
	}
	c.stop = func() {
		cancel()
		if err := <-done; err != nil {
			logger.Warn("in-process controller stopped", "error", err)
		}
	}
	return c, nil
}
