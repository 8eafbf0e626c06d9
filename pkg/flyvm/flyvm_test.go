package flyvm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/interviewvm/controlplane/pkg/flymachines"
	"github.com/interviewvm/controlplane/pkg/flymachines/flymachinestest"
	"github.com/interviewvm/controlplane/pkg/flyvm"
	"github.com/interviewvm/controlplane/pkg/session"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current create bodies")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	app      = "interview-sessions"
	token    = "FlyV1 fm2_test-token"
	tenantID = "3f2a9c1e-0000-4000-8000-000000000001"
)

type env struct {
	fake     *flymachinestest.Server
	client   *flymachines.Client
	provider *flyvm.Provider
}

func setup(t *testing.T, fakeOpts []flymachinestest.Option, mutate func(*flyvm.Config)) *env {
	t.Helper()
	fake := flymachinestest.NewServer(append([]flymachinestest.Option{flymachinestest.WithToken(token)}, fakeOpts...)...)
	client, err := flymachines.New(flymachines.Config{
		BaseURL:           fake.URL,
		Token:             token,
		RetryWaitMin:      10 * time.Millisecond,
		RetryWaitMax:      50 * time.Millisecond,
		CreateLookupDelay: 10 * time.Millisecond,
		DisableRateLimit:  true,
		AttemptTimeout:    time.Second,
	})
	if err != nil {
		fake.Close()
		t.Fatal(err)
	}
	cfg := flyvm.Config{
		Client: client,
		App:    app,
		Image:  "registry.fly.io/interview-sessions@sha256:0123456789abcdef",
		Region: "iad",
		Guest:  flymachines.Guest{CPUKind: "shared", CPUs: 1, MemoryMB: 512},
		Logger: slog.New(slog.DiscardHandler),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := flyvm.New(cfg)
	if err != nil {
		client.Close()
		fake.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Close()
		client.Close()
		fake.Close()
	})
	return &env{fake: fake, client: client, provider: p}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// spec is what the lifecycle asks for: the VM's environment is its session
// id, its token and the controller URL, nothing else of the interview.
func spec(sessionID string) session.MachineSpec {
	return session.MachineSpec{
		Name:      session.MachineName(session.ArchitectureHybrid, tenantID, sessionID),
		SessionID: sessionID,
		TenantID:  tenantID,
		Arch:      session.ArchitectureHybrid,
		Env: map[string]string{
			session.EnvSessionID:     sessionID,
			session.EnvSessionToken:  "st_per-session-token",
			session.EnvControllerURL: "http://controller.internal:8080",
		},
		Metadata: map[string]string{
			session.MetaSessionID: sessionID,
			session.MetaTenantID:  tenantID,
			session.MetaArch:      session.ArchitectureHybrid,
			session.MetaManagedBy: session.ManagedByValue,
		},
	}
}

func TestCreateRequestGolden(t *testing.T) {
	tests := []struct {
		name   string
		spec   func() session.MachineSpec
		config func(*flyvm.Config)
	}{
		{
			name: "create_launch",
			spec: func() session.MachineSpec { return spec("7b4d0e5f-9a12-4c3b-8d2e-000000000001") },
		},
		{
			name: "create_skip_launch_regions",
			spec: func() session.MachineSpec {
				s := spec("8c5e1f60-ab23-4d4c-9e3f-000000000002")
				s.SkipLaunch = true
				s.Region = "ams"
				return s
			},
			config: func(c *flyvm.Config) {
				c.Regions = []string{"fra", "iad", "eu"}
				c.SessionPort = 9090
				c.Guest = flymachines.Guest{}
			},
		},
		{
			name: "create_no_service",
			spec: func() session.MachineSpec {
				s := spec("9d6f2071-bc34-4e5d-af40-000000000003")
				s.Metadata = nil // filled in from the spec's fields
				return s
			},
			config: func(c *flyvm.Config) {
				c.NoService = true
				c.Region = ""
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t, nil, tt.config)
			if _, err := e.provider.Create(ctxT(t, 10*time.Second), tt.spec()); err != nil {
				t.Fatalf("Create: %v", err)
			}
			var body []byte
			for _, c := range e.fake.Calls() {
				if c.Op == flymachinestest.OpCreate {
					body = c.Body
				}
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, body, "", "  "); err != nil {
				t.Fatalf("create body is not JSON: %v\n%s", err, body)
			}
			pretty.WriteByte('\n')
			path := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run with -update to create it): %v", err)
			}
			if diff := cmp.Diff(string(want), pretty.String()); diff != "" {
				t.Errorf("create body differs from %s (-want +got):\n%s", path, diff)
			}
		})
	}
}

