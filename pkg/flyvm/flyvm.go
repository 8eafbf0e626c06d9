// Package flyvm is the Fly.io machine provider: it runs each interview's
// session VM as a Fly Machine in one app, through the flymachines client.
//
// Machines are created as docs/architecture.md ("Lifecycle", "Start")
// describes: the session's deterministic name, its metadata
// (interview_session_id, tenant_id, arch, managed_by),
// auto_destroy with restart policy "no" (a VM that exits is gone), the
// session image, guest size and region preference, and an environment of
// exactly what the control plane gives the VM plus SESSION_PORT. A create
// whose answer is lost is resolved by the client through the session id
// metadata, never by creating a second machine.
//
// The controller reaches a VM at net.JoinHostPort(private_ip, SessionPort):
// Fly's 6PN address in production, a loopback address on the fake.
package flyvm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/interviewvm/controlplane/pkg/flymachines"
	"github.com/interviewvm/controlplane/pkg/session"
)

// ProviderName is reported in session.Machine.Provider.
const ProviderName = "fly"

// DefaultWaitTimeout bounds WaitStarted when ctx has no deadline: Fly
// considers a machine starting for longer than 5 minutes stuck.
const DefaultWaitTimeout = 5 * time.Minute

// Config configures a Provider.
type Config struct {
	// Client talks to the Machines API. Required; the Provider does not
	// close it.
	Client *flymachines.Client
	// App is the Fly app holding session machines. Required.
	App string
	// Image is the sessionvm image, ideally pinned by digest. Required.
	Image string
	// Region is the preferred region; Regions adds fallbacks (Region may
	// itself be a comma-separated list). A create tries them in order,
	// moving on after a capacity error. Both empty lets Fly choose.
	Region  string
	Regions []string
	// Guest is the machine size (default shared CPU, 1 vCPU, 256 MB).
	Guest flymachines.Guest
	// SessionPort is where sessionvm listens inside the VM (default 8080).
	SessionPort int
	// NoService leaves out the proxy service on SessionPort. The controller
	// reaches VMs over the private network either way; the service is what
	// lets Fly's proxy route a fly-replay to a machine.
	NoService bool
	// WaitTimeout bounds WaitStarted when ctx has no deadline (default
	// DefaultWaitTimeout).
	WaitTimeout time.Duration
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Provider creates, starts, lists and destroys session VMs on Fly.
type Provider struct {
	client      *flymachines.Client
	app         string
	image       string
	regions     []string
	guest       flymachines.Guest
	port        int
	service     bool
	waitTimeout time.Duration
	log         *slog.Logger
}

// New returns a Provider for cfg.
func New(cfg Config) (*Provider, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("fly provider: client is required")
	case cfg.App == "":
		return nil, errors.New("fly provider: app is required")
	case cfg.Image == "":
		return nil, errors.New("fly provider: image is required")
	}
	port := cmp.Or(cfg.SessionPort, 8080)
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("fly provider: session port %d out of range", port)
	}
	guest := cfg.Guest
	guest.CPUKind = cmp.Or(guest.CPUKind, "shared")
	guest.CPUs = cmp.Or(guest.CPUs, 1)
	guest.MemoryMB = cmp.Or(guest.MemoryMB, 256)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Provider{
		client:      cfg.Client,
		app:         cfg.App,
		image:       cfg.Image,
		regions:     append([]string{cfg.Region}, cfg.Regions...),
		guest:       guest,
		port:        port,
		service:     !cfg.NoService,
		waitTimeout: cmp.Or(cfg.WaitTimeout, DefaultWaitTimeout),
		log:         log.With("component", "flyvm", "app", cfg.App),
	}, nil
}

// Close releases nothing: the client belongs to whoever created it.
func (p *Provider) Close() error { return nil }

