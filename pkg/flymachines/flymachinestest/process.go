//go:build unix

package flymachinestest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/interviewvm/controlplane/pkg/childproc"
)

// Environment variables a ProcessRunner sets or reads, by the convention of
// the session VM (sessionvm): it listens on LISTEN_ADDR when set, and the
// machine's config may carry SESSION_PORT.
const (
	envListenAddr  = "LISTEN_ADDR"
	envSessionPort = "SESSION_PORT"
)

// Defaults of ProcessRunnerConfig.
const (
	DefaultProcessPort        = 8080
	DefaultProcessStopTimeout = 5 * time.Second
)

// ErrRunnerClosed is returned by ProcessRunner.Start after Close.
var ErrRunnerClosed = errors.New("flymachinestest: process runner is closed")

// ProcessRunnerConfig configures a ProcessRunner.
type ProcessRunnerConfig struct {
	// Binary is the executable every machine runs, whatever its image:
	// typically a sessionvm the test built. Required.
	Binary string
	// Logger receives the runner's lines and every line a process writes
	// to stdout or stderr, with the machine's id and name. Default: discard.
	Logger *slog.Logger
	// Env is added to every process's environment, the way Fly adds the
	// app's secrets to every machine. The machine's config env and the FLY_*
	// variables win over it.
	Env map[string]string
	// Port is where a process listens, on its machine's private IP, when
	// the machine's env has no SESSION_PORT. Default DefaultProcessPort.
	Port int
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	// Default DefaultProcessStopTimeout.
	StopTimeout time.Duration
}

// ProcessRunner is a Runner that runs each booted machine as a real process
// of one binary, so that a system built on the fake runs end to end on one
// host: with the session VM as Binary, every machine the fake starts is a
// live sessionvm on the machine's own loopback address.
//
// A process's environment is exactly: Config.Env, the machine's config env,
// the FLY_* variables Fly sets (RunMachine.Env), LISTEN_ADDR set to
// private_ip:SESSION_PORT (as a platform would bind a VM's service to its
// address), and PATH (the test's, unless set). Nothing else of the test
// process's environment leaks in.
//
// Processes never outlive the runner: each runs in its own process group
// (so Stop signals all of it), is reaped by the runner, and on Linux gets
// SIGKILL from the kernel if the test process dies (Pdeathsig, see
// childproc.Forker).
// Stop sends SIGTERM, then SIGKILL after StopTimeout. A process that exits
// on its own is reported through RunMachine.Exited, so the fake applies the
// machine's restart policy and auto_destroy, as Fly does.
//
// Create it with NewProcessRunner and hand it to WithRunner: Server.Close
// stops every process and closes the runner.
type ProcessRunner struct {
	binary      string
	log         *slog.Logger
	env         map[string]string
	port        int
	stopTimeout time.Duration

	forker *childproc.Forker // closed by Close once every process is gone
	once   sync.Once

	mu     sync.Mutex
	closed bool
	procs  map[procKey]*childproc.Process // removed once reaped
}

type procKey struct {
	id   string
	boot int
}

