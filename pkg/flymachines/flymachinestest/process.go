//go:build unix

package flymachinestest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
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

// maxLine bounds one forwarded line of a process's output; longer lines are
// forwarded in pieces.
const maxLine = 64 << 10

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
// SIGKILL from the kernel if the test process dies (Pdeathsig, see forker).
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

	forks chan forkRequest
	stop  chan struct{} // closed by Close once every process is gone
	wg    sync.WaitGroup
	once  sync.Once

	mu     sync.Mutex
	closed bool
	procs  map[procKey]*process
}

type procKey struct {
	id   string
	boot int
}

// process is one machine's boot. key, name, cmd and pid never change; the
// rest is guarded by ProcessRunner.mu.
type process struct {
	key  procKey
	name string
	cmd  *exec.Cmd
	pid  int

	stopping bool // Stop was called: the exit is expected
	exited   bool // exited (perhaps not reaped yet): its pid may be reused, never signal it
	done     chan struct{}
}

type forkRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// NewProcessRunner returns a ProcessRunner. It starts one goroutine (the
// forker); Close stops it.
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
		forks:       make(chan forkRequest),
		stop:        make(chan struct{}),
		procs:       make(map[procKey]*process),
	}
	r.wg.Add(1)
	go r.forker()
	return r, nil
}

// forker starts every process, from one goroutine locked to its OS thread
// for the runner's whole life.
//
// The parent-death signal is delivered when the OS thread that forked the
// child exits, not when the process does, and the Go runtime ends an OS
// thread whenever a goroutine locked to it exits. A child forked from an
// arbitrary goroutine's thread could thus be killed at a random later
// moment. Forking only from this locked, long-lived thread ties every child
// to the runner: the thread ends when Close has stopped all of them (the
// goroutine exits still locked, which ends the thread) or when the test
// process dies.
func (r *ProcessRunner) forker() {
	defer r.wg.Done()
	runtime.LockOSThread()
	for {
		select {
		case req := <-r.forks:
			req.done <- req.cmd.Start()
		case <-r.stop:
			return
		}
	}
}

func (r *ProcessRunner) fork(ctx context.Context, cmd *exec.Cmd) error {
	req := forkRequest{cmd: cmd, done: make(chan error, 1)}
	select {
	case r.forks <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-r.stop:
		return ErrRunnerClosed
	}
	return <-req.done
}

// Start implements Runner: it starts the machine's process and returns once
// it runs (not once it listens: like Fly's "started", that is the app's
// business).
func (r *ProcessRunner) Start(ctx context.Context, m RunMachine) error {
	env, addr, err := r.environ(m)
	if err != nil {
		return fmt.Errorf("start machine %s: %w", m.ID, err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start machine %s: stdout pipe: %w", m.ID, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return fmt.Errorf("start machine %s: stderr pipe: %w", m.ID, err)
	}
	cmd := exec.Command(r.binary)
	cmd.Env = env
	cmd.Stdout = outW
	cmd.Stderr = errW
	cmd.SysProcAttr = sysProcAttr()

	// Registration happens under the lock Close takes to collect the
	// processes, so none is started behind its back.
	r.mu.Lock()
	defer r.mu.Unlock()
	key := procKey{m.ID, m.Boot}
	switch {
	case r.closed:
		err = ErrRunnerClosed
	case r.procs[key] != nil:
		err = errors.New("already running")
	default:
		err = r.fork(ctx, cmd)
	}
	// The child holds its own copies now; the write ends close when it
	// (and anything it spawned) exits, which ends the forwarders.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return fmt.Errorf("start machine %s: %s: %w", m.ID, r.binary, err)
	}
	p := &process{key: key, name: m.Name, cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	r.procs[key] = p
	log := r.log.With("machine_id", m.ID, "machine_name", m.Name)
	log.Info("machine process started", "pid", p.pid, "listen_addr", addr)
	r.wg.Add(3)
	go r.forward(log, "stdout", outR)
	go r.forward(log, "stderr", errR)
	go r.reap(log, p, m.Exited)
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
	if err := r.stopProcess(ctx, p); err != nil {
		return fmt.Errorf("stop machine %s: %w", m.ID, err)
	}
	return nil
}

func (r *ProcessRunner) stopProcess(ctx context.Context, p *process) error {
	r.mu.Lock()
	p.stopping = true
	r.signalLocked(p, syscall.SIGTERM)
	r.mu.Unlock()

	timer := time.NewTimer(r.stopTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		r.kill(p)
	case <-timer.C:
		r.log.Warn("machine process did not stop in time; killing it", "machine_id", p.key.id,
			"machine_name", p.name, "pid", p.pid, "stop_timeout", r.stopTimeout.String())
		r.kill(p)
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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
			wg.Go(func() { _ = r.stopProcess(context.Background(), p) })
		}
		wg.Wait()
		close(r.stop)
		r.wg.Wait()
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
		if !p.exited {
			out[k.id] = p.pid
		}
	}
	return out
}

