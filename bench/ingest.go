package bench

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/flymachines/flymachinestest"
	"github.com/interviewvm/controlplane/pkg/postgres"
	"github.com/interviewvm/controlplane/pkg/session"
)

// liveSessions starts n interviews on a fake-Fly controller whose VMs are
// synthetic (ready at once, heartbeating) and returns them with their VMs.
func (e *Env) liveSessions(ctx context.Context, label string, n, tenants int, env map[string]string) (*FlySetup, *SyntheticVMs, []Tenant, [][]string, error) {
	vms := NewSyntheticVMs(256)
	vms.Heartbeat = true
	all := map[string]string{"FLY_RATE_LIMIT": "1000000"} // starting them is not what is measured
	maps.Copy(all, env)
	f, err := e.StartFly(ctx, label, netip.MustParseAddr("127.0.16.2"), []flymachinestest.Option{
		flymachinestest.WithRunner(vms), flymachinestest.WithBootDelay(0),
	}, all)
	if err != nil {
		_ = vms.Close()
		return nil, nil, nil, nil, err
	}
	ts, ids, err := f.API.SeedTenants(ctx, tenants, n/tenants, 32)
	if err != nil {
		f.Close()
		return nil, nil, nil, nil, fmt.Errorf("seed interviews: %w", err)
	}
	type job struct{ tok, id string }
	var jobs []job
	for i, t := range ts {
		for _, id := range ids[i] {
			jobs = append(jobs, job{t.Token, id})
		}
	}
	if err := parallel(ctx, len(jobs), 32, func(ctx context.Context, i int) error {
		return f.API.StartReady(ctx, jobs[i].tok, jobs[i].id, 60)
	}); err != nil {
		f.Close()
		return nil, nil, nil, nil, fmt.Errorf("start interviews: %w", err)
	}
	return f, vms, ts, ids, nil
}

// IngestConfig sets case 3 up.
type IngestConfig struct {
	VMs       int
	Batch     int
	Duration  time.Duration
	CopyConns int
	CopyChunk int
	// StoreDuration is how long the store alone is driven; StorePoolMax
	// the pool size of its second run (0: no second run).
	StoreDuration time.Duration
	StorePoolMax  int
}

// StoreIngest is the store's own ingest rate.
type StoreIngest struct {
	Pool      int
	PerSecond float64
	Latency   Summary
}

// Ingest is case 3's result.
type Ingest struct {
	VMs, Batch   int
	Segments     int64
	Elapsed      time.Duration
	PerSecond    float64
	BatchLatency Summary
	Errors       int64
	FirstError   string
	// Store is the same batches through postgres.DB.AppendTranscript
	// straight from the harness (no HTTP), with the controller's default
	// pool and with StorePoolMax connections.
	Store, StoreBigPool StoreIngest
	StorePoolMax        int
	// Pool is the controller's connection pool during the HTTP ingest.
	Pool                PoolStats
	CopySegments        int64
	CopyElapsed         time.Duration
	CopyPerSecond       float64
	CopyConns, CopyRows int
}