func TestMachineConfigOnTheWire(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 10*time.Second)
	s := spec("7b4d0e5f-9a12-4c3b-8d2e-0000000000aa")
	m, err := e.provider.Create(ctx, s)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	got, ok := e.fake.Machine(app, m.ID)
	if !ok {
		t.Fatalf("fake has no machine %s", m.ID)
	}
	wantEnv := map[string]string{
		session.EnvSessionID:     s.SessionID,
		session.EnvSessionToken:  "st_per-session-token",
		session.EnvControllerURL: "http://controller.internal:8080",
		session.EnvSessionPort:   "8080",
	}
	if diff := cmp.Diff(wantEnv, got.Env); diff != "" {
		t.Errorf("env must be exactly the spec's plus SESSION_PORT (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(s.Metadata, got.Metadata); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	if !got.AutoDestroy || got.RestartPolicy != "no" || got.Name != s.Name || got.Region != "iad" {
		t.Errorf("machine = %+v", got)
	}
}

func TestLifecycle(t *testing.T) {
	e := setup(t, []flymachinestest.Option{flymachinestest.WithBootDelay(50 * time.Millisecond)}, nil)
	ctx := ctxT(t, 20*time.Second)
	s := spec("7b4d0e5f-9a12-4c3b-8d2e-0000000000bb")

	created, err := e.provider.Create(ctx, s)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if created.State != session.MachineCreated || created.Provider != "fly" || created.SessionID != s.SessionID || created.Name != s.Name {
		t.Errorf("Create = %+v", created)
	}
	m, err := e.provider.WaitStarted(ctx, created.ID)
	if err != nil {
		t.Fatalf("WaitStarted: %v", err)
	}
	host, port, err := net.SplitHostPort(m.Addr)
	if err != nil || port != "8080" || !strings.HasPrefix(host, "127.0.") {
		t.Errorf("Addr = %q, want <private_ip>:8080", m.Addr)
	}
	fm, _ := e.fake.Machine(app, m.ID)
	if host != fm.PrivateIP {
		t.Errorf("Addr host %s, fake private_ip %s", host, fm.PrivateIP)
	}
	if m.State != session.MachineStarted {
		t.Errorf("state = %s", m.State)
	}
	if got, err := e.provider.Get(ctx, m.ID); err != nil || got != m {
		t.Errorf("Get = %+v, %v; want %+v", got, err, m)
	}

	// A machine not managed by the control plane is not listed.
	if _, err := e.client.Create(ctx, app, flymachines.CreateRequest{Name: "someone-else", Config: flymachines.MachineConfig{Image: "x"}}); err != nil {
		t.Fatal(err)
	}
	list, err := e.provider.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != 1 || list[0] != m {
		t.Errorf("List = %+v, want only %+v", list, m)
	}
	// The summary list: the same machine without its session (Fly leaves
	// metadata out of the summary form).
	sums, err := e.provider.ListSummaries(ctx)
	if err != nil {
		t.Fatalf("ListSummaries: %v", err)
	}
	wantSum := m
	wantSum.SessionID = ""
	if len(sums) != 1 || sums[0] != wantSum {
		t.Errorf("ListSummaries = %+v, want only %+v", sums, wantSum)
	}

	if err := e.provider.Destroy(ctx, m.ID); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if err := e.provider.Destroy(ctx, m.ID); err != nil {
		t.Fatalf("Destroy again: %v", err)
	}
	if err := e.provider.Destroy(ctx, "00000000000000"); err != nil {
		t.Fatalf("Destroy of a machine that never existed: %v", err)
	}
	if err := e.client.Wait(ctx, app, m.ID, flymachines.WaitOptions{State: flymachines.StateDestroyed}); err != nil {
		t.Fatal(err)
	}
	if list, err := e.provider.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("List after destroy = %+v, %v", list, err)
	}
	if sums, err := e.provider.ListSummaries(ctx); err != nil || len(sums) != 0 {
		t.Errorf("ListSummaries after destroy = %+v, %v", sums, err)
	}
	if got, err := e.provider.Get(ctx, m.ID); err != nil || got.State != session.MachineDestroyed {
		t.Errorf("Get destroyed = %+v, %v", got, err)
	}
	_, err = e.provider.Get(ctx, "00000000000000")
	if !errors.Is(err, session.ErrMachineNotFound) || !errors.Is(err, flymachines.ErrNotFound) {
		t.Errorf("Get unknown = %v, want ErrMachineNotFound", err)
	}
	if err := e.provider.Start(ctx, "00000000000000"); !errors.Is(err, session.ErrMachineNotFound) {
		t.Errorf("Start unknown = %v, want ErrMachineNotFound", err)
	}
	if _, err := e.provider.WaitStarted(ctx, "00000000000000"); !errors.Is(err, session.ErrMachineNotFound) {
		t.Errorf("WaitStarted unknown = %v, want ErrMachineNotFound", err)
	}
}

