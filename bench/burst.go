package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/interviewvm/controlplane/pkg/flymachines/flymachinestest"
)

// BurstConfig sets case 2 up.
type BurstConfig struct {
	// Sizes are the bursts run, each against its own fresh controller and
	// fake (full buckets on both sides): how many starts are fired at
	// once.
	Sizes []int
	// Tenants the interviews are spread over.
	Tenants int
	// RateScale multiplies Fly's rates (1 request/s per action) on both
	// sides, the fake's limit and the controller's FLY_RATE_LIMIT; bursts
	// stay Fly's. 1 is Fly as documented; more makes a quick run.
	RateScale float64
	// BootDelay of every machine.
	BootDelay time.Duration
}

// Burst is case 2's result.
type Burst struct {
	Starts, Failures int
	FirstError       string
	// AllReady is the time from firing the starts until the last is
	// ready; Minimum is what Fly's create limit allows for the same
	// starts: the creates beyond the burst at the limit's rate, then one
	// boot.
	AllReady, Minimum time.Duration
	// Latency is each start's time until ready.
	Latency Summary
	// Answers429 is how many of the fake's answers were 429.
	Answers429 int
	// Creates is how many creates the fake received.
	Creates int
	// TxPerStart is the database's committed transactions during the
	// burst, per start.
	TxPerStart float64
	Settings   map[string]string
}

// RunBurst fires starts starts at once against the fake enforcing
// Fly's rate limits (1 request/s per action and app or machine, burst 3;
// get 5/s, burst 10), scaled by RateScale. Machines run no process: a
// SyntheticVMs runner reports ready the moment a machine starts, and
// heartbeats. Each start is POST /start?wait=60, repeated while the
// answer is 202 (an idempotent join), until ready or failed.
func (e *Env) RunBurst(ctx context.Context, cfg BurstConfig, starts int) (Burst, error) {
	vms := NewSyntheticVMs(256)
	vms.Heartbeat = true
	action, get := flymachinestest.FlyLimits()
	action.Rate *= cfg.RateScale
	get.Rate *= cfg.RateScale
	env := map[string]string{}
	if cfg.RateScale != 1 {
		env["FLY_RATE_LIMIT"] = strconv.FormatFloat(cfg.RateScale, 'f', -1, 64)
	}
	f, err := e.StartFly(ctx, "burst", netip.MustParseAddr("127.0.8.2"), []flymachinestest.Option{
		flymachinestest.WithRunner(vms), flymachinestest.WithBootDelay(cfg.BootDelay),
		flymachinestest.WithRateLimits(action, get),
	}, env)
	if err != nil {
		_ = vms.Close()
		return Burst{}, err
	}
	defer f.Close()
	res := Burst{Starts: starts, Settings: pick(f.Controller.Settings, "FLY_RATE_LIMIT", "PROVISION_TIMEOUT", "HEARTBEAT_INTERVAL")}

	tenants, ids, err := f.API.SeedTenants(ctx, cfg.Tenants, (starts+cfg.Tenants-1)/cfg.Tenants, 32)
	if err != nil {
		return res, fmt.Errorf("seed interviews: %w", err)
	}
	type job struct {
		t  Tenant
		id string
	}
	var jobs []job
	for i, t := range tenants {
		for _, id := range ids[i] {
			if len(jobs) < starts {
				jobs = append(jobs, job{t, id})
			}
		}
	}
	e.logf("burst: %d starts at once (Fly's create limit %.3g/s, burst %d)", len(jobs), action.Rate, action.Burst)

	tx0, err := xactCommits(ctx, f.Controller.DBURL)
	if err != nil {
		return res, err
	}
	var lat Samples
	var failures atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	gate := make(chan struct{})
	var last time.Time
	for _, j := range jobs {
		wg.Go(func() {
			<-gate
			s := time.Now()
			err := f.API.StartReady(ctx, j.t.Token, j.id, 60)
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures.Add(1)
				if res.FirstError == "" {
					res.FirstError = err.Error()
				}
				return
			}
			lat.Add(now.Sub(s))
			if now.After(last) {
				last = now
			}
		})
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	res.AllReady = last.Sub(start)
	if tx1, err := xactCommits(ctx, f.Controller.DBURL); err == nil {
		res.TxPerStart = float64(tx1-tx0) / float64(len(jobs))
	}
	res.Failures = int(failures.Load())
	res.Latency = lat.Summary()
	beyond := max(0, len(jobs)-action.Burst)
	res.Minimum = time.Duration(math.Round(float64(beyond)/action.Rate*float64(time.Second))) + cfg.BootDelay
	res.Answers429 = f.Fake.StatusCount(http.StatusTooManyRequests)
	res.Creates = f.Fake.CallCount(flymachinestest.OpCreate)
	if vms.Errors.Load() > 0 {
		e.logf("burst: synthetic VMs met %d errors, last: %s", vms.Errors.Load(), vms.LastError())
	}
	e.logf("burst: all %d ready after %s (minimum %s), failures %d, 429 answers %d, %.0f database transactions per start",
		len(jobs)-res.Failures, res.AllReady.Round(time.Millisecond), res.Minimum, res.Failures, res.Answers429, res.TxPerStart)
	if res.Failures == len(jobs) {
		return res, errors.New("burst: every start failed: " + res.FirstError)
	}
	return res, nil
}