// RunIngest posts transcript batches from cfg.VMs concurrent simulated
// VMs (HTTP clients with their session tokens, each posting its next batch
// as soon as the last is acknowledged) to the internal API for
// cfg.Duration, then COPYs the same number of segments straight into the
// same table of the same database with pgx CopyFrom.
func (e *Env) RunIngest(ctx context.Context, cfg IngestConfig) (Ingest, error) {
	res := Ingest{VMs: cfg.VMs, Batch: cfg.Batch, CopyConns: cfg.CopyConns, CopyRows: cfg.CopyChunk}
	f, vms, _, ids, err := e.liveSessions(ctx, "ingest", cfg.VMs, 10, nil)
	if err != nil {
		return res, err
	}
	defer f.Close()
	var all []*SyntheticVM
	for _, group := range ids {
		for _, id := range group {
			v := vms.VM(id)
			if v == nil {
				return res, fmt.Errorf("no VM for interview %s", id)
			}
			all = append(all, v)
		}
	}
	hc := &http.Client{Transport: newTransport(cfg.VMs + 8), Timeout: 60 * time.Second}
	var total, errs atomic.Int64
	var lat Samples
	var firstErr atomic.Value
	e.logf("ingest: %d VMs posting batches of %d for %s", len(all), cfg.Batch, cfg.Duration)
	pool0, err := scrapePool(ctx, f.API.Base)
	if err != nil {
		return res, err
	}
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for _, v := range all {
		wg.Go(func() {
			seq := int64(0)
			for runCtx.Err() == nil {
				segs := make([]session.Segment, cfg.Batch)
				for i := range segs {
					segs[i] = Segment(seq + int64(i) + 1)
				}
				s := time.Now()
				acked, err := v.Post(runCtx, hc, segs)
				if err != nil {
					if runCtx.Err() != nil {
						return
					}
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				lat.Add(time.Since(s))
				if acked != seq+int64(cfg.Batch) {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("acked %d, want %d", acked, seq+int64(cfg.Batch)))
				}
				seq += int64(cfg.Batch)
				total.Add(int64(cfg.Batch))
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	if pool1, err := scrapePool(ctx, f.API.Base); err == nil {
		res.Pool = poolDelta(pool0, pool1)
	}
	res.Segments = total.Load()
	res.PerSecond = float64(res.Segments) / res.Elapsed.Seconds()
	res.BatchLatency = lat.Summary()
	res.Errors = errs.Load()
	if v, ok := firstErr.Load().(string); ok {
		res.FirstError = v
	}
	e.logf("ingest: %d segments in %s = %.0f/s (batch p50 %.1f ms, p99 %.1f ms), errors %d; %.0f of %.0f pool acquires waited, %.1f ms on average",
		res.Segments, res.Elapsed.Round(time.Millisecond), res.PerSecond, ms(res.BatchLatency.P50), ms(res.BatchLatency.P99), res.Errors,
		res.Pool.Waited, res.Pool.Acquires, ms(res.Pool.AvgWait))

	// The store alone, on the same sessions, continuing their seqs.
	res.StorePoolMax = cfg.StorePoolMax
	for i, params := range []string{"", fmt.Sprintf("pool_max_conns=%d", cfg.StorePoolMax)} {
		if i == 1 && cfg.StorePoolMax <= 0 {
			break
		}
		st, err := e.storeIngest(ctx, f.Controller.DBURL, params, all, cfg.Batch, cfg.StoreDuration)
		if err != nil {
			return res, err
		}
		if i == 0 {
			res.Store = st
		} else {
			res.StoreBigPool = st
		}
		e.logf("ingest: store only (pool %d): %.0f segments/s (batch p50 %.1f ms, p99 %.1f ms)",
			st.Pool, st.PerSecond, ms(st.Latency.P50), ms(st.Latency.P99))
	}

	// The same number of segments, raw, into the same table.
	n := max(res.Segments, 50_000)
	res.CopySegments, res.CopyElapsed, err = e.copySegments(ctx, f.Controller.DBURL, n, cfg.CopyConns, cfg.CopyChunk)
	if err != nil {
		return res, err
	}
	res.CopyPerSecond = float64(res.CopySegments) / res.CopyElapsed.Seconds()
	e.logf("ingest: COPY of %d segments in %s = %.0f/s", res.CopySegments, res.CopyElapsed.Round(time.Millisecond), res.CopyPerSecond)
	return res, nil
}

// copySegments COPYs n segments into transcript_segments of the live
// interviews, in chunks of chunk rows (each one interview's consecutive
// seqs, above any the VMs used) from conns connections at once. The
// harness's user is the cluster's superuser, so row-level security does
// not apply (COPY FROM refuses tables with RLS otherwise); the foreign
// key, the primary key and the checks do.
func (e *Env) copySegments(ctx context.Context, dbURL string, n int64, conns, chunk int) (int64, time.Duration, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, 0, err
	}
	rows, err := conn.Query(ctx, `SELECT id::text, tenant_id::text FROM interviews.interview_sessions
		WHERE status IN ('ready','in_progress') ORDER BY id`)
	if err != nil {
		conn.Close(ctx)
		return 0, 0, err
	}
	type sess struct{ id, tenant string }
	sessions, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (sess, error) {
		var s sess
		return s, r.Scan(&s.id, &s.tenant)
	})
	conn.Close(ctx)
	if err != nil {
		return 0, 0, err
	}
	if len(sessions) == 0 {
		return 0, 0, fmt.Errorf("copy: no live sessions")
	}
	chunks := int((n + int64(chunk) - 1) / int64(chunk))
	seg := Segment(1)
	cols := []string{"session_id", "tenant_id", "seq", "speaker", "text", "item_id", "failed"}
	var copied atomic.Int64
	workers := make([]*pgx.Conn, conns)
	for i := range workers {
		if workers[i], err = pgx.Connect(ctx, dbURL); err != nil {
			return 0, 0, err
		}
		defer workers[i].Close(context.Background())
	}
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for _, c := range workers {
		wg.Go(func() {
			for {
				k := int(next.Add(1) - 1)
				if k >= chunks {
					return
				}
				s := sessions[k%len(sessions)]
				base := int64(1_000_000_000) + int64(k/len(sessions))*int64(chunk)
				src := make([][]any, chunk)
				for i := range src {
					src[i] = []any{s.id, s.tenant, base + int64(i), seg.Speaker, seg.Text, seg.ItemID, false}
				}
				got, err := c.CopyFrom(ctx, pgx.Identifier{"interviews", "transcript_segments"}, cols, pgx.CopyFromRows(src))
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("copy: %w", err)
					}
					mu.Unlock()
					return
				}
				copied.Add(got)
			}
		})
	}
	wg.Wait()
	return copied.Load(), time.Since(start), firstErr
}

