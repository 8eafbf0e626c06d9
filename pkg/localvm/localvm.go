// Package localvm is the local machine provider, the default on a laptop:
// each session "machine" is one real sessionvm child process of the
// controller, listening on its own loopback port.
//
// The provider binds each machine's listener itself (127.0.0.1:0) and hands
// it to the child as fd 3 (LISTEN_FD=3), so the address is known before
// the child starts and no other process can take the port. A child's
// environment is exactly the spec's Env plus LISTEN_FD and PATH: nothing of
// the controller's environment leaks into a VM.
//
// Children never outlive the provider: each runs in its own process group
// (so Destroy can signal all of it) with the parent-death signal SIGKILL,
// so a controller that crashes takes its VMs with it; Close destroys them
// all on an orderly shutdown.
//
// Machine states are Fly's: created (SkipLaunch; the listener is bound but
// no process runs), started (the process runs), destroyed (the process
// exited, by Destroy or by itself, and was reaped). A destroyed machine is
// no longer listed, but Get still reports it, with State destroyed, for
// DestroyedRetention; after that Get answers ErrMachineNotFound, like for
// an id it never knew.
//
// Names are unique among machines that are not destroyed, as on Fly:
// Create with the name of such a machine returns that machine (in whatever
// state it is) instead of starting a second process.
package localvm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/interviewvm/controlplane/pkg/session"
)

// ProviderName is Machine.Provider for local machines.
const ProviderName = "local"

// Defaults of Config.
const (
	DefaultBinary      = "sessionvm"
	DefaultStopTimeout = 5 * time.Second
	DefaultRegion      = "local"
)

// DestroyedRetention is how long Get keeps reporting a destroyed machine
// before forgetting it.
const DestroyedRetention = 5 * time.Minute

// maxLine bounds one forwarded line of a child's output; longer lines are
// forwarded in pieces.
const maxLine = 64 << 10

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("local machine provider is closed")

// Config configures a Provider.
type Config struct {
	// Binary is the sessionvm executable: a path, or a name looked up in
	// PATH. Default "sessionvm".
	Binary string
	// Logger receives the provider's lines and every line the children
	// write to stdout or stderr. Default: discard.
	Logger *slog.Logger
	// StopTimeout is how long Destroy waits after SIGTERM before SIGKILL.
	// Default 5s.
	StopTimeout time.Duration
	// Region is reported on every machine. Default "local".
	Region string
	// Secrets are added to every child's environment, the way a platform
	// injects its app's secrets (on Fly: OPENAI_API_KEY of the session
	// app). They are not part of any machine spec and never reported.
	Secrets map[string]string
}

// Provider runs session machines as local child processes. Create it with
// New and Close it. It is safe for concurrent use.
type Provider struct {
	binary      string
	log         *slog.Logger
	stopTimeout time.Duration
	region      string
	secrets     map[string]string

	forks chan forkRequest
	stop  chan struct{}  // closed by Close after every machine is destroyed
	wg    sync.WaitGroup // the forker, reapers and output forwarders

	closeOnce sync.Once
	closeErr  error

	mu       sync.Mutex
	closed   bool
	machines map[string]*machine // by id, destroyed ones until pruned
	changed  chan struct{}       // closed and replaced on every state change
}

// machine is one local VM. id, name, sessionID, addr and env never change;
// the rest is guarded by Provider.mu.
type machine struct {
	id, name, sessionID, addr string
	env                       []string

	state       string
	ln          *net.TCPListener // held by the provider until the child takes it
	cmd         *exec.Cmd
	pid         int
	destroying  bool // Destroy was called: the exit is expected
	exited      bool // the child exited: its pid may be reused once reaped, never signal it again
	done        chan struct{}
	destroyedAt time.Time
}

type forkRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// New returns a Provider. It starts one goroutine (the forker, see forker);
// Close stops it.
func New(cfg Config) *Provider {
	p := &Provider{
		binary:      cfg.Binary,
		log:         cfg.Logger,
		stopTimeout: cfg.StopTimeout,
		region:      cfg.Region,
		secrets:     cfg.Secrets,
		forks:       make(chan forkRequest),
		stop:        make(chan struct{}),
		machines:    make(map[string]*machine),
		changed:     make(chan struct{}),
	}
	if p.binary == "" {
		p.binary = DefaultBinary
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.stopTimeout <= 0 {
		p.stopTimeout = DefaultStopTimeout
	}
	if p.region == "" {
		p.region = DefaultRegion
	}
	p.log = p.log.With("provider", ProviderName)
	p.wg.Add(1)
	go p.forker()
	return p
}

// forker starts every child process, from one goroutine locked to its OS
// thread for the provider's whole life.
//
// The parent-death signal (Pdeathsig) is delivered when the OS thread that
// forked the child exits, not when the process does. The Go runtime
// terminates an OS thread when a goroutine locked to it exits, so a child
// forked from an arbitrary goroutine's thread could be SIGKILLed at a
// random later moment, long before the controller dies. Forking only from
// this locked, long-lived thread ties every child to the provider: the
// thread ends when Close has destroyed all children (the goroutine exits
// still locked, which ends the thread) or when the controller process dies.
func (p *Provider) forker() {
	defer p.wg.Done()
	runtime.LockOSThread()
	for {
		select {
		case req := <-p.forks:
			req.done <- req.cmd.Start()
		case <-p.stop:
			return
		}
	}
}

// fork starts cmd on the forker's thread.
func (p *Provider) fork(ctx context.Context, cmd *exec.Cmd) error {
	req := forkRequest{cmd: cmd, done: make(chan error, 1)}
	select {
	case p.forks <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-p.stop:
		return ErrClosed
	}
	return <-req.done
}

// Create creates a machine for spec: it binds the machine's listener and,
// unless spec.SkipLaunch, starts its process. When a machine that is not
// destroyed already has spec.Name, Create returns that machine, as is.
func (p *Provider) Create(ctx context.Context, spec session.MachineSpec) (session.Machine, error) {
	if spec.Name == "" {
		return session.Machine{}, session.Errorf(session.EINVALID, "machine name is empty")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return session.Machine{}, fmt.Errorf("create machine %s: %w", spec.Name, ErrClosed)
	}
	p.pruneLocked()
	for _, m := range p.machines {
		if m.name == spec.Name && m.state != session.MachineDestroyed {
			return p.snapshot(m), nil
		}
	}
	id, err := newID()
	if err != nil {
		return session.Machine{}, fmt.Errorf("create machine %s: %w", spec.Name, err)
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return session.Machine{}, fmt.Errorf("create machine %s: listen: %w", spec.Name, err)
	}
	m := &machine{
		id:        id,
		name:      spec.Name,
		sessionID: spec.SessionID,
		addr:      ln.Addr().String(),
		env:       childEnv(p.secrets, spec.Env),
		state:     session.MachineCreated,
		ln:        ln,
		done:      make(chan struct{}),
	}
	if !spec.SkipLaunch {
		if err := p.launchLocked(ctx, m); err != nil {
			ln.Close()
			return session.Machine{}, fmt.Errorf("create machine %s: %w", spec.Name, err)
		}
	}
	p.machines[id] = m
	p.notifyLocked()
	p.log.Info("machine created", "machine_id", id, "machine_name", m.name, "session_id", m.sessionID,
		"addr", m.addr, "state", m.state, "pid", m.pid)
	return p.snapshot(m), nil
}

// Start starts the process of a created machine. Starting a started
// machine does nothing; a destroyed one cannot be started (conflict).
func (p *Provider) Start(ctx context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("start machine %s: %w", id, ErrClosed)
	}
	m := p.machines[id]
	if m == nil {
		return fmt.Errorf("start machine %s: %w", id, session.ErrMachineNotFound)
	}
	switch m.state {
	case session.MachineStarted:
		return nil
	case session.MachineDestroyed:
		return session.Errorf(session.ECONFLICT, "machine %s is destroyed", id)
	}
	if err := p.launchLocked(ctx, m); err != nil {
		return fmt.Errorf("start machine %s: %w", id, err)
	}
	p.notifyLocked()
	p.log.Info("machine started", "machine_id", id, "machine_name", m.name, "pid", m.pid)
	return nil
}

