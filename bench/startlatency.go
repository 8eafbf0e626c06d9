package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/flymachines"
	"github.com/interviewvm/controlplane/pkg/flymachines/flymachinestest"
	"github.com/interviewvm/controlplane/pkg/session"
)

// StartLatency is case 1 at one boot delay.
type StartLatency struct {
	BootDelay   time.Duration
	Floor, Ours Summary
	Failures    int
	FirstError  string
}

// StartLatencyConfig sets case 1 up.
type StartLatencyConfig struct {
	BootDelays []time.Duration
	// Samples per side and delay, after Warmup discarded ones.
	Samples, Warmup int
}

// RunStartLatency measures POST /start?wait=60 until ready against the
// platform floor, on the fake Fly API whose machines are real sessionvm
// processes (flymachinestest.ProcessRunner), at each boot delay. Floor
// and ours alternate sample by sample, so drift on a shared machine hits
// both alike; each sample's machine is destroyed (its process reaped)
// before the next begins.
//
// Floor: create the machine and wait for "started" directly through the
// flymachines client (no client-side rate limit), plus the VM's ready
// report to a StubController. Ours: the controller does the same through
// its provider, plus its database work, and answers once the VM's ready
// report is recorded.
func (e *Env) RunStartLatency(ctx context.Context, cfg StartLatencyConfig) ([]StartLatency, map[string]string, error) {
	runner, err := flymachinestest.NewProcessRunner(flymachinestest.ProcessRunnerConfig{
		Binary: e.SessionVMBin, StopTimeout: 3 * time.Second,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, nil, err
	}
	f, err := e.StartFly(ctx, "start", netip.MustParseAddr("127.0.1.2"), []flymachinestest.Option{
		flymachinestest.WithRunner(runner), flymachinestest.WithBootDelay(cfg.BootDelays[0]),
	}, map[string]string{
		// Latency, not admission: no client-side queueing (the fake
		// enforces no limit either). Case 2 measures the limits.
		"FLY_RATE_LIMIT": "1000",
	})
	if err != nil {
		_ = runner.Close()
		return nil, nil, err
	}
	defer f.Close()
	settings := pick(f.Controller.Settings, "PROVIDER", "FLY_RATE_LIMIT", "HEARTBEAT_INTERVAL")

	tenant, err := NewTenant()
	if err != nil {
		return nil, nil, err
	}
	per := cfg.Samples + cfg.Warmup
	ids, err := f.API.Seed(ctx, tenant, per*len(cfg.BootDelays), 8)
	if err != nil {
		return nil, nil, fmt.Errorf("seed interviews: %w", err)
	}
	client, err := flymachines.New(flymachines.Config{
		BaseURL: f.Fake.URL, Token: FlyToken, DisableRateLimit: true,
	})
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = client.Close() }()
	stub := NewStubController()
	defer stub.Close()

	var out []StartLatency
	for di, delay := range cfg.BootDelays {
		f.Fake.SetBootDelay(delay)
		res := StartLatency{BootDelay: delay}
		var floor, ours Samples
		fail := func(err error) {
			res.Failures++
			if res.FirstError == "" {
				res.FirstError = err.Error()
			}
		}
		for i := range per {
			id := ids[di*per+i]
			keep := i >= cfg.Warmup
			sides := []func(){
				func() {
					d, err := e.floorStart(ctx, client, stub, f, delay)
					if err != nil {
						fail(fmt.Errorf("floor: %w", err))
					} else if keep {
						floor.Add(d)
					}
				},
				func() {
					d, err := e.oursStart(ctx, f, tenant, id)
					if err != nil {
						fail(fmt.Errorf("ours: %w", err))
					} else if keep {
						ours.Add(d)
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
				return nil, nil, ctx.Err()
			}
			if res.Failures > cfg.Samples/2+1 {
				return nil, nil, fmt.Errorf("start latency at %s: too many failures, first: %s", delay, res.FirstError)
			}
		}
		res.Floor, res.Ours = floor.Summary(), ours.Summary()
		e.logf("start latency, boot %s: floor p50 %.1f ms p99 %.1f ms; ours p50 %.1f ms p99 %.1f ms; failures %d",
			delay, ms(res.Floor.P50), ms(res.Floor.P99), ms(res.Ours.P50), ms(res.Ours.P99), res.Failures)
		out = append(out, res)
	}
	return out, settings, nil
}

// floorStart creates one machine directly and waits for it to run and
// for its VM to report ready; then destroys it.
func (e *Env) floorStart(ctx context.Context, client *flymachines.Client, stub *StubController, f *FlySetup, delay time.Duration) (time.Duration, error) {
	id := uuid.NewString()
	token := randHex(32)
	ready := stub.Expect(id, token)
	defer stub.Forget(id)
	req := flymachines.CreateRequest{
		Name:   session.MachineName("hybrid", uuid.NewString(), id),
		Region: FlyRegion,
		Config: flymachines.MachineConfig{
			Image: FlyImage,
			Env: map[string]string{
				session.EnvSessionID: id, session.EnvSessionToken: token,
				session.EnvControllerURL: stub.URL, session.EnvSessionPort: strconv.Itoa(f.SessionPort),
				session.EnvSessionConfig: ConfigEnv(id),
			},
			Metadata:    map[string]string{session.MetaSessionID: id},
			AutoDestroy: true,
			Restart:     &flymachines.Restart{Policy: flymachines.RestartNo},
		},
		RecoverKey: session.MetaSessionID,
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second+delay)
	defer cancel()
	start := time.Now()
	m, err := client.Create(ctx, FlyFloorApp, req)
	if err != nil {
		return 0, err
	}
	if err := client.Wait(ctx, FlyFloorApp, m.ID, flymachines.WaitOptions{State: flymachines.StateStarted}); err != nil {
		return 0, err
	}
	select {
	case <-ready:
	case <-ctx.Done():
		return 0, fmt.Errorf("VM of machine %s never reported ready", m.ID)
	}
	d := time.Since(start)
	if err := client.Destroy(ctx, FlyFloorApp, m.ID, true); err != nil {
		return d, err
	}
	return d, waitFor(ctx, 15*time.Second, "the floor machine to be destroyed", func() bool {
		got, _ := f.Fake.Machine(FlyFloorApp, m.ID)
		return got.State == "destroyed"
	})
}

// oursStart starts one interview through the controller and waits for it
// to be ready; then cancels it and waits until its machine is destroyed.
func (e *Env) oursStart(ctx context.Context, f *FlySetup, t Tenant, id string) (time.Duration, error) {
	start := time.Now()
	st, ans, err := f.API.Start(ctx, t.Token, id, 60)
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	if st != http.StatusOK || ans.Interview.Status != "ready" || ans.Interview.Machine == nil {
		return 0, fmt.Errorf("start %s = %d, status %s", id, st, ans.Interview.Status)
	}
	mid := ans.Interview.Machine.ID
	if err := f.API.Cancel(ctx, t.Token, id); err != nil {
		return d, err
	}
	return d, waitFor(ctx, 15*time.Second, "the interview's machine to be destroyed", func() bool {
		got, _ := f.Fake.Machine(FlyApp, mid)
		return got.State == "destroyed"
	})
}

// pick returns the named entries of m.
func pick(m map[string]string, keys ...string) map[string]string {
	out := map[string]string{}
	for _, k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		} else {
			out[k] = "(default)"
		}
	}
	return out
}
