// Command benchrun runs the control plane's benchmarks (package bench)
// and writes docs/benchmarks.md. `make bench` runs it from the repository
// root after starting the private PostgreSQL and building bin/controller
// and bin/sessionvm:
//
//	benchrun [-quick] [-cases start,burst,ingest,live,scale,local] [-profile auto|none|start|ingest|live|scale|local] [-durable-db URL|same]
//
// The ingest and live cases run on a durable cluster (fsync and
// synchronous_commit on, as in production): -durable-db, by default the
// dev cluster of scripts/pg.sh, started if needed. The other cases run on
// -db, the fast test cluster.
//
// Every case that fails is reported in the document, not hidden; the exit
// status is non-zero when one did.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/interviewvm/controlplane/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(1)
	}
}

var allCases = []string{"start", "burst", "ingest", "live", "scale", "local", "scheduled", "webhooks", "insights"}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("benchrun", flag.ContinueOnError)
	out := fs.String("out", "docs/benchmarks.md", "the report to write")
	outDir := fs.String("outdir", "bench/out", "logs and profiles")
	dbURL := fs.String("db", os.Getenv("BENCH_DATABASE_URL"), "admin URL of the PostgreSQL cluster (default: BENCH_DATABASE_URL, else `scripts/pg.sh --test url`: the test cluster, durability off)")
	controller := fs.String("controller", "bin/controller", "controller binary")
	sessionvm := fs.String("sessionvm", "bin/sessionvm", "sessionvm binary")
	cases := fs.String("cases", strings.Join(allCases, ","), "cases to run")
	quick := fs.Bool("quick", false, "shortened sizes and durations, for developing the harness")
	burstScale := fs.Float64("burst-rate-scale", 1, "multiply Fly's rate limits in the burst case (1: Fly's documented 1/s)")
	burstSizes := fs.String("burst-sizes", "", "comma-separated burst sizes of the burst case (default 20,200; quick 20,40)")
	profile := fs.String("profile", "auto", "profile the biggest gap (auto), none, or a case: start, ingest, live, scale, local")
	durableURL := fs.String("durable-db", os.Getenv("BENCH_DURABLE_DATABASE_URL"), "admin URL of a durable PostgreSQL cluster (fsync and synchronous_commit on) for the ingest and live cases (default: BENCH_DURABLE_DATABASE_URL, else `scripts/pg.sh start` and `url`: the dev cluster); \"same\" runs them on -db")
	dbParams := fs.String("controller-db-params", "", "what-if: query parameters added to the controllers' DATABASE_URL, e.g. pool_max_conns=16")
	timeout := fs.Duration("timeout", 25*time.Minute, "the whole run's budget: a case still running when it is over is reported as not completed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	want := strings.Split(*cases, ",")
	for _, c := range want {
		if !slices.Contains(allCases, c) {
			return fmt.Errorf("unknown case %q (want some of %s)", c, strings.Join(allCases, ","))
		}
	}
	if *dbURL == "" {
		b, err := exec.Command("scripts/pg.sh", "--test", "url").Output()
		if err != nil {
			return fmt.Errorf("scripts/pg.sh --test url: %w (run from the repository root, or pass -db)", err)
		}
		*dbURL = strings.TrimSpace(string(b))
	}
	has := func(c string) bool { return slices.Contains(want, c) }
	needDurable := has("ingest") || has("live") || *profile == "ingest" || *profile == "live"
	if needDurable && *durableURL == "" {
		// The dev cluster keeps PostgreSQL's durable defaults; the
		// Makefile's PG_CLUSTER=test must not select the test one here.
		start := exec.Command("scripts/pg.sh", "start")
		start.Env, start.Stderr = append(os.Environ(), "PG_CLUSTER=dev"), os.Stderr
		if err := start.Run(); err != nil {
			return fmt.Errorf("scripts/pg.sh start: %w (run from the repository root, or pass -durable-db)", err)
		}
		url := exec.Command("scripts/pg.sh", "url")
		url.Env = append(os.Environ(), "PG_CLUSTER=dev")
		b, err := url.Output()
		if err != nil {
			return fmt.Errorf("scripts/pg.sh url: %w", err)
		}
		*durableURL = strings.TrimSpace(string(b))
	}
	if *durableURL == "same" {
		*durableURL = *dbURL
	}
	ctrlBin, err := filepath.Abs(*controller)
	if err != nil {
		return err
	}
	vmBin, err := filepath.Abs(*sessionvm)
	if err != nil {
		return err
	}
	for _, p := range []string{ctrlBin, vmBin} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s: %w (run `make build`)", p, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	began := time.Now()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}
	env := &bench.Env{ControllerBin: ctrlBin, SessionVMBin: vmBin, AdminURL: *dbURL, OutDir: *outDir, Log: logf, DBParams: *dbParams}
	res := &bench.Results{
		Machine: bench.ReadMachine(), Postgres: env.ServerVersion(ctx), Date: time.Now(), Quick: *quick,
		Command: "make bench  # go run ./bench/cmd/benchrun " + commandLine(args),
	}
	res.Durability = env.Durability(ctx)
	// durable runs the ingest and live cases: production durability.
	durable := env
	if needDurable {
		d := *env
		d.AdminURL = *durableURL
		durable = &d
		res.DurableDurability = durable.Durability(ctx)
		if !res.DurableDurability.On() {
			return fmt.Errorf("-durable-db: %s: the ingest and live cases need fsync and synchronous_commit on", res.DurableDurability)
		}
		logf("ingest and live on the durable cluster (%s)", res.DurableDurability)
	}
	configure(res, *quick, *burstScale)
	if *burstSizes != "" {
		res.BurstCfg.Sizes = nil
		for _, f := range strings.Split(*burstSizes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				return fmt.Errorf("-burst-sizes: %q is not a positive number", f)
			}
			res.BurstCfg.Sizes = append(res.BurstCfg.Sizes, n)
		}
	}

	var failed []string
	note := func(name string, err error) {
		if err != nil {
			logf("%s: %v", name, err)
			failed = append(failed, name)
		}
	}
	if has("start") {
		logf("case 1: start latency vs the platform floor")
		res.Start, res.StartSettings, res.StartErr = env.RunStartLatency(ctx, res.StartCfg)
		note("start", res.StartErr)
		x, err := env.RunExecReady(ctx, res.ExecReadyCfg)
		res.ExecReadyErr = err
		if err == nil {
			res.ExecReady = &x
		}
		note("start (sessionvm exec → ready)", err)
	}
	if has("burst") {
		logf("case 2: burst admission")
		var errs []error
		for _, n := range res.BurstCfg.Sizes {
			b, err := env.RunBurst(ctx, res.BurstCfg, n)
			if err != nil {
				errs = append(errs, fmt.Errorf("%d starts: %w", n, err))
			}
			res.Bursts = append(res.Bursts, b)
		}
		res.BurstErr = errors.Join(errs...)
		note("burst", res.BurstErr)
	}
	if has("ingest") {
		logf("case 3: transcript ingest")
		in, err := durable.RunIngest(ctx, res.IngestCfg)
		res.Ingest, res.IngestErr = &in, err
		if err != nil && in.Segments == 0 {
			res.Ingest = nil
		}
		note("ingest", err)
	}
	if has("live") {
		logf("case 4: live transcript latency")
		l, err := durable.RunLive(ctx, res.LiveCfg)
		res.Live, res.LiveErr = &l, err
		if err != nil && l.Posts == 0 {
			res.Live = nil
		}
		note("live", err)
		logf("case 4: live transcript latency, one interview")
		l1, err := durable.RunLive(ctx, res.LiveOneCfg)
		res.LiveOne, res.LiveOneErr = &l1, err
		if err != nil && l1.Posts == 0 {
			res.LiveOne = nil
		}
		note("live (one interview)", err)
	}
	if has("scale") {
		logf("case 5: scale")
		s, err := env.RunScale(ctx, res.ScaleCfg)
		res.Scale, res.ScaleErr = &s, err
		if err != nil && len(s.Passes) == 0 {
			res.Scale = nil
		}
		note("scale", err)
	}
	if has("local") {
		logf("case 6: local provider")
		l, err := env.RunLocal(ctx, res.LocalCfg)
		res.Local, res.LocalErr = &l, err
		if err != nil && l.Sequential.N == 0 {
			res.Local = nil
		}
		note("local", err)
	}
	if has("scheduled") {
		logf("case 7: scheduled start (pre-warmed) vs the boot floor and a cold start")
		sc, err := env.RunScheduled(ctx, res.ScheduledCfg)
		res.ScheduledErr = err
		if err == nil {
			res.Scheduled = &sc
		}
		note("scheduled", err)
	}
	if has("webhooks") {
		logf("case 8: webhooks")
		wh, err := env.RunWebhooks(ctx, res.WebhooksCfg)
		res.Webhooks, res.WebhooksErr = &wh, err
		if err != nil && wh.Received == 0 {
			res.Webhooks = nil
		}
		note("webhooks", err)
	}
	if has("insights") {
		logf("case 9: insights")
		in, err := env.RunInsights(ctx, res.InsightsCfg)
		res.InsightsErr = err
		if in.Ready > 0 {
			res.Insights = &in
		}
		note("insights", err)
	}
	if dl, _ := ctx.Deadline(); *profile != "none" && time.Until(dl) < 2*time.Minute {
		logf("profile: skipped, %s of the budget left", time.Until(dl).Round(time.Second))
	} else if *profile != "none" {
		res.Profile = profileGap(ctx, env, durable, res, *profile, *quick)
	}
	res.Elapsed = time.Since(began)
	if err := os.WriteFile(*out, []byte(res.Markdown()), 0o644); err != nil {
		return err
	}
	logf("wrote %s", *out)
	if len(failed) > 0 {
		return fmt.Errorf("cases that did not complete: %s", strings.Join(failed, ", "))
	}
	return nil
}

