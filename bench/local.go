package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/session"
)

// LocalConfig sets case 6 up.
type LocalConfig struct {
	Sequential, Concurrent int
	// Settle is waited before reading the concurrent VMs' memory.
	Settle time.Duration
}

// Local is case 6's result.
type Local struct {
	Sequential, Concurrent         Summary
	FloorSequential, FloorParallel Summary
	// VMRSS holds the resident memory of each concurrent VM after Settle.
	VMRSS       []int64
	VMPeak      int64
	Failures    int
	FirstError  string
	VMProcesses int
}

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
	ids, err := api.Seed(ctx, tenant, cfg.Sequential+cfg.Concurrent+2, 8)
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

	// All at once: the floor first, then ours.
	var par, floorPar Samples
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range cfg.Concurrent {
		wg.Go(func() {
			d, err := e.directVM(ctx, stub)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fail(fmt.Errorf("floor: %w", err))
				return
			}
			floorPar.Add(d)
		})
	}
	wg.Wait()
	base := cfg.Sequential + 2
	for i := range cfg.Concurrent {
		wg.Go(func() {
			d, err := localStart(ctx, api, tenant, ids[base+i])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fail(err)
				return
			}
			par.Add(d)
		})
	}
	wg.Wait()
	res.Concurrent, res.FloorParallel = par.Summary(), floorPar.Summary()

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
	for i := range cfg.Concurrent {
		if err := api.Cancel(ctx, tenant.Token, ids[base+i]); err != nil {
			fail(err)
		}
	}
	_ = waitFor(ctx, 20*time.Second, "the VM processes to exit", func() bool { return len(ProcessesOf(e.SessionVMBin)) == 0 })
	e.logf("local: sequential p50 %.1f ms p99 %.1f ms (floor p50 %.1f ms); concurrent p50 %.1f ms p99 %.1f ms (floor p50 %.1f ms); %d VMs, RSS median %.1f MiB max %.1f MiB; failures %d",
		ms(res.Sequential.P50), ms(res.Sequential.P99), ms(res.FloorSequential.P50),
		ms(res.Concurrent.P50), ms(res.Concurrent.P99), ms(res.FloorParallel.P50),
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