// storeIngest drives postgres.DB.AppendTranscript directly (the
// controller's store, without HTTP, JSON or authentication) from one
// goroutine per VM for d, each continuing its session's seqs; params are
// added to the database URL (e.g. a pool size).
func (e *Env) storeIngest(ctx context.Context, dbURL, params string, vms []*SyntheticVM, batch int, d time.Duration) (StoreIngest, error) {
	var res StoreIngest
	if params != "" {
		var err error
		if dbURL, err = addQuery(dbURL, params); err != nil {
			return res, err
		}
	}
	db, err := postgres.Open(ctx, dbURL, slog.New(slog.DiscardHandler))
	if err != nil {
		return res, err
	}
	defer db.Close()
	res.Pool = int(db.Pool.Config().MaxConns)
	var total atomic.Int64
	var lat Samples
	var firstErr atomic.Value
	runCtx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for _, v := range vms {
		wg.Go(func() {
			iv, err := db.Interview(runCtx, session.SystemScope(), v.SessionID)
			if err != nil {
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			seq := iv.AckedSeq
			for runCtx.Err() == nil {
				segs := make([]session.Segment, batch)
				for i := range segs {
					segs[i] = Segment(seq + int64(i) + 1)
				}
				s := time.Now()
				_, err := db.AppendTranscript(runCtx, v.SessionID, segs,
					func(*session.Interview) error { return nil },
					func(*session.Interview) ([]session.Event, error) { return nil, nil })
				if err != nil {
					if runCtx.Err() == nil {
						firstErr.CompareAndSwap(nil, err.Error())
					}
					return
				}
				lat.Add(time.Since(s))
				seq += int64(batch)
				total.Add(int64(batch))
			}
		})
	}
	wg.Wait()
	res.PerSecond = float64(total.Load()) / time.Since(start).Seconds()
	res.Latency = lat.Summary()
	if v, ok := firstErr.Load().(string); ok {
		return res, fmt.Errorf("store ingest: %s", v)
	}
	return res, nil
}
