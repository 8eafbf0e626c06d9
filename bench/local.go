package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/session"
)

// LocalConfig sets case 6 up.
type LocalConfig struct {
	Sequential, Concurrent int
	// Rounds of Concurrent starts at once, each next to a round of the
	// floor, in alternating order (default 1).
	Rounds int
	// Settle is waited before reading the concurrent VMs' memory.
	Settle time.Duration
}

// Local is case 6's result.
type Local struct {
	Sequential, Concurrent         Summary
	FloorSequential, FloorParallel Summary
	// RoundRatios is each concurrent round's p50 over its floor round's.
	RoundRatios []float64
	// Phases is the mean time, over the concurrent starts, from the start
	// request until each provisioning phase ended (the controller's
	// interview_interview_start_phase_seconds): queued (the launch began), machine
	// created, machine started, VM ready.
	Phases map[string]time.Duration
	// Pool is the controller's connection pool over the concurrent
	// rounds; PoolAcquiresPerStart its acquires per start.
	Pool                 PoolStats
	PoolAcquiresPerStart float64
	// VMRSS holds the resident memory of each concurrent VM after Settle.
	VMRSS       []int64
	VMPeak      int64
	Failures    int
	FirstError  string
	VMProcesses int
}

// startPhases are the phases of interview_interview_start_phase_seconds, in order.
var startPhases = []string{"queued", "machine_created", "machine_started", "vm_ready"}

// RunLocal starts interviews on the local provider (PROVIDER=local: one
// real sessionvm child process of the controller per interview), first
// one at a time, then all at once, and measures start → ready; the VMs'
// memory is read from /proc. The floor is the same VM without us:
// sessionvm started directly (its listener inherited as fd 3, as the
// local provider hands it) reporting ready to a StubController, sample
// for sample alternating with ours.
func (e *Env) RunLocal(ctx context.Context, cfg LocalConfig) (Local, error) {
	var res Local
	dbURL, drop, err := e.NewDatabase(ctx, "local")
	if err != nil {
		return res, err
	}
	defer drop()
	c, err := e.StartController(ctx, "local", map[string]string{
		"DATABASE_URL": dbURL, "PROVIDER": "local", "SESSIONVM_BIN": e.SessionVMBin,
	})
	if err != nil {
		return res, err
	}
	defer c.Stop()
	api := NewAPI(c.Base, 64)
	tenant, err := NewTenant()
	if err != nil {
		return res, err
	}
	rounds := max(cfg.Rounds, 1)
	ids, err := api.Seed(ctx, tenant, cfg.Sequential+2+rounds*cfg.Concurrent, 8)
	if err != nil {
		return res, fmt.Errorf("seed interviews: %w", err)
	}
	stub := NewStubController()
	defer stub.Close()
	fail := func(err error) {
		res.Failures++
		if res.FirstError == "" {
			res.FirstError = err.Error()
		}
	}
	cancelAll := func(ids []string) {
		for _, id := range ids {
			if err := api.Cancel(ctx, tenant.Token, id); err != nil {
				fail(err)
			}
		}
		if err := waitFor(ctx, 20*time.Second, "the VM processes to exit", func() bool { return len(ProcessesOf(e.SessionVMBin)) == 0 }); err != nil {
			fail(err)
		}
	}

	// One at a time, alternating with the floor; two warm-up rounds.
	var seq, floorSeq Samples
	for i := range cfg.Sequential + 2 {
		keep := i >= 2
		sides := []func(){
			func() {
				d, err := e.directVM(ctx, stub)
				if err != nil {
					fail(fmt.Errorf("floor: %w", err))
				} else if keep {
					floorSeq.Add(d)
				}
			},
			func() {
				d, err := localStart(ctx, api, tenant, ids[i])
				if err != nil {
					fail(err)
					return
				}
				if keep {
					seq.Add(d)
				}
				if err := api.Cancel(ctx, tenant.Token, ids[i]); err != nil {
					fail(err)
				}
				if err := waitFor(ctx, 15*time.Second, "the VM process to exit", func() bool {
					return len(ProcessesOf(e.SessionVMBin)) == 0
				}); err != nil {
					fail(err)
				}
			},
		}
		if i%2 == 1 {
			sides[0], sides[1] = sides[1], sides[0]
		}
		for _, side := range sides {
			side()
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
	}
	res.Sequential, res.FloorSequential = seq.Summary(), floorSeq.Summary()

	// All at once, in rounds: the floor and ours alternate which goes
	// first; ours are cancelled (and their processes gone) before the next
	// round, except the last round's, whose memory is read below. The last
	// round runs the floor first so that ours are the ones left running.
	var par, floorPar Samples
	var mu sync.Mutex
	base := cfg.Sequential + 2
	phaseSum, phaseCount := map[string]float64{}, map[string]float64{}
	var last []string
	for r := range rounds {
		var floorRound, ourRound Samples
		floor := func() {
			var wg sync.WaitGroup
			for range cfg.Concurrent {
				wg.Go(func() {
					d, err := e.directVM(ctx, stub)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						fail(fmt.Errorf("floor: %w", err))
						return
					}
					floorRound.Add(d)
					floorPar.Add(d)
				})
			}
			wg.Wait()
		}
		ours := func() {
			m0, err := scrapeMetrics(ctx, c.Base)
			if err != nil {
				fail(fmt.Errorf("metrics: %w", err))
			}
			p0, _ := scrapePool(ctx, c.Base)
			batch := ids[base+r*cfg.Concurrent : base+(r+1)*cfg.Concurrent]
			var wg sync.WaitGroup
			for _, id := range batch {
				wg.Go(func() {
					d, err := localStart(ctx, api, tenant, id)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						fail(err)
						return
					}
					ourRound.Add(d)
					par.Add(d)
				})
			}
			wg.Wait()
			m1, err := scrapeMetrics(ctx, c.Base)
			if err != nil {
				fail(fmt.Errorf("metrics: %w", err))
			}
			p1, _ := scrapePool(ctx, c.Base)
			for _, ph := range startPhases {
				key := `{phase="` + ph + `"}`
				phaseSum[ph] += m1["interview_interview_start_phase_seconds_sum"+key] - m0["interview_interview_start_phase_seconds_sum"+key]
				phaseCount[ph] += m1["interview_interview_start_phase_seconds_count"+key] - m0["interview_interview_start_phase_seconds_count"+key]
			}
			d := poolDelta(p0, p1)
			res.Pool.Max = d.Max
			res.Pool.Acquires += d.Acquires
			res.Pool.Waited += d.Waited
			res.Pool.WaitTotal += d.WaitTotal
			last = batch
		}
		if r%2 == 1 && r != rounds-1 {
			ours()
			cancelAll(last)
			floor()
		} else {
			floor()
			ours()
			if r != rounds-1 {
				cancelAll(last)
			}
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if f, o := floorRound.Summary(), ourRound.Summary(); f.P50 > 0 {
			res.RoundRatios = append(res.RoundRatios, float64(o.P50)/float64(f.P50))
		}
	}
	res.Concurrent, res.FloorParallel = par.Summary(), floorPar.Summary()
	res.Phases = map[string]time.Duration{}
	for _, ph := range startPhases {
		if n := phaseCount[ph]; n > 0 {
			res.Phases[ph] = time.Duration(phaseSum[ph] / n * float64(time.Second))
		}
	}
	if res.Pool.Waited > 0 {
		res.Pool.AvgWait = time.Duration(float64(res.Pool.WaitTotal) / res.Pool.Waited)
	}
	if n := par.Len(); n > 0 {
		res.PoolAcquiresPerStart = res.Pool.Acquires / float64(n)
	}

	// Memory of the concurrent VMs, once each has heartbeated.
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(cfg.Settle):
	}
	pids := ProcessesOf(e.SessionVMBin)
	res.VMProcesses = len(pids)
	for _, pid := range pids {
		rss, peak, err := RSS(pid)
		if err != nil {
			continue
		}
		res.VMRSS = append(res.VMRSS, rss)
		res.VMPeak = max(res.VMPeak, peak)
	}
	slices.Sort(res.VMRSS)
	cancelAll(last)
	e.logf("local: sequential p50 %.1f ms p99 %.1f ms (floor p50 %.1f ms); concurrent p50 %.1f ms p99 %.1f ms (floor p50 %.1f ms; ratio per round %s); phases %s; %.1f pool acquires per start, %s; %d VMs, RSS median %.1f MiB max %.1f MiB; failures %d",
		ms(res.Sequential.P50), ms(res.Sequential.P99), ms(res.FloorSequential.P50),
		ms(res.Concurrent.P50), ms(res.Concurrent.P99), ms(res.FloorParallel.P50), ratiosText(res.RoundRatios),
		phasesText(res.Phases), res.PoolAcquiresPerStart, poolText(res.Pool),
		len(res.VMRSS), mib(median(res.VMRSS)), mib(maxOf(res.VMRSS)), res.Failures)
	return res, nil
}

