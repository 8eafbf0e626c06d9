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
// so a controller that crashes takes its VMs with it (package childproc);
// Close destroys them all on an orderly shutdown.
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
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/interviewvm/controlplane/pkg/childproc"
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

	forker *childproc.Forker // closed by Close after every machine is destroyed

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
	ln          *net.TCPListener   // held by the provider until the child takes it
	proc        *childproc.Process // once started
	destroyedAt time.Time
}

// pid is the process id of m, or 0 before it started.
func (m *machine) pid() int {
	if m.proc == nil {
		return 0
	}
	return m.proc.Pid()
}

// New returns a Provider. It starts one goroutine (the forker, see
// childproc.Forker); Close stops it.
func New(cfg Config) *Provider {
	p := &Provider{
		binary:      cfg.Binary,
		log:         cfg.Logger,
		stopTimeout: cfg.StopTimeout,
		region:      cfg.Region,
		secrets:     cfg.Secrets,
		forker:      childproc.New(),
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
	return p
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
		"addr", m.addr, "state", m.state, "pid", m.pid())
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
	p.log.Info("machine started", "machine_id", id, "machine_name", m.name, "pid", m.pid())
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
	proc := m.proc
	if proc == nil { // created, never started: no process to stop
		m.ln.Close()
		m.ln = nil
		p.markDestroyedLocked(m)
		p.mu.Unlock()
		p.log.Info("machine destroyed", "machine_id", id, "machine_name", m.name)
		return nil
	}
	p.mu.Unlock()
	// Stop returns once the process is reaped and exited has marked the
	// machine destroyed.
	if err := proc.Stop(ctx, p.stopTimeout); err != nil {
		return fmt.Errorf("destroy machine %s: %w", id, err)
	}
	return nil
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
		p.forker.Close()
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
	cmd := exec.Command(p.binary)
	cmd.Env = m.env
	cmd.ExtraFiles = []*os.File{lnFile} // fd 3
	log := p.log.With("session_id", m.sessionID, "machine_id", m.id, "machine_name", m.name)
	proc, err := p.forker.Start(ctx, cmd, childproc.Options{
		Log:       log,
		OutputMsg: "vm output",
		OnExit:    func(e childproc.Exit) { p.exited(log, m, e) },
	})
	if err != nil {
		return fmt.Errorf("start %s: %w", p.binary, err)
	}
	m.ln.Close()
	m.ln = nil
	m.proc = proc
	m.state = session.MachineStarted
	return nil
}

// exited marks m destroyed once its process is reaped (before Destroy
// returns).
func (p *Provider) exited(log *slog.Logger, m *machine, e childproc.Exit) {
	p.mu.Lock()
	p.markDestroyedLocked(m)
	p.mu.Unlock()
	if e.Stopped {
		log.Info("machine destroyed", e.Attrs()...)
	} else {
		log.Info("machine exited on its own", e.Attrs()...)
	}
}

func (p *Provider) markDestroyedLocked(m *machine) {
	m.state = session.MachineDestroyed
	m.destroyedAt = time.Now()
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
	env := make(map[string]string, len(secrets)+len(specEnv)+1)
	maps.Copy(env, secrets)
	maps.Copy(env, specEnv)
	env[session.EnvListenFD] = "3"
	return childproc.Environ(env)
}

// newID returns "local-" and 12 random hex digits.
func newID() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random id: %w", err)
	}
	return "local-" + hex.EncodeToString(b[:]), nil
}