// WaitStarted waits until the machine's process runs and returns the
// machine. It fails when the machine is destroyed first, or is unknown.
func (p *Provider) WaitStarted(ctx context.Context, id string) (session.Machine, error) {
	for {
		p.mu.Lock()
		m := p.machines[id]
		if m == nil {
			p.mu.Unlock()
			return session.Machine{}, fmt.Errorf("wait for machine %s: %w", id, session.ErrMachineNotFound)
		}
		switch m.state {
		case session.MachineStarted:
			out := p.snapshot(m)
			p.mu.Unlock()
			return out, nil
		case session.MachineDestroyed:
			p.mu.Unlock()
			return session.Machine{}, session.Errorf(session.ECONFLICT, "machine %s was destroyed before it started", id)
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return session.Machine{}, fmt.Errorf("wait for machine %s to start: %w", id, ctx.Err())
		}
	}
}

// Get returns a machine. A machine destroyed less than DestroyedRetention
// ago is reported with State destroyed; an unknown or forgotten one is an
// error wrapping session.ErrMachineNotFound.
func (p *Provider) Get(ctx context.Context, id string) (session.Machine, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pruneLocked()
	m := p.machines[id]
	if m == nil {
		return session.Machine{}, fmt.Errorf("get machine %s: %w", id, session.ErrMachineNotFound)
	}
	return p.snapshot(m), nil
}

// List returns every machine that is not destroyed, by name.
func (p *Provider) List(ctx context.Context) ([]session.Machine, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pruneLocked()
	var out []session.Machine
	for _, m := range p.machines {
		if m.state != session.MachineDestroyed {
			out = append(out, p.snapshot(m))
		}
	}
	slices.SortFunc(out, func(a, b session.Machine) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Destroy stops a machine: SIGTERM to its process group, SIGKILL after
// StopTimeout, and returns once the process is reaped. Destroying an
// unknown or already destroyed machine returns nil. When ctx ends first,
// the group is SIGKILLed and ctx's error returned; the machine becomes
// destroyed as soon as the process is reaped.
func (p *Provider) Destroy(ctx context.Context, id string) error {
	p.mu.Lock()
	m := p.machines[id]
	if m == nil || m.state == session.MachineDestroyed {
		p.mu.Unlock()
		return nil
	}
	if m.cmd == nil { // created, never started: no process to stop
		m.ln.Close()
		m.ln = nil
		p.markDestroyedLocked(m)
		p.mu.Unlock()
		p.log.Info("machine destroyed", "machine_id", id, "machine_name", m.name)
		return nil
	}
	m.destroying = true
	p.signalLocked(m, syscall.SIGTERM)
	p.mu.Unlock()

	timer := time.NewTimer(p.stopTimeout)
	defer timer.Stop()
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		p.kill(m)
		return fmt.Errorf("destroy machine %s: %w", id, ctx.Err())
	case <-timer.C:
		p.log.Warn("machine did not stop in time; killing it", "machine_id", id, "machine_name", m.name,
			"stop_timeout", p.stopTimeout.String())
		p.kill(m)
	}
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("destroy machine %s: %w", id, ctx.Err())
	}
}

// Close destroys every machine, then stops the provider's goroutines. Calls
// after Close fail with ErrClosed, except Get, List and Destroy.
func (p *Provider) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		var ids []string
		for id, m := range p.machines {
			if m.state != session.MachineDestroyed {
				ids = append(ids, id)
			}
		}
		p.mu.Unlock()

		errs := make([]error, len(ids))
		var wg sync.WaitGroup
		for i, id := range ids {
			wg.Go(func() { errs[i] = p.Destroy(context.Background(), id) })
		}
		wg.Wait()
		close(p.stop)
		p.wg.Wait()
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}

// launchLocked starts m's process with m's listener as fd 3 and hands the
// listener over to it.
func (p *Provider) launchLocked(ctx context.Context, m *machine) error {
	lnFile, err := m.ln.File() // a dup, in blocking mode, for the child
	if err != nil {
		return fmt.Errorf("listener file: %w", err)
	}
	defer lnFile.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return fmt.Errorf("stderr pipe: %w", err)
	}
	cmd := exec.Command(p.binary)
	cmd.Env = m.env
	cmd.Stdout = outW
	cmd.Stderr = errW
	cmd.ExtraFiles = []*os.File{lnFile} // fd 3
	cmd.SysProcAttr = sysProcAttr()
	err = p.fork(ctx, cmd)
	// The child holds its own copies now; the write ends close when it
	// (and anything it spawned) exits, which ends the forwarders.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return fmt.Errorf("start %s: %w", p.binary, err)
	}
	m.ln.Close()
	m.ln = nil
	m.cmd = cmd
	m.pid = cmd.Process.Pid
	m.state = session.MachineStarted
	p.wg.Add(3)
	go p.forward(m, "stdout", outR)
	go p.forward(m, "stderr", errR)
	go p.reap(m)
	return nil
}

