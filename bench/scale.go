package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/flymachines/flymachinestest"
)

// ScaleConfig sets case 5 up.
type ScaleConfig struct {
	Interviews, Tenants int
	// HeartbeatInterval is the controller's HEARTBEAT_INTERVAL (what the
	// VMs are told); SegmentEvery each VM's period between segments.
	HeartbeatInterval, SegmentEvery time.Duration
	// ReconcileInterval is the controller's RECONCILE_INTERVAL.
	ReconcileInterval time.Duration
	// QuietWindow watches reconcile passes once every VM is ready, before
	// they begin to heartbeat; then the VMs are released, Settle is
	// waited, and Window is measured.
	QuietWindow, Settle, Window time.Duration
	// WindowProfile, when set, receives a CPU profile of the harness over
	// the window (with Env.InProcess, the controller's code is in it).
	WindowProfile io.Writer
}

// Scale is case 5's result.
type Scale struct {
	Interviews, Ready int
	StartAll          time.Duration
	RSS, PeakRSS      int64
	// CPU is the controller's CPU time over Window, in cores.
	CPU    float64
	Window time.Duration
	// PGCPU is PostgreSQL's CPU time over Window, in cores: the whole
	// cluster (postmaster, every backend and background process), read
	// from /proc. PGCPUErr says why it was not measured (a remote server).
	PGCPU    float64
	PGCPUErr string
	// QuietPasses are the reconcile passes seen in QuietWindow, before the
	// VMs begin to heartbeat (at least one); QuietListCall the average
	// duration of their Fly list call.
	QuietPasses   []time.Duration
	QuietListCall time.Duration
	// FirstBeats is how long after their release every VM's first
	// heartbeat (each a transaction) was answered.
	FirstBeats time.Duration
	// Passes are the reconcile passes seen in the window (at least one).
	Passes                []time.Duration
	Beats, Segments       float64 // per second, over the window
	Failed                int     // interviews failed by the end
	VMErrors              int64
	LastVMError           string
	Goroutines, OpenConns float64
	// ListCall is the average duration of the pass's Fly list call
	// (flymachines_request_duration_seconds{op="list"}) in the window.
	ListCall time.Duration
	// TxPerStart is the database's committed transactions per start
	// during the start phase; TxPerSecond its rate in the window.
	TxPerStart, TxPerSecond float64
	HeartbeatInterval       time.Duration
	SegmentEvery, Reconcile time.Duration
	Settings                map[string]string
}