// NewProcessRunner returns a ProcessRunner. It starts one goroutine (the
// forker, see childproc.Forker); Close stops it.
func NewProcessRunner(cfg ProcessRunnerConfig) (*ProcessRunner, error) {
	if cfg.Binary == "" {
		return nil, errors.New("flymachinestest: process runner needs a binary")
	}
	port := cfg.Port
	if port == 0 {
		port = DefaultProcessPort
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("flymachinestest: process runner port %d out of range", port)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stopTimeout := cfg.StopTimeout
	if stopTimeout <= 0 {
		stopTimeout = DefaultProcessStopTimeout
	}
	r := &ProcessRunner{
		binary:      cfg.Binary,
		log:         log.With("component", "flymachinestest.runner"),
		env:         maps.Clone(cfg.Env),
		port:        port,
		stopTimeout: stopTimeout,
		forker:      childproc.New(),
		procs:       make(map[procKey]*childproc.Process),
	}
	return r, nil
}

// Start implements Runner: it starts the machine's process and returns once
// it runs (not once it listens: like Fly's "started", that is the app's
// business).
func (r *ProcessRunner) Start(ctx context.Context, m RunMachine) error {
	env, addr, err := r.environ(m)
	if err != nil {
		return fmt.Errorf("start machine %s: %w", m.ID, err)
	}
	cmd := exec.Command(r.binary)
	cmd.Env = env
	log := r.log.With("machine_id", m.ID, "machine_name", m.Name)
	key := procKey{m.ID, m.Boot}

	// Registration happens under the lock Close takes to collect the
	// processes, so none is started behind its back.
	r.mu.Lock()
	defer r.mu.Unlock()
	var p *childproc.Process
	switch {
	case r.closed:
		err = ErrRunnerClosed
	case r.procs[key] != nil:
		err = errors.New("already running")
	default:
		p, err = r.forker.Start(ctx, cmd, childproc.Options{
			Log:       log,
			OutputMsg: "vm output",
			OnExit:    func(e childproc.Exit) { r.exited(log, key, e, m.Exited) },
		})
	}
	if err != nil {
		return fmt.Errorf("start machine %s: %s: %w", m.ID, r.binary, err)
	}
	r.procs[key] = p
	log.Info("machine process started", "pid", p.Pid(), "listen_addr", addr)
	return nil
}

// Stop implements Runner: SIGTERM to the process group, SIGKILL after
// StopTimeout, and it returns once the process is reaped. A process that is
// already gone is stopped.
func (r *ProcessRunner) Stop(ctx context.Context, m RunMachine) error {
	r.mu.Lock()
	p := r.procs[procKey{m.ID, m.Boot}]
	r.mu.Unlock()
	if p == nil {
		return nil
	}
	if err := p.Stop(ctx, r.stopTimeout); err != nil {
		return fmt.Errorf("stop machine %s: %w", m.ID, err)
	}
	return nil
}

// Close stops every process still running, then the runner's goroutines.
// Start fails afterwards. Server.Close calls it.
func (r *ProcessRunner) Close() error {
	r.once.Do(func() {
		r.mu.Lock()
		r.closed = true
		procs := slices.Collect(maps.Values(r.procs))
		r.mu.Unlock()
		var wg sync.WaitGroup
		for _, p := range procs {
			wg.Go(func() { _ = p.Stop(context.Background(), r.stopTimeout) })
		}
		wg.Wait()
		r.forker.Close()
	})
	return nil
}

// PIDs returns the process id of every machine whose process runs, by
// machine id.
func (r *ProcessRunner) PIDs() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.procs))
	for k, p := range r.procs {
		if !p.Exited() {
			out[k.id] = p.Pid()
		}
	}
	return out
}

// exited forgets a reaped process and reports an exit nobody asked for to
// the fake.
func (r *ProcessRunner) exited(log *slog.Logger, key procKey, e childproc.Exit, report func(code int)) {
	r.mu.Lock()
	delete(r.procs, key)
	r.mu.Unlock()
	if e.Stopped {
		log.Info("machine process stopped", e.Attrs()...)
		return
	}
	log.Info("machine process exited on its own", e.Attrs()...)
	if report != nil {
		report(e.Code)
	}
}

// environ is a process's whole environment, sorted, and its listen address.
func (r *ProcessRunner) environ(m RunMachine) ([]string, string, error) {
	if m.PrivateIP == "" {
		return nil, "", errors.New("machine has no private IP")
	}
	env := maps.Clone(r.env)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, m.Env)
	port := strconv.Itoa(r.port)
	if v := env[envSessionPort]; v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 65535 {
			return nil, "", fmt.Errorf("%s=%q is not a port", envSessionPort, v)
		}
		port = v
	}
	addr := net.JoinHostPort(m.PrivateIP, port)
	env[envListenAddr] = addr
	return childproc.Environ(env), addr, nil
}