// reap waits for m's process to exit, reaps it exactly once, and marks the
// machine destroyed.
func (p *Provider) reap(m *machine) {
	defer p.wg.Done()
	// Where the platform allows, learn of the exit before reaping, so that
	// no signal is ever sent to the pid (or its group) once it may be
	// reused. Elsewhere the window is between Wait and the lock below.
	if waitExited(m.pid) {
		p.mu.Lock()
		m.exited = true
		p.mu.Unlock()
	}
	err := m.cmd.Wait()
	p.mu.Lock()
	m.exited = true
	expected := m.destroying
	p.markDestroyedLocked(m)
	p.mu.Unlock()

	attrs := []any{"session_id", m.sessionID, "machine_id", m.id, "machine_name", m.name, "pid", m.pid}
	if ps := m.cmd.ProcessState; ps != nil {
		attrs = append(attrs, "exit", ps.String())
	} else if err != nil {
		attrs = append(attrs, "error", err)
	}
	if expected {
		p.log.Info("machine destroyed", attrs...)
	} else {
		p.log.Info("machine exited on its own", attrs...)
	}
}

// forward logs each line r yields with the machine's attributes, until r
// ends: when the child and everything it spawned (its process group, which
// Destroy kills) have exited. sessionvm spawns nothing.
func (p *Provider) forward(m *machine, stream string, r io.ReadCloser) {
	defer p.wg.Done()
	defer r.Close()
	log := p.log.With("session_id", m.sessionID, "machine_id", m.id, "machine_name", m.name, "stream", stream)
	br := bufio.NewReaderSize(r, maxLine)
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

// levelOf returns the level of a JSON log line of the child (slog's
// "level" field), or Info.
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

// kill SIGKILLs m's process group unless it already exited.
func (p *Provider) kill(m *machine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.signalLocked(m, syscall.SIGKILL)
}

// signalLocked sends sig to m's process group, unless the child exited:
// then its pid may be reused and nothing is sent.
func (p *Provider) signalLocked(m *machine, sig syscall.Signal) {
	if m.cmd == nil || m.exited {
		return
	}
	// The child is its group's leader (Setpgid): pgid == pid.
	if err := syscall.Kill(-m.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		p.log.Warn("signal machine", "machine_id", m.id, "signal", sig.String(), "error", err)
	}
}

func (p *Provider) markDestroyedLocked(m *machine) {
	m.state = session.MachineDestroyed
	m.destroyedAt = time.Now()
	close(m.done)
	p.notifyLocked()
}

func (p *Provider) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// pruneLocked forgets machines destroyed more than DestroyedRetention ago.
func (p *Provider) pruneLocked() {
	cutoff := time.Now().Add(-DestroyedRetention)
	for id, m := range p.machines {
		if m.state == session.MachineDestroyed && m.destroyedAt.Before(cutoff) {
			delete(p.machines, id)
		}
	}
}

func (p *Provider) snapshot(m *machine) session.Machine {
	return session.Machine{
		ID:        m.id,
		Name:      m.name,
		Region:    p.region,
		State:     m.state,
		Provider:  ProviderName,
		Addr:      m.addr,
		SessionID: m.sessionID,
	}
}

// childEnv is the whole environment of a child: the provider's secrets,
// spec's Env, LISTEN_FD=3, and PATH (the controller's, unless Env sets
// one), sorted.
func childEnv(secrets, specEnv map[string]string) []string {
	env := make(map[string]string, len(secrets)+len(specEnv)+2)
	for k, v := range secrets {
		env[k] = v
	}
	for k, v := range specEnv {
		env[k] = v
	}
	env[session.EnvListenFD] = "3"
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
	return out
}

// newID returns "local-" and 12 random hex digits.
func newID() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random id: %w", err)
	}
	return "local-" + hex.EncodeToString(b[:]), nil
}
