package controller

import (
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/interviewvm/controlplane/pkg/flymachines"
	"github.com/interviewvm/controlplane/pkg/flyvm"
	"github.com/interviewvm/controlplane/pkg/localvm"
	"github.com/interviewvm/controlplane/pkg/provision"
)

// newMachines builds the machine provider cfg.Provider names, and the
// function that releases it when the controller stops:
//
//   - local: session VMs are child processes; closing destroys them all.
//   - fly: session VMs are Fly Machines of FLY_APP, reached at
//     [private_ip]:SESSION_PORT over the private network; closing only
//     releases connections. Machines outlive a controller restart and go on
//     running their interviews.
//
// The Fly client's metrics (flymachines_*) are registered on reg.
func newMachines(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (provision.Machines, func() error, error) {
	switch cfg.Provider {
	case "local":
		// The realtime key reaches the VMs as a platform secret would, never
		// through a machine spec.
		secrets := map[string]string{}
		if cfg.OpenAIAPIKey != "" {
			secrets["OPENAI_API_KEY"] = cfg.OpenAIAPIKey
		}
		if cfg.OpenAIBaseURL != "" {
			secrets["OPENAI_BASE_URL"] = cfg.OpenAIBaseURL
		}
		p := localvm.New(localvm.Config{
			Binary: cfg.sessionVMBinary(), Logger: logger.With("component", "localvm"), Region: "local",
			Secrets: secrets,
		})
		return p, p.Close, nil
	case "fly":
		return newFlyMachines(cfg, logger, reg)
	}
	return nil, nil, fmt.Errorf("unknown machine provider %q", cfg.Provider)
}

func newFlyMachines(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (provision.Machines, func() error, error) {
	// FLY_RATE_LIMIT is per action and per machine (or app, for creates
	// and lists), as Fly counts, with Fly's burst of 3; getting a machine
	// is allowed five times as often, burst 10. The client keeps 200 ms of
	// each bucket's refill in hand against jitter between our bucket and
	// Fly's (flymachines.DefaultRateMargin).
	perSecond := rate.Limit(cfg.FlyRateLimit)
	client, err := flymachines.New(flymachines.Config{
		BaseURL:     cfg.FlyAPIURL,
		Token:       cfg.FlyAPIToken,
		Logger:      logger.With("component", "flymachines"),
		ActionLimit: flymachines.Limit{Rate: perSecond, Burst: 3},
		GetLimit:    flymachines.Limit{Rate: 5 * perSecond, Burst: 10},
		Registerer:  reg,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("fly provider: %w", err)
	}
	p, err := flyvm.New(flyvm.Config{
		Client:      client,
		App:         cfg.FlyApp,
		Image:       cfg.SessionImage,
		Region:      cfg.FlyRegion,
		SessionPort: cfg.SessionPort,
		Logger:      logger,
	})
	if err != nil {
		_ = client.Close()
		return nil, nil, fmt.Errorf("fly provider: %w", err)
	}
	logger.Info("fly machine provider", "api_url", cfg.FlyAPIURL, "app", cfg.FlyApp, "image", cfg.SessionImage,
		"region", cfg.FlyRegion, "session_port", cfg.SessionPort, "rate_limit_per_s", cfg.FlyRateLimit)
	return p, client.Close, nil
}