// reap waits for p to exit, reaps it exactly once, and reports an exit
// nobody asked for to the fake.
func (r *ProcessRunner) reap(log *slog.Logger, p *process, exited func(code int)) {
	defer r.wg.Done()
	// Where the platform allows, learn of the exit before reaping, so that
	// no signal is ever sent to the pid (or its group) once it may be
	// reused. Elsewhere the window is between Wait and the lock below.
	if waitExited(p.pid) {
		r.mu.Lock()
		p.exited = true
		r.mu.Unlock()
	}
	waitErr := p.cmd.Wait()
	r.mu.Lock()
	p.exited = true
	expected := p.stopping
	delete(r.procs, p.key)
	r.mu.Unlock()
	close(p.done)

	code := exitCode(p.cmd.ProcessState)
	attrs := []any{"pid", p.pid, "exit_code", code}
	if ps := p.cmd.ProcessState; ps != nil {
		attrs = append(attrs, "exit", ps.String())
	} else if waitErr != nil {
		attrs = append(attrs, "error", waitErr)
	}
	if expected {
		log.Info("machine process stopped", attrs...)
		return
	}
	log.Info("machine process exited on its own", attrs...)
	if exited != nil {
		exited(code)
	}
}

// exitCode is the process's exit code, or 128+signal when a signal ended
// it, as a shell reports it.
func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

func (r *ProcessRunner) kill(p *process) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.signalLocked(p, syscall.SIGKILL)
}

// signalLocked sends sig to p's process group, unless p exited: then its
// pid may be reused and nothing is sent.
func (r *ProcessRunner) signalLocked(p *process, sig syscall.Signal) {
	if p.exited {
		return
	}
	// The child leads its own group (Setpgid): pgid == pid.
	if err := syscall.Kill(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		r.log.Warn("signal machine process", "machine_id", p.key.id, "signal", sig.String(), "error", err)
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
	if _, ok := env["PATH"]; !ok {
		path := os.Getenv("PATH")
		if path == "" {
			path = "/usr/local/bin:/usr/bin:/bin"
		}
		env["PATH"] = path
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out, addr, nil
}

// forward logs each line r yields until r ends: when the process and
// everything it spawned have exited.
func (r *ProcessRunner) forward(log *slog.Logger, stream string, rc io.ReadCloser) {
	defer r.wg.Done()
	defer rc.Close()
	log = log.With("stream", stream)
	br := bufio.NewReaderSize(rc, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if line = bytes.TrimRight(line, "\r\n"); len(line) > 0 {
			log.Log(context.Background(), levelOf(line), "vm output", "line", string(line))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// levelOf returns the level of a JSON log line (slog's "level" field), or
// Info.
func levelOf(line []byte) slog.Level {
	if len(line) == 0 || line[0] != '{' {
		return slog.LevelInfo
	}
	var v struct {
		Level string `json:"level"`
	}
	var l slog.Level
	if json.Unmarshal(line, &v) != nil || l.UnmarshalText([]byte(v.Level)) != nil {
		return slog.LevelInfo
	}
	return l
}
