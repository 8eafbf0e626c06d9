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

// ScheduledConfig sets the "scheduled start" case up.
type ScheduledConfig struct {
	// CreateDelay is the fake's placement and image pull; BootDelay its
	// boot.
	CreateDelay, BootDelay time.Duration
	// Samples per side.
	Samples int
}

// Scheduled is the "scheduled start" case's result: start→ready of a
// pre-warmed interview (warm), the boot floor (start an existing stopped
// machine and wait for its VM's ready report, directly), and a cold start
// (create and boot) through the controller.
type Scheduled struct {
	Cfg               ScheduledConfig
	Warm, Floor, Cold Summary
}

// RunScheduled measures the three sides one after the other, each machine
// destroyed before the next sample.
func (e *Env) RunScheduled(ctx context.Context, cfg ScheduledConfig) (Scheduled, error) {
	res := Scheduled{Cfg: cfg}
	runner, err := flymachinestest.NewProcessRunner(flymachinestest.ProcessRunnerConfig{
		Binary: e.SessionVMBin, StopTimeout: 3 * time.Second, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return res, err
	}
	f, err := e.StartFly(ctx, "scheduled", netip.MustParseAddr("127.0.7.2"), []flymachinestest.Option{
		flymachinestest.WithRunner(runner), flymachinestest.WithBootDelay(cfg.BootDelay),
		flymachinestest.WithCreateDelay(cfg.CreateDelay),
	}, map[string]string{"FLY_RATE_LIMIT": "1000", "PREWARM_LEAD": "10m", "RECONCILE_INTERVAL": "200ms"})
	if err != nil {
		_ = runner.Close()
		return res, err
	}
	defer f.Close()
	t, err := NewTenant()
	if err != nil {
		return res, err
	}
	var pos, cand idAnswer
	if _, err := f.API.Do(ctx, "POST", "/v1/positions", t.Token, map[string]any{
		"title": "Backend engineer", "competencies": []map[string]any{{"name": "Go", "weight": 1}},
	}, &pos, http.StatusCreated); err != nil {
		return res, err
	}
	if _, err := f.API.Do(ctx, "POST", "/v1/candidates", t.Token, map[string]any{
		"full_name": "Grace Hopper", "email": "grace@example.com",
	}, &cand, http.StatusCreated); err != nil {
		return res, err
	}
	create := func(scheduled bool) (string, error) {
		body := map[string]any{"candidate_id": cand.ID, "position_id": pos.ID}
		if scheduled {
			body["scheduled_at"] = time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
		}
		var iv idAnswer
		_, err := f.API.Do(ctx, "POST", "/v1/interviews", t.Token, body, &iv, http.StatusCreated)
		return iv.ID, err
	}

	// Warm: every interview scheduled a minute ahead, pre-warmed, then
	// started one by one.
	warmIDs := make([]string, cfg.Samples)
	for i := range warmIDs {
		if warmIDs[i], err = create(true); err != nil {
			return res, err
		}
	}
	for _, id := range warmIDs {
		if err := waitFor(ctx, 2*time.Minute, "interview "+id+" to be pre-warmed", func() bool {
			var iv struct {
				PrewarmedAt *time.Time `json:"prewarmed_at"`
			}
			_, err := f.API.Do(ctx, "GET", "/v1/interviews/"+id, t.Token, nil, &iv, http.StatusOK)
			return err == nil && iv.PrewarmedAt != nil
		}); err != nil {
			return res, err
		}
	}
	var warm, cold, floor Samples
	for _, id := range warmIDs {
		d, err := e.oursStart(ctx, f, t, id)
		if err != nil {
			return res, fmt.Errorf("warm start: %w", err)
		}
		warm.Add(d)
	}
	// Cold: the same start without a schedule.
	for range cfg.Samples {
		id, err := create(false)
		if err != nil {
			return res, err
		}
		d, err := e.oursStart(ctx, f, t, id)
		if err != nil {
			return res, fmt.Errorf("cold start: %w", err)
		}
		cold.Add(d)
	}
	// Floor: boot a machine created beforehand, directly.
	client, err := flymachines.New(flymachines.Config{BaseURL: f.Fake.URL, Token: FlyToken, DisableRateLimit: true})
	if err != nil {
		return res, err
	}
	defer func() { _ = client.Close() }()
	stub := NewStubController()
	defer stub.Close()
	for range cfg.Samples {
		d, err := bootFloor(ctx, client, stub, f, cfg)
		if err != nil {
			return res, fmt.Errorf("boot floor: %w", err)
		}
		floor.Add(d)
	}
	res.Warm, res.Cold, res.Floor = warm.Summary(), cold.Summary(), floor.Summary()
	e.logf("scheduled start: warm p50 %.1f ms p99 %.1f ms; boot floor p50 %.1f ms p99 %.1f ms; cold p50 %.1f ms p99 %.1f ms",
		ms(res.Warm.P50), ms(res.Warm.P99), ms(res.Floor.P50), ms(res.Floor.P99), ms(res.Cold.P50), ms(res.Cold.P99))
	return res, nil
}

// bootFloor creates a machine with skip_launch (untimed), then times its
// start until its VM reports ready; then destroys it.
func bootFloor(ctx context.Context, client *flymachines.Client, stub *StubController, f *FlySetup, cfg ScheduledConfig) (time.Duration, error) {
	id := uuid.NewString()
	token := randHex(32)
	ready := stub.Expect(id, token)
	defer stub.Forget(id)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second+cfg.CreateDelay+cfg.BootDelay)
	defer cancel()
	m, err := client.Create(ctx, FlyFloorApp, flymachines.CreateRequest{
		Name: session.MachineName("hybrid", uuid.NewString(), id), Region: FlyRegion, SkipLaunch: true,
		Config: flymachines.MachineConfig{
			Image: FlyImage,
			Env: map[string]string{
				session.EnvSessionID: id, session.EnvSessionToken: token,
				session.EnvControllerURL: stub.URL, session.EnvSessionPort: strconv.Itoa(f.SessionPort),
			},
			Metadata:    map[string]string{session.MetaSessionID: id},
			AutoDestroy: true,
			Restart:     &flymachines.Restart{Policy: flymachines.RestartNo},
		},
		RecoverKey: session.MetaSessionID,
	})
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := client.Start(ctx, FlyFloorApp, m.ID); err != nil {
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