func TestSkipLaunchThenStart(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 20*time.Second)
	s := spec("7b4d0e5f-9a12-4c3b-8d2e-0000000000cc")
	s.SkipLaunch = true
	m, err := e.provider.Create(ctx, s)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if got, err := e.provider.Get(ctx, m.ID); err != nil || got.State != session.MachineCreated {
		t.Fatalf("skip_launch machine = %+v, %v; want created", got, err)
	}
	if err := e.provider.Start(ctx, m.ID); err != nil {
		t.Fatalf("Start: %v", err)
	}
	got, err := e.provider.WaitStarted(ctx, m.ID)
	if err != nil || got.State != session.MachineStarted {
		t.Fatalf("WaitStarted = %+v, %v", got, err)
	}
}

func TestWaitStartedPastOneWaitCall(t *testing.T) {
	e := setup(t, []flymachinestest.Option{flymachinestest.WithBootDelay(1500 * time.Millisecond)}, nil)
	// A deadline of 1.x s makes each wait request ask for 1 s: the boot
	// needs more than one.
	ctx := ctxT(t, 20*time.Second)
	m, err := e.provider.Create(ctx, spec("7b4d0e5f-9a12-4c3b-8d2e-0000000000dd"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 1900*time.Millisecond)
	defer cancel()
	// The first call asks for 1 s (what the deadline leaves), gets 408, and
	// the second catches the boot.
	got, err := e.provider.WaitStarted(short, m.ID)
	if err != nil || got.State != session.MachineStarted {
		t.Fatalf("WaitStarted = %+v, %v", got, err)
	}
	if n := e.fake.StatusCount(http.StatusRequestTimeout); n < 1 {
		t.Errorf("no 408 seen: the boot fit in one wait call")
	}
}

func TestCreateLostAnswer(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 20*time.Second)
	e.fake.FailNext(flymachinestest.OpCreate, 1, flymachinestest.Fault{Drop: true})
	m, err := e.provider.Create(ctx, spec("7b4d0e5f-9a12-4c3b-8d2e-0000000000ee"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	live := e.fake.LiveMachines(app)
	if len(live) != 1 || live[0].ID != m.ID {
		t.Fatalf("fake holds %+v, provider returned %s", live, m.ID)
	}
	// Creating the same session again (a repeated start) returns it too.
	again, err := e.provider.Create(ctx, spec("7b4d0e5f-9a12-4c3b-8d2e-0000000000ee"))
	if err != nil || again.ID != m.ID {
		t.Fatalf("repeated Create = %+v, %v; want %s", again, err, m.ID)
	}
	if n := len(e.fake.LiveMachines(app)); n != 1 {
		t.Errorf("live machines = %d, want 1", n)
	}
}

func TestCapacityError(t *testing.T) {
	e := setup(t, nil, nil)
	e.fake.FailNext(flymachinestest.OpCreate, 1, flymachinestest.CapacityFault())
	s := spec("7b4d0e5f-9a12-4c3b-8d2e-0000000000ff")
	_, err := e.provider.Create(ctxT(t, 10*time.Second), s)
	if !errors.Is(err, flymachines.ErrCapacity) {
		t.Fatalf("Create = %v, want ErrCapacity", err)
	}
	if !strings.Contains(err.Error(), s.Name) || !strings.Contains(err.Error(), "insufficient resources") {
		t.Errorf("error %q should name the machine and carry Fly's message", err)
	}
}

func TestExitedVMIsDestroyed(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 10*time.Second)
	m, err := e.provider.Create(ctx, spec("7b4d0e5f-9a12-4c3b-8d2e-000000000100"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.provider.WaitStarted(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	// sessionvm exits when the interview ends: auto_destroy with restart
	// policy "no" removes the machine.
	if err := e.fake.Exit(app, m.ID, 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.provider.Get(ctx, m.ID); got.State != session.MachineDestroyed {
		t.Errorf("after exit: %s, want destroyed", got.State)
	}
}

func TestNewValidates(t *testing.T) {
	client, err := flymachines.New(flymachines.Config{Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for name, cfg := range map[string]flyvm.Config{
		"no client": {App: "a", Image: "i"},
		"no app":    {Client: client, Image: "i"},
		"no image":  {Client: client, App: "a"},
		"bad port":  {Client: client, App: "a", Image: "i", SessionPort: 70000},
	} {
		if _, err := flyvm.New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	p, err := flyvm.New(flyvm.Config{Client: client, App: "a", Image: "i"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Create(context.Background(), session.MachineSpec{}); err == nil {
		t.Error("Create without a name succeeded")
	}
}

func TestCapacityErrorTriesTheNextRegion(t *testing.T) {
	e := setup(t, nil, func(c *flyvm.Config) { c.Region, c.Regions = "iad", []string{"ord", "ewr"} })
	e.fake.FailNext(flymachinestest.OpCreate, 2, flymachinestest.CapacityFault())
	id := "8c5e1f60-ab23-4000-8000-000000000077"
	m, err := e.provider.Create(ctxT(t, 10*time.Second), spec(id))
	if err != nil {
		t.Fatalf("create with a capacity error in the first two regions: %v", err)
	}
	if m.Region != "ewr" {
		t.Fatalf("machine region = %q, want ewr (the third preference)", m.Region)
	}
	if live := e.fake.LiveMachines(app); len(live) != 1 {
		t.Fatalf("live machines = %d, want 1", len(live))
	}
	// Every region out of capacity: the start fails with a clear error.
	e.fake.FailNext(flymachinestest.OpCreate, 3, flymachinestest.CapacityFault())
	_, err = e.provider.Create(ctxT(t, 10*time.Second), spec("8c5e1f60-ab23-4000-8000-000000000078"))
	if !errors.Is(err, flymachines.ErrCapacity) || !strings.Contains(err.Error(), "ewr") {
		t.Fatalf("create with no capacity anywhere: %v", err)
	}
}