// configure sets every case's sizes: the issue's, or small ones with quick.
func configure(res *bench.Results, quick bool, burstScale float64) {
	res.StartCfg = bench.StartLatencyConfig{BootDelays: []time.Duration{0, 300 * time.Millisecond}, Samples: 100, Warmup: 3}
	res.ExecReadyCfg = bench.ExecReadyConfig{Samples: 100, Warmup: 3}
	res.BurstCfg = bench.BurstConfig{Sizes: []int{20, 200}, Tenants: 10, RateScale: burstScale, BootDelay: 300 * time.Millisecond}
	res.IngestCfg = bench.IngestConfig{VMs: 100, Batch: 50, Duration: 20 * time.Second, CopyConns: 4, CopyChunk: 10_000,
		StoreDuration: 10 * time.Second, StorePoolMax: 32}
	res.LiveCfg = bench.LiveConfig{Interviews: 100, Subscribers: 1000, PostEvery: time.Second, Duration: 30 * time.Second}
	res.LiveOneCfg = bench.LiveConfig{Interviews: 1, Subscribers: 100, PostEvery: 100 * time.Millisecond, Duration: 20 * time.Second}
	res.ScaleCfg = bench.ScaleConfig{Interviews: 10_000, Tenants: 100, HeartbeatInterval: 2 * time.Second,
		SegmentEvery: 30 * time.Second, ReconcileInterval: 10 * time.Second, QuietWindow: 20 * time.Second, Settle: 15 * time.Second, Window: 30 * time.Second}
	res.LocalCfg = bench.LocalConfig{Sequential: 50, Concurrent: 20, Rounds: 3, Settle: 3 * time.Second}
	res.ScheduledCfg = bench.ScheduledConfig{CreateDelay: 2 * time.Second, BootDelay: 300 * time.Millisecond, Samples: 20}
	res.WebhooksCfg = bench.WebhooksConfig{Interviews: 1000, Concurrency: 32}
	res.InsightsCfg = bench.InsightsConfig{Interviews: 1000, Sequential: 40, Segments: 20, Concurrency: 32}
	if quick {
		res.StartCfg.Samples = 15
		res.ExecReadyCfg.Samples = 30
		res.BurstCfg.Sizes, res.BurstCfg.RateScale = []int{20, 40}, max(burstScale, 10)
		res.IngestCfg.Duration, res.IngestCfg.StoreDuration = 5*time.Second, 4*time.Second
		res.LiveCfg.Subscribers, res.LiveCfg.Duration = 200, 8*time.Second
		res.LiveOneCfg.Duration = 8 * time.Second
		res.ScaleCfg.Interviews, res.ScaleCfg.QuietWindow, res.ScaleCfg.Settle, res.ScaleCfg.Window = 1000, 10*time.Second, 5*time.Second, 10*time.Second
		res.LocalCfg.Sequential, res.LocalCfg.Concurrent = 10, 5
		res.ScheduledCfg.Samples = 5
		res.WebhooksCfg.Interviews = 200
		res.InsightsCfg.Interviews, res.InsightsCfg.Sequential = 200, 10
	}
}

