package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/pprof"

	"github.com/interviewvm/controlplane/pkg/controller"
)

// ProfileLabel is the pprof label key of the in-process controller's
// goroutines; its value is ProfileLabelValue. Every goroutine the
// controller starts inherits it, so a profile of the whole harness can be
// narrowed to the controller with -tagfocus=side=controller.
const (
	ProfileLabel      = "side"
	ProfileLabelValue = "controller"
)

// startInProcess runs the controller inside the harness through
// pkg/controller, the very code bin/controller serve runs, with the
// settings of env and the controller's defaults for the rest. It exists
// for profiling: the measured runs use the real binary.
func startInProcess(ctx context.Context, env map[string]string, logw io.Writer) (*Controller, error) {
	cfg, err := controller.LoadConfig("bench in-process controller", nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		return nil, fmt.Errorf("in-process controller: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("in-process controller: invalid configuration:\n%w", err)
	}
	logger, err := controller.NewLogger(cfg, logw)
	if err != nil {
		return nil, fmt.Errorf("in-process controller: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go pprof.Do(runCtx, pprof.Labels(ProfileLabel, ProfileLabelValue), func(ctx context.Context) {
		done <- controller.Serve(ctx, cfg, logger, ready)
	})
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("in-process controller: %w", err)
	case <-ctx.Done():
		cancel()
		if err := <-done; err != nil {
			logger.Warn("in-process controller stopped before it listened", "error", err)
		}
		return nil, ctx.Err()
	}
	// Its memory and CPU are the harness's: PID is this process.
	c := &Controller{Base: "http://" + addr, Settings: env, PID: os.Getpid()}
	c.stop = func() {
		cancel()
		if err := <-done; err != nil {
			logger.Warn("in-process controller stopped", "error", err)
		}
	}
	return c, nil
}
