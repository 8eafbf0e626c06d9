//go:build unix

// Package childproc runs child processes that never outlive their parent
// and are stopped as a whole: the process handling shared by the local
// machine provider (localvm) and the fake Fly API's ProcessRunner, which
// both run one sessionvm per machine.
//
// A Forker starts every child from one goroutine locked to its OS thread
// for the Forker's whole life, because the parent-death signal is tied to
// that thread (see Forker). Each child:
//
//   - leads its own process group, so Stop signals everything it runs;
//   - on Linux, gets SIGKILL from the kernel when the forking thread ends:
//     when the parent process dies, or when the Forker is closed;
//   - has its stdout and stderr forwarded, line by line, to a slog logger,
//     at the level of the line when it is a JSON slog line;
//   - is reaped exactly once by the Forker. On Linux the reaper learns of
//     the exit before reaping (waitid with WNOWAIT), so no signal is ever
//     sent to a pid, or a group, that may have been reused.
//
// Stop sends SIGTERM to the group, then SIGKILL after a timeout.
package childproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// ErrClosed is returned by Forker.Start after Close.
var ErrClosed = errors.New("childproc: forker is closed")

// Forker starts child processes and reaps them. Create it with New and
// Close it once its processes are stopped. It is safe for concurrent use.
//
// The parent-death signal (Pdeathsig) is delivered when the OS thread that
// forked the child exits, not when the process does, and the Go runtime
// ends an OS thread whenever a goroutine locked to it exits. A child forked
// from an arbitrary goroutine's thread could thus be SIGKILLed at a random
// later moment, long before its parent dies. The Forker forks only from
// one goroutine, locked to its thread until Close (it then exits still
// locked, which ends the thread), which ties every child to the Forker.
// That thread is never the process's main thread, which the runtime does
// not end.
type Forker struct {
	reqs chan forkRequest
	stop chan struct{} // closed by Close
	// wg counts the forker goroutine and every process's reaper and output
	// forwarders. The forker adds a started process's goroutines while it
	// still counts itself, so the count never reaches zero before Close.
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type forkRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// New returns a Forker. It starts one goroutine, the forker; Close stops
// it.
func New() *Forker {
	f := &Forker{reqs: make(chan forkRequest), stop: make(chan struct{})}
	f.wg.Add(1)
	go f.forker(nil)
	return f
}

// forker runs the forker goroutine; it closes locked, when not nil, once
// it is locked to a thread that is not the main thread.
func (f *Forker) forker(locked chan<- struct{}) {
	defer f.wg.Done()
	runtime.LockOSThread()
	if onMainThread() {
		// The runtime parks the main thread instead of ending it when a
		// goroutine locked to it exits. Hand over to a new goroutine, which
		// cannot run on this thread while this one holds it.
		moved := make(chan struct{})
		f.wg.Add(1)
		go f.forker(moved)
		<-moved
		runtime.UnlockOSThread()
		return
	}
	if locked != nil {
		close(locked)
	}
	for {
		select {
		case req := <-f.reqs:
			err := req.cmd.Start()
			if err == nil {
				f.wg.Add(3) // the reaper and two forwarders Start runs
			}
			req.done <- err
		case <-f.stop:
			return
		}
	}
}

// Close stops the forker and waits until every process it started is
// reaped and its output forwarded to the end. Stop the processes first: on
// Linux, one still running is killed by its parent-death signal when the
// forker's thread ends; elsewhere Close waits for it to exit. Start fails
// with ErrClosed afterwards. Close may be called more than once.
func (f *Forker) Close() {
	f.closeOnce.Do(func() { close(f.stop) })
	f.wg.Wait()
}

// Options are the options of one process.
type Options struct {
	// Log receives every line the process writes to stdout or stderr (with
	// "stream" and "line") and the Forker's own lines about the process.
	// Give it the attributes that say which process it is. Default:
	// discard.
	Log *slog.Logger
	// OutputMsg is the message of each forwarded line. Default
	// DefaultOutputMsg.
	OutputMsg string
	// OnExit, when set, is called once the process is reaped, before Done
	// is closed (and so before Stop and Wait return). It runs on the
	// reaper's goroutine: it may take locks the caller of Start held.
	OnExit func(Exit)
}

// Exit is how a process ended.
type Exit struct {
	Pid int
	// State is the process's state from exec.Cmd.Wait; nil when Wait
	// failed otherwise, with Err.
	State *os.ProcessState
	// Err is the error of exec.Cmd.Wait, when State is nil.
	Err error
	// Code is the exit code, or 128+signal when a signal ended the process
	// (as a shell reports it), or -1 when unknown.
	Code int
	// Stopped reports that Stop was called before the process exited: the
	// exit was asked for.
	Stopped bool
}

// Attrs are log attributes of the exit: pid, exit_code and exit (the
// state), or error.
func (e Exit) Attrs() []any {
	attrs := []any{"pid", e.Pid, "exit_code", e.Code}
	if e.State != nil {
		attrs = append(attrs, "exit", e.State.String())
	} else if e.Err != nil {
		attrs = append(attrs, "error", e.Err)
	}
	return attrs
}

// Process is one running (or exited) child process.
type Process struct {
	cmd    *exec.Cmd
	pid    int
	log    *slog.Logger
	onExit func(Exit)
	done   chan struct{}
	exit   Exit // set before done is closed

	mu       sync.Mutex
	stopping bool // Stop was called: the exit is expected
	exited   bool // exited (perhaps not reaped yet): the pid may be reused, never signal it
}

// Start starts cmd on the forker's thread, in its own process group, and
// returns once it runs. Start sets cmd.Stdout, cmd.Stderr (which must be
// nil) and cmd.SysProcAttr's Setpgid and, on Linux, Pdeathsig (SIGKILL);
// the rest of cmd (Env, ExtraFiles, ...) is the caller's. Files of
// cmd.ExtraFiles are the caller's to close once Start returns.
func (f *Forker) Start(ctx context.Context, cmd *exec.Cmd, opts Options) (*Process, error) {
	if cmd.Stdout != nil || cmd.Stderr != nil {
		return nil, errors.New("childproc: cmd.Stdout and cmd.Stderr must be nil")
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd.Stdout = outW
	cmd.Stderr = errW
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	setProcAttr(cmd.SysProcAttr)
	err = f.fork(ctx, cmd)
	// The child holds its own copies now; the write ends close when it
	// (and anything it spawned) exits, which ends the forwarders.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	msg := opts.OutputMsg
	if msg == "" {
		msg = DefaultOutputMsg
	}
	p := &Process{cmd: cmd, pid: cmd.Process.Pid, log: log, onExit: opts.OnExit, done: make(chan struct{})}
	// The forker added these three to f.wg.
	go f.forward(log, msg, "stdout", outR)
	go f.forward(log, msg, "stderr", errR)
	go f.reap(p)
	return p, nil
}

// fork starts cmd on the forker's thread.
func (f *Forker) fork(ctx context.Context, cmd *exec.Cmd) error {
	req := forkRequest{cmd: cmd, done: make(chan error, 1)}
	select {
	case f.reqs <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-f.stop:
		return ErrClosed
	}
	return <-req.done
}

// Pid is the process id, which is also the id of its process group.
func (p *Process) Pid() int { return p.pid }

// Done is closed once the process is reaped and Options.OnExit returned.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits until Done is closed and returns how the process ended.
func (p *Process) Wait() Exit {
	<-p.done
	return p.exit
}

// Exited reports whether the process has exited; it may not be reaped
// yet.
func (p *Process) Exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// Stop stops the process: SIGTERM to its process group, SIGKILL after
// timeout, and it returns once the process is reaped. When ctx ends first,
// the group is SIGKILLed and ctx's error returned (unless the process was
// reaped by then); it is reaped soon after. Stopping a process that
// already exited only waits for it to be reaped.
func (p *Process) Stop(ctx context.Context, timeout time.Duration) error {
	p.mu.Lock()
	p.stopping = true
	p.signalLocked(syscall.SIGTERM)
	p.mu.Unlock()

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		p.kill()
		select {
		case <-p.done:
			return nil
		default:
			return ctx.Err()
		}
	case <-timer.C:
		p.log.Warn("process did not stop in time; killing it", "pid", p.pid, "stop_timeout", timeout.String())
		p.kill()
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// kill SIGKILLs the process group unless the process exited.
func (p *Process) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.signalLocked(syscall.SIGKILL)
}

// signalLocked sends sig to the process group, unless the process exited:
// then its pid may be reused and nothing is sent.
func (p *Process) signalLocked(sig syscall.Signal) {
	if p.exited {
		return
	}
	// The child leads its own group (Setpgid): pgid == pid.
	if err := syscall.Kill(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		p.log.Warn("signal process group", "pid", p.pid, "signal", sig.String(), "error", err)
	}
}

// reap waits for p to exit, reaps it exactly once, calls OnExit and closes
// Done.
func (f *Forker) reap(p *Process) {
	defer f.wg.Done()
	// Where the platform allows, learn of the exit before reaping, so that
	// no signal is ever sent to the pid (or its group) once it may be
	// reused. Elsewhere the window is between Wait and the lock below.
	if waitExited(p.pid) {
		p.mu.Lock()
		p.exited = true
		p.mu.Unlock()
	}
	waitErr := p.cmd.Wait()
	p.mu.Lock()
	p.exited = true
	stopped := p.stopping
	p.mu.Unlock()

	ps := p.cmd.ProcessState
	p.exit = Exit{Pid: p.pid, State: ps, Code: exitCode(ps), Stopped: stopped}
	if ps == nil {
		p.exit.Err = waitErr
	}
	if p.onExit != nil {
		p.onExit(p.exit)
	}
	close(p.done)
}

// exitCode is the process's exit code, or 128+signal when a signal ended
// it, as a shell reports it, or -1 when unknown.
func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
