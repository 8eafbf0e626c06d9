package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/interviewvm/controlplane/pkg/flymachines/flymachinestest"
)

// The fake Fly Machines API the harness runs: one token, the apps of the
// controller and of the floor.
const (
	FlyToken    = "FlyV1 fm2_bench-token"
	FlyApp      = "bench-sessions"
	FlyFloorApp = "bench-floor"
	FlyImage    = "registry.fly.io/bench-sessions:bench"
	FlyRegion   = "ams"
)

// FlySetup is a fake Fly API plus the controller on it.
type FlySetup struct {
	Fake        *flymachinestest.Server
	Controller  *Controller
	API         *API
	SessionPort int
	dropDB      func()
	closeLog    func()
}

// StartFly starts the fake (with opts, after the token, the apps and
// firstIP) and a controller with PROVIDER=fly on it and a fresh database;
// env is added to the controller's environment.
func (e *Env) StartFly(ctx context.Context, label string, firstIP netip.Addr, opts []flymachinestest.Option, env map[string]string) (*FlySetup, error) {
	dbURL, drop, err := e.NewDatabase(ctx, label)
	if err != nil {
		return nil, err
	}
	logw, closeLog, err := e.logFile(label + "-fake.log")
	if err != nil {
		drop()
		return nil, err
	}
	fake := flymachinestest.NewServer(append([]flymachinestest.Option{
		flymachinestest.WithToken(FlyToken),
		flymachinestest.WithApps(FlyApp, FlyFloorApp),
		flymachinestest.WithRegion(FlyRegion),
		flymachinestest.WithFirstIP(firstIP),
		flymachinestest.WithLogger(slog.New(slog.NewJSONHandler(logw, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	}, opts...)...)
	port, err := FreePort()
	if err != nil {
		fake.Close()
		closeLog()
		drop()
		return nil, err
	}
	all := map[string]string{
		"DATABASE_URL":  dbURL,
		"PROVIDER":      "fly",
		"FLY_API_URL":   fake.URL,
		"FLY_API_TOKEN": FlyToken,
		"FLY_APP":       FlyApp,
		"FLY_REGION":    FlyRegion,
		"SESSION_IMAGE": FlyImage,
		"SESSION_PORT":  strconv.Itoa(port),
	}
	maps.Copy(all, env)
	c, err := e.StartController(ctx, label, all)
	if err != nil {
		fake.Close()
		closeLog()
		drop()
		return nil, err
	}
	return &FlySetup{Fake: fake, Controller: c, API: NewAPI(c.Base, 512), SessionPort: port, dropDB: drop, closeLog: closeLog}, nil
}

// Close stops the machines first (so VMs report to a live controller),
// then the controller, and drops the database.
func (f *FlySetup) Close() {
	f.Fake.Close()
	f.Controller.Stop()
	f.closeLog()
	f.dropDB()
}

// logFile opens OutDir/name for writing.
func (e *Env) logFile(name string) (io.Writer, func(), error) {
	if err := os.MkdirAll(e.OutDir, 0o755); err != nil {
		return nil, nil, err
	}
	f, err := os.Create(filepath.Join(e.OutDir, name))
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

// waitFor polls cond every 20 ms until it holds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