// Create creates the session's machine; with spec.SkipLaunch it is created
// without booting (start it later with Start).
func (p *Provider) Create(ctx context.Context, spec session.MachineSpec) (session.Machine, error) {
	req, err := p.createRequest(spec)
	if err != nil {
		return session.Machine{}, fmt.Errorf("create machine %s: %w", spec.Name, err)
	}
	// Regions in order of preference: a capacity error in one tries the
	// next before the start gives up.
	regions := strings.Split(req.Region, ",")
	var m *flymachines.Machine
	for i, region := range regions {
		req.Region = region
		m, err = p.client.Create(ctx, p.app, req)
		if err == nil {
			break
		}
		if !errors.Is(err, flymachines.ErrCapacity) || i == len(regions)-1 {
			return session.Machine{}, fmt.Errorf("create machine %s in %s: %w", spec.Name, region, err)
		}
		p.log.Warn("no capacity in region; trying the next", "region", region, "next", regions[i+1],
			"session_id", spec.SessionID, "error", err)
	}
	p.log.Info("created machine", "machine_id", m.ID, "name", m.Name, "region", m.Region,
		"session_id", spec.SessionID, "skip_launch", spec.SkipLaunch)
	return p.machine(m), nil
}

// createRequest builds the create body for spec.
func (p *Provider) createRequest(spec session.MachineSpec) (flymachines.CreateRequest, error) {
	if spec.Name == "" {
		return flymachines.CreateRequest{}, errors.New("machine name is required")
	}
	md := maps.Clone(spec.Metadata)
	if md == nil {
		md = map[string]string{}
	}
	setDefault(md, session.MetaSessionID, spec.SessionID)
	setDefault(md, session.MetaTenantID, spec.TenantID)
	setDefault(md, session.MetaArch, spec.Arch)
	md[session.MetaManagedBy] = session.ManagedByValue
	if md[session.MetaSessionID] == "" {
		return flymachines.CreateRequest{}, errors.New("session id is required")
	}

	env := maps.Clone(spec.Env)
	if env == nil {
		env = map[string]string{}
	}
	env[session.EnvSessionPort] = strconv.Itoa(p.port)

	guest := p.guest
	cfg := flymachines.MachineConfig{
		Image:       p.image,
		Env:         env,
		Guest:       &guest,
		Metadata:    md,
		AutoDestroy: true,
		Restart:     &flymachines.Restart{Policy: flymachines.RestartNo},
	}
	if p.service {
		off, no := flymachines.AutostopOff, false
		cfg.Services = []flymachines.Service{{
			Protocol:     "tcp",
			InternalPort: p.port,
			Ports: []flymachines.Port{
				{Port: 80, Handlers: []string{"http"}},
				{Port: 443, Handlers: []string{"tls", "http"}},
			},
			// The controller, not Fly's proxy, decides when a session VM
			// runs.
			Autostart: &no,
			Autostop:  &off,
		}}
	}
	return flymachines.CreateRequest{
		Name:       spec.Name,
		Region:     p.region(spec.Region),
		Config:     cfg,
		SkipLaunch: spec.SkipLaunch,
		RecoverKey: session.MetaSessionID,
		Background: spec.Background,
	}, nil
}

func setDefault(m map[string]string, k, v string) {
	if m[k] == "" && v != "" {
		m[k] = v
	}
}

// region returns the comma-separated preference list: the spec's region,
// then the configured ones, without duplicates.
func (p *Provider) region(first string) string {
	var out []string
	seen := map[string]bool{}
	for _, r := range append([]string{first}, p.regions...) {
		for _, r := range strings.Split(r, ",") {
			r = strings.TrimSpace(r)
			if r != "" && !seen[r] {
				seen[r] = true
				out = append(out, r)
			}
		}
	}
	return strings.Join(out, ",")
}

// Start boots a machine created with SkipLaunch (or stopped). Starting a
// machine that already runs is not an error.
func (p *Provider) Start(ctx context.Context, id string) error {
	if err := p.client.Start(ctx, p.app, id); err != nil {
		return fmt.Errorf("start machine %s: %w", id, notFound(err))
	}
	return nil
}