// profileGap runs the biggest gap's case again with the controller
// in-process under a CPU profile, and returns the controller's top.
func profileGap(ctx context.Context, env, durable *bench.Env, res *bench.Results, which string, quick bool) *bench.Profile {
	p := &bench.Profile{Case: which}
	if which == "auto" {
		gap, ok := res.BiggestGap()
		if !ok {
			return nil
		}
		p.Case, p.Figure = gap.Profile, gap.Figure
	} else {
		p.Figure = "chosen with -profile"
	}
	env.Log("profile: %s (%s), controller in-process", p.Case, p.Figure)
	inproc := *env
	if p.Case == "ingest" || p.Case == "live" {
		inproc = *durable
	}
	inproc.InProcess = true
	inproc.OutDir = filepath.Join(env.OutDir, "profile")
	p.Path = filepath.Join(env.OutDir, "cpu-"+p.Case+".pprof")
	if err := os.MkdirAll(env.OutDir, 0o755); err != nil {
		p.Err = err
		return p
	}
	f, err := os.Create(p.Path)
	if err != nil {
		p.Err = err
		return p
	}
	defer f.Close()
	// Case 5 profiles its measured window only (its 10,000 starts would
	// fill the profile otherwise); the others their whole run.
	windowOnly := p.Case == "scale"
	if !windowOnly {
		if err := pprof.StartCPUProfile(f); err != nil {
			p.Err = err
			return p
		}
	}
	start := time.Now()
	switch p.Case {
	case "start":
		cfg := res.StartCfg
		cfg.Samples = max(10, cfg.Samples/2)
		_, _, err = inproc.RunStartLatency(ctx, cfg)
	case "ingest":
		cfg := res.IngestCfg
		cfg.Duration = min(cfg.Duration, 15*time.Second)
		_, err = inproc.RunIngest(ctx, cfg)
	case "live":
		// The shape with the tight target: many subscribers on one interview.
		cfg := res.LiveOneCfg
		cfg.Duration = min(cfg.Duration, 20*time.Second)
		_, err = inproc.RunLive(ctx, cfg)
	case "local":
		cfg := res.LocalCfg
		cfg.Sequential = min(cfg.Sequential, 10)
		_, err = inproc.RunLocal(ctx, cfg)
	case "scale":
		// Both ends of every VM connection are in this process: fewer
		// interviews keep it within its file descriptors.
		cfg := res.ScaleCfg
		cfg.Interviews = min(cfg.Interviews, 5000)
		if !quick {
			cfg.Window = 20 * time.Second
		}
		cfg.WindowProfile = f
		_, err = inproc.RunScale(ctx, cfg)
	default:
		err = fmt.Errorf("case %q cannot be profiled in-process", p.Case)
	}
	if !windowOnly {
		pprof.StopCPUProfile()
	}
	p.Seconds = time.Since(start).Seconds()
	if err != nil {
		p.Err = err
		return p
	}
	args := []string{"tool", "pprof", "-top", "-cum", "-nodecount=35", "-tagfocus=" + bench.ProfileLabel + "=" + bench.ProfileLabelValue}
	if p.Focus != "" {
		args = append(args, "-focus="+p.Focus)
	}
	top, err := exec.CommandContext(ctx, "go", append(args, p.Path)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		p.Err = fmt.Errorf("go tool pprof: %w", err)
		return p
	}
	p.Top = string(top)
	return p
}

// commandLine quotes args for the report, the database URL as the
// command that printed it.
func commandLine(args []string) string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-db" || a == "--db":
			out = append(out, a, `"$(scripts/pg.sh --test url)"`)
			i++
		case strings.HasPrefix(a, "-db=") || strings.HasPrefix(a, "--db="):
			out = append(out, `-db="$(scripts/pg.sh --test url)"`)
		default:
			out = append(out, a)
		}
	}
	return strings.Join(out, " ")
}