// RunScale keeps cfg.Interviews interviews live on the fake Fly API with
// synthetic VMs (no processes), each on its own keep-alive connection as
// a real VM, heartbeating and posting segments, and measures the
// controller process: resident memory (/proc/<pid>/status), CPU time
// (/proc/<pid>/stat) over a window, and the duration of every reconcile
// pass in it (the interview_reconciler_pass_duration_seconds histogram, scraped
// every 2 s: each pass is the growth of its sum between scrapes).
func (e *Env) RunScale(ctx context.Context, cfg ScaleConfig) (Scale, error) {
	res := Scale{Interviews: cfg.Interviews, Window: cfg.Window, HeartbeatInterval: cfg.HeartbeatInterval,
		SegmentEvery: cfg.SegmentEvery, Reconcile: cfg.ReconcileInterval}
	vms := NewSyntheticVMs(0)
	vms.PerVMConn = true
	vms.Heartbeat = true
	vms.SegmentEvery = cfg.SegmentEvery
	hold := make(chan struct{})
	vms.Hold = hold // quiet until all are started; then released together
	released := false
	defer func() {
		if !released {
			close(hold)
		}
	}()
	f, err := e.StartFly(ctx, "scale", netip.MustParseAddr("127.1.0.2"), []flymachinestest.Option{
		flymachinestest.WithRunner(vms), flymachinestest.WithBootDelay(0),
	}, map[string]string{
		"FLY_RATE_LIMIT":     "1000000", // creating 10,000 machines is not what is measured
		"HEARTBEAT_INTERVAL": cfg.HeartbeatInterval.String(),
		"RECONCILE_INTERVAL": cfg.ReconcileInterval.String(),
		// The VMs stay silent until the last one is ready and the quiet
		// passes are watched, then all send a first heartbeat (each a
		// transaction) at once: the first ones must not time out meanwhile.
		"HEARTBEAT_TIMEOUT": "10m",
		// What the default HEARTBEAT_TIMEOUT (30s) gives: a quarter of it
		// (the long timeout above would give 2.5 minutes).
		"HEARTBEAT_PERSIST": "7.5s",
		"LOG_LEVEL":         "warn",
	})
	if err != nil {
		_ = vms.Close()
		return res, err
	}
	defer f.Close()
	res.Settings = pick(f.Controller.Settings, "HEARTBEAT_INTERVAL", "HEARTBEAT_TIMEOUT", "HEARTBEAT_PERSIST", "RECONCILE_INTERVAL", "LOG_LEVEL")

	e.logf("scale: seeding %d interviews of %d tenants", cfg.Interviews, cfg.Tenants)
	ts, ids, err := f.API.SeedTenants(ctx, cfg.Tenants, cfg.Interviews/cfg.Tenants, 64)
	if err != nil {
		return res, fmt.Errorf("seed interviews: %w", err)
	}
	type job struct{ tok, id string }
	var jobs []job
	for i, t := range ts {
		for _, id := range ids[i] {
			jobs = append(jobs, job{t.Token, id})
		}
	}
	e.logf("scale: starting %d interviews", len(jobs))
	tx0, err := xactCommits(ctx, f.Controller.DBURL)
	if err != nil {
		return res, err
	}
	start := time.Now()
	if err := parallel(ctx, len(jobs), 64, func(ctx context.Context, i int) error {
		_, _, err := f.API.Start(ctx, jobs[i].tok, jobs[i].id, 0)
		return err
	}); err != nil {
		return res, fmt.Errorf("start interviews: %w", err)
	}
	if err := waitFor(ctx, 5*time.Minute, "every synthetic VM to be ready", func() bool {
		return vms.Ready.Load()+vms.Errors.Load() >= int64(len(jobs))
	}); err != nil {
		return res, fmt.Errorf("%w (%d ready, %d VM errors, last: %s)", err, vms.Ready.Load(), vms.Errors.Load(), vms.LastError())
	}
	res.StartAll = time.Since(start)
	res.Ready = int(vms.Ready.Load())
	if tx1, err := xactCommits(ctx, f.Controller.DBURL); err == nil {
		res.TxPerStart = float64(tx1-tx0) / float64(len(jobs))
	}
	// The reconcile passes over every machine while the VMs are quiet:
	// what the pass itself costs, the fake Fly API's rendering included.
	e.logf("scale: %d ready in %s (%.1f transactions per start); watching reconcile passes for %s with the VMs quiet", res.Ready, res.StartAll.Round(time.Second), res.TxPerStart, cfg.QuietWindow)
	quiet, err := watchPasses(ctx, f.API.Base, cfg.QuietWindow, cfg.ReconcileInterval, true, nil)
	if err != nil {
		return res, err
	}
	res.QuietPasses, res.QuietListCall = quiet.passes, quiet.listCall
	close(hold)
	released = true
	e.logf("scale: quiet passes %s (list call %s); VMs released", durList(res.QuietPasses), res.QuietListCall.Round(time.Millisecond))
	// Every VM's first heartbeat takes the full path (a transaction): the
	// window begins once all were answered, and Settle later.
	released0 := time.Now()
	if err := waitFor(ctx, 5*time.Minute, "every VM's first heartbeat to be answered", func() bool {
		return vms.Beating.Load() >= int64(res.Ready)
	}); err != nil {
		return res, fmt.Errorf("%w (%d of %d answered)", err, vms.Beating.Load(), res.Ready)
	}
	res.FirstBeats = time.Since(released0)
	e.logf("scale: every first heartbeat answered in %s; settling %s, then measuring %s", res.FirstBeats.Round(time.Second), cfg.Settle, cfg.Window)
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(cfg.Settle):
	}

	if cfg.WindowProfile != nil {
		if err := pprof.StartCPUProfile(cfg.WindowProfile); err != nil {
			return res, fmt.Errorf("profile the window: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	pid := f.Controller.PID
	postmaster, pgErr := postmasterPID(ctx, f.Controller.DBURL)
	var pg0 time.Duration
	if pgErr == nil {
		pg0, pgErr = TreeCPUTime(postmaster)
	}
	cpu0, err := CPUTime(pid)
	if err != nil {
		return res, err
	}
	beats0, segs0 := vms.Beats.Load(), vms.Segments.Load()
	wtx0, err := xactCommits(ctx, f.Controller.DBURL)
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	loaded, err := watchPasses(ctx, f.API.Base, cfg.Window, cfg.ReconcileInterval, false, func() {
		if rss, peak, err := RSS(pid); err == nil {
			res.RSS, res.PeakRSS = max(res.RSS, rss), max(res.PeakRSS, peak)
		}
	})
	if err != nil {
		return res, err
	}
	res.Passes, res.ListCall = loaded.passes, loaded.listCall
	m := loaded.last
	elapsed := time.Since(t0)
	if cfg.WindowProfile != nil {
		pprof.StopCPUProfile()
	}
	cpu1, err := CPUTime(pid)
	if err != nil {
		return res, err
	}
	res.Window = elapsed
	if wtx1, err := xactCommits(ctx, f.Controller.DBURL); err == nil {
		res.TxPerSecond = float64(wtx1-wtx0) / elapsed.Seconds()
	}
	res.CPU = cpu1.Seconds() - cpu0.Seconds()
	res.CPU /= elapsed.Seconds()
	if pgErr == nil {
		var pg1 time.Duration
		if pg1, pgErr = TreeCPUTime(postmaster); pgErr == nil {
			res.PGCPU = (pg1 - pg0).Seconds() / elapsed.Seconds()
		}
	}
	if pgErr != nil {
		res.PGCPUErr = pgErr.Error()
	}
	res.Beats = float64(vms.Beats.Load()-beats0) / elapsed.Seconds()
	res.Segments = float64(vms.Segments.Load()-segs0) / elapsed.Seconds()
	res.VMErrors, res.LastVMError = vms.Errors.Load(), vms.LastError()
	res.Goroutines = m["go_goroutines"]
	res.OpenConns = m["process_open_fds"]
	res.Failed, err = countStatus(ctx, f.Controller.DBURL, "failed")
	if err != nil {
		return res, err
	}
	e.logf("scale: RSS %.0f MiB (peak %.0f MiB), CPU %.2f cores (PostgreSQL %.2f%s), %d reconcile passes, max %s; %.0f heartbeats/s, %.0f segments/s, %.0f transactions/s; %d failed, %d VM errors",
		mib(res.RSS), mib(res.PeakRSS), res.CPU, res.PGCPU, errText(res.PGCPUErr), len(res.Passes), Summarize(res.Passes).Max.Round(time.Millisecond),
		res.Beats, res.Segments, res.TxPerSecond, res.Failed, res.VMErrors)
	return res, nil
}

// watched is what watchPasses saw.
type watched struct {
	passes []time.Duration
	// listCall is the average duration of the Fly list calls made meanwhile.
	listCall time.Duration
	// last is the last scrape.
	last map[string]float64
}

// watchPasses scrapes the controller's metrics every 2 s for d (and on,
// up to two reconcile intervals more, until a pass ends) and returns the
// passes that ended meanwhile: each is the growth of the pass histogram's
// sum between two scrapes (passes between the same two scrapes share it
// evenly). A scrape may fail under load (promhttp answers 500 when a
// database gauge times out): the first one is retried until it succeeds,
// so that no earlier pass is counted; later ones are skipped. With skip,
// the first pass to end is not counted (it may have begun before the
// watch, under other load). sample, when set, runs at every tick.
func watchPasses(ctx context.Context, base string, d, interval time.Duration, skip bool, sample func()) (watched, error) {
	const (
		count, sum         = "interview_reconciler_pass_duration_seconds_count", "interview_reconciler_pass_duration_seconds_sum"
		listSum, listCount = `interview_flymachines_request_duration_seconds_sum{op="list"}`, `interview_flymachines_request_duration_seconds_count{op="list"}`
	)
	var w watched
	var first map[string]float64
	if err := waitFor(ctx, 2*time.Minute, "a first metrics scrape", func() bool {
		m, err := scrapeMetrics(ctx, base)
		first = m
		return err == nil
	}); err != nil {
		return w, err
	}
	w.last = first
	t0 := time.Now()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for time.Since(t0) < d || len(w.passes) == 0 {
		if time.Since(t0) > d+2*interval+30*time.Second {
			return w, fmt.Errorf("scale: no reconcile pass finished in %s", time.Since(t0).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return w, ctx.Err()
		case <-tick.C:
		}
		if sample != nil {
			sample()
		}
		m, err := scrapeMetrics(ctx, base)
		if err != nil {
			continue
		}
		if n := m[count] - w.last[count]; n > 0 && skip {
			// The first pass to end may have begun before the watch.
			skip = false
		} else if n > 0 {
			for range int(n) {
				w.passes = append(w.passes, time.Duration((m[sum]-w.last[sum])/n*float64(time.Second)))
			}
		}
		w.last = m
	}
	if n := w.last[listCount] - first[listCount]; n > 0 {
		w.listCall = time.Duration((w.last[listSum] - first[listSum]) / n * float64(time.Second))
	}
	return w, nil
}

// scrapeMetrics reads the samples of /metrics, keyed by name and labels
// as written ("name" or "name{label=\"v\"}").
func scrapeMetrics(ctx context.Context, base string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// promhttp answers 500 when a collector fails (a database gauge
		// timing out under load): that body has no samples.
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("scrape %s/metrics: status %d", base, resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		k, v, ok := line[:i], line[i+1:], true
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[k] = f
		}
	}
	return out, sc.Err()
}

// xactCommits returns how many transactions the database has committed.
func xactCommits(ctx context.Context, dbURL string) (int64, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int64
	err = conn.QueryRow(ctx, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").Scan(&n)
	return n, err
}

// postmasterPID returns the pid of the PostgreSQL server behind dbURL,
// when it runs on this host: the parent of this connection's backend.
func postmasterPID(ctx context.Context, dbURL string) (int, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return 0, err
	}
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", backend)); err != nil || !strings.HasPrefix(string(comm), "postgres") {
		return 0, fmt.Errorf("postgres backend %d is not on this host", backend)
	}
	pm, err := ParentPID(backend)
	if err != nil {
		return 0, fmt.Errorf("postgres backend %d is not on this host: %w", backend, err)
	}
	return pm, nil
}

// countStatus counts the interviews of a status in a database.
func countStatus(ctx context.Context, dbURL, status string) (int, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(ctx, "SELECT count(*) FROM interviews.interview_sessions WHERE status = $1", status).Scan(&n)
	return n, err
}

// PoolStats is the controller's connection pool activity over a period,
// from its interview_pgxpool_* metrics.
type PoolStats struct {
	Max                float64 // interview_pgxpool_max_conns
	Acquires, Waited   float64 // acquires, and those that found the pool empty
	WaitTotal, AvgWait time.Duration
}

type poolSample struct{ max, acquires, empty, emptyWaitS float64 }

func scrapePool(ctx context.Context, base string) (poolSample, error) {
	m, err := scrapeMetrics(ctx, base)
	if err != nil {
		return poolSample{}, err
	}
	return poolSample{m["interview_pgxpool_max_conns"], m["interview_pgxpool_acquire_total"], m["interview_pgxpool_empty_acquire_total"],
		m["interview_pgxpool_empty_acquire_wait_time_seconds_total"]}, nil
}

func poolDelta(a, b poolSample) PoolStats {
	p := PoolStats{Max: b.max, Acquires: b.acquires - a.acquires, Waited: b.empty - a.empty,
		WaitTotal: time.Duration((b.emptyWaitS - a.emptyWaitS) * float64(time.Second))}
	if p.Waited > 0 {
		p.AvgWait = time.Duration(float64(p.WaitTotal) / p.Waited)
	}
	return p
}