func localStart(ctx context.Context, api *API, t Tenant, id string) (time.Duration, error) {
	start := time.Now()
	st, ans, err := api.Start(ctx, t.Token, id, 60)
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	if st != http.StatusOK || ans.Interview.Status != "ready" {
		return 0, fmt.Errorf("start %s = %d, status %s", id, st, ans.Interview.Status)
	}
	return d, nil
}

// directVM starts sessionvm as the local provider would (its listener as
// fd 3, the session env and PATH only) against the stub, waits for its
// ready report, then stops it (SIGTERM) and reaps it.
func (e *Env) directVM(ctx context.Context, stub *StubController) (time.Duration, error) {
	id := uuid.NewString()
	token := randHex(32)
	ready := stub.Expect(id, token)
	defer stub.Forget(id)
	start := time.Now()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	lnFile, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(e.SessionVMBin)
	cmd.Env = []string{
		session.EnvSessionID + "=" + id, session.EnvSessionToken + "=" + token,
		session.EnvControllerURL + "=" + stub.URL, session.EnvListenFD + "=3", "PATH=" + os.Getenv("PATH"),
		session.EnvSessionConfig + "=" + ConfigEnv(id),
	}
	cmd.ExtraFiles = []*os.File{lnFile}
	cmd.SysProcAttr = childAttr()
	err = cmd.Start()
	lnFile.Close()
	if err != nil {
		return 0, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	select {
	case <-ready:
		return time.Since(start), nil
	case <-time.After(30 * time.Second):
		return 0, fmt.Errorf("sessionvm %s never reported ready", id)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func median(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

func maxOf(v []int64) int64 {
	var m int64
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// ratiosText prints ratios as "1.12, 1.08, 1.15".
func ratiosText(v []float64) string {
	parts := make([]string, len(v))
	for i, r := range v {
		parts[i] = fmt.Sprintf("%.2f", r)
	}
	return strings.Join(parts, ", ")
}

// phasesText prints the mean time to each start phase reached.
func phasesText(p map[string]time.Duration) string {
	var parts []string
	for _, ph := range startPhases {
		if d, ok := p[ph]; ok {
			parts = append(parts, fmt.Sprintf("%s %.0f ms", ph, ms(d)))
		}
	}
	if len(parts) == 0 {
		return "unavailable"
	}
	return strings.Join(parts, ", ")
}