// WaitStarted waits until the machine is started and returns it. Fly
// answers each wait within 60 s; WaitStarted keeps waiting until ctx ends
// (or Config.WaitTimeout when ctx has no deadline).
func (p *Provider) WaitStarted(ctx context.Context, id string) (session.Machine, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.waitTimeout)
		defer cancel()
	}
	if err := p.client.Wait(ctx, p.app, id, flymachines.WaitOptions{State: flymachines.StateStarted}); err != nil {
		return session.Machine{}, fmt.Errorf("wait for machine %s to start: %w", id, notFound(err))
	}
	m, err := p.client.Get(ctx, p.app, id)
	if err != nil {
		return session.Machine{}, fmt.Errorf("wait for machine %s to start: %w", id, notFound(err))
	}
	return p.machine(m), nil
}

// Get returns one machine; one Fly does not know gives an error wrapping
// session.ErrMachineNotFound. A destroyed machine Fly still remembers is
// returned with State "destroyed".
func (p *Provider) Get(ctx context.Context, id string) (session.Machine, error) {
	m, err := p.client.Get(ctx, p.app, id)
	if err != nil {
		return session.Machine{}, fmt.Errorf("get machine %s: %w", id, notFound(err))
	}
	return p.machine(m), nil
}

// List returns the app's machines this control plane manages
// (managed_by metadata) that are not destroyed.
func (p *Provider) List(ctx context.Context) ([]session.Machine, error) {
	ms, err := p.client.List(ctx, p.app, flymachines.ListOptions{
		Metadata: map[string]string{session.MetaManagedBy: session.ManagedByValue},
	})
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	out := make([]session.Machine, 0, len(ms))
	for i := range ms {
		m := &ms[i]
		if m.Gone() || m.Metadata()[session.MetaManagedBy] != session.ManagedByValue {
			continue
		}
		out = append(out, p.machine(m))
	}
	return out, nil
}

// ListSummaries is List in Fly's summary form, the cheap way to see
// thousands of machines: each comes without its metadata, so SessionID is
// empty (the machine's name, session.MachineName, tells whose it is; Get
// reads the metadata). Fly still filters by the managed_by metadata.
func (p *Provider) ListSummaries(ctx context.Context) ([]session.Machine, error) {
	ms, err := p.client.ListSummaries(ctx, p.app, flymachines.ListOptions{
		Metadata: map[string]string{session.MetaManagedBy: session.ManagedByValue},
	})
	if err != nil {
		return nil, fmt.Errorf("list machine summaries: %w", err)
	}
	out := make([]session.Machine, 0, len(ms))
	for i := range ms {
		m := &ms[i]
		if m.Gone() {
			continue
		}
		out = append(out, p.summary(m))
	}
	return out, nil
}

// Destroy force-destroys a machine; one already gone counts as destroyed.
func (p *Provider) Destroy(ctx context.Context, id string) error {
	if err := p.client.Destroy(ctx, p.app, id, true); err != nil {
		return fmt.Errorf("destroy machine %s: %w", id, err)
	}
	p.log.Info("destroyed machine", "machine_id", id)
	return nil
}

// machine converts Fly's machine to the domain's.
func (p *Provider) machine(m *flymachines.Machine) session.Machine {
	out := session.Machine{
		ID:        m.ID,
		Name:      m.Name,
		Region:    m.Region,
		State:     m.State,
		Provider:  ProviderName,
		SessionID: m.Metadata()[session.MetaSessionID],
	}
	if m.PrivateIP != "" {
		out.Addr = net.JoinHostPort(m.PrivateIP, strconv.Itoa(p.port))
	}
	return out
}

// summary converts a summary-form machine (no metadata) to the domain's.
func (p *Provider) summary(m *flymachines.MachineSummary) session.Machine {
	out := session.Machine{ID: m.ID, Name: m.Name, Region: m.Region, State: m.State, Provider: ProviderName}
	if m.PrivateIP != "" {
		out.Addr = net.JoinHostPort(m.PrivateIP, strconv.Itoa(p.port))
	}
	return out
}

// notFound adds session.ErrMachineNotFound to a 404.
func notFound(err error) error {
	if errors.Is(err, flymachines.ErrNotFound) {
		return fmt.Errorf("%w: %w", session.ErrMachineNotFound, err)
	}
	return err
}
