package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/interviewvm/controlplane/pkg/flymachines/flymachinestest"
	"github.com/interviewvm/controlplane/pkg/session"
)

// The fly provider's tests run the whole controller with PROVIDER=fly
// against the fake Machines API; each machine the fake starts is a real
// sessionvm process on the machine's own loopback address.

const (
	flyTestApp   = "interview-sessions"
	flyTestToken = "FlyV1 fm2_controller-test-token"
	flyTestImage = "registry.fly.io/interview-sessions:test"
)

type flyController struct {
	*controller
	fake   *flymachinestest.Server
	runner *flymachinestest.ProcessRunner
	port   string // SESSION_PORT
}

// startFlyController starts a fake Machines API (Fly's token check, one
// app, a ProcessRunner running sessionvm, then opts) and the controller on
// it, with env added to the controller's environment.
func startFlyController(t *testing.T, opts []flymachinestest.Option, env map[string]string) *flyController {
	t.Helper()
	fakeLogs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fake Machines API and VM log:\n%s", fakeLogs.String())
		}
	})
	logger := slog.New(slog.NewJSONHandler(fakeLogs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	runner, err := flymachinestest.NewProcessRunner(flymachinestest.ProcessRunnerConfig{
		Binary: sessionVMBin, Logger: logger, StopTimeout: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	fake := flymachinestest.NewServer(append([]flymachinestest.Option{
		flymachinestest.WithToken(flyTestToken),
		flymachinestest.WithApps(flyTestApp),
		flymachinestest.WithRunner(runner),
		flymachinestest.WithLogger(logger),
		flymachinestest.WithFirstIP(netip.MustParseAddr("127.0.20.2")),
	}, opts...)...)
	t.Cleanup(fake.Close) // in case the controller does not start
	port := freeTCPPort(t)
	all := map[string]string{
		"PROVIDER":      "fly",
		"FLY_API_URL":   fake.URL,
		"FLY_API_TOKEN": flyTestToken,
		"FLY_APP":       flyTestApp,
		"FLY_REGION":    "ams",
		"SESSION_IMAGE": flyTestImage,
		"SESSION_PORT":  port,
	}
	maps.Copy(all, env)
	c := startController(t, all)
	// Cleanups run last-registered first: the machines stop while the
	// controller still runs, so their VMs report ended and exit at once
	// instead of retrying a controller that is gone.
	t.Cleanup(fake.Close)
	return &flyController{controller: c, fake: fake, runner: runner, port: port}
}

func freeTCPPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// sessionMachines returns the fake's machines of one interview, destroyed
// ones included.
func (f *flyController) sessionMachines(sessionID string) []flymachinestest.Machine {
	var out []flymachinestest.Machine
	for _, m := range f.fake.Machines(flyTestApp) {
		if m.Metadata["interview_session_id"] == sessionID {
			out = append(out, m)
		}
	}
	return out
}

// calls returns the fake's calls of op, optionally only those about one
// machine.
func (f *flyController) calls(op flymachinestest.Op, machineID string) []flymachinestest.Call {
	var out []flymachinestest.Call
	for _, c := range f.fake.Calls() {
		if c.Op == op && (machineID == "" || c.MachineID == machineID) {
			out = append(out, c)
		}
	}
	return out
}

// metric returns the value of one sample of the controller's /metrics, or
// -1 when it is absent.
func (f *flyController) metric(t *testing.T, sample string) float64 {
	t.Helper()
	resp, err := http.Get(f.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return f
		}
	}
	return -1
}

// machineRow reads what the controller stored about an interview's machine.
func (f *flyController) machineRow(t *testing.T, id string) (provider, addr string) {
	t.Helper()
	db, err := pgx.Connect(context.Background(), f.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	err = db.QueryRow(context.Background(), `SELECT coalesce(machine_provider, ''), coalesce(machine_addr, '')
		FROM interviews.interview_sessions WHERE id = $1`, id).Scan(&provider, &addr)
	if err != nil {
		t.Fatal(err)
	}
	return provider, addr
}

func (f *flyController) timeline(t *testing.T, tok, id string) []string {
	t.Helper()
	var out []string
	for _, e := range f.mustCall(t, 200, "GET", "/v1/interviews/"+id+"/events", tok, nil)["items"].([]any) {
		ev := e.(map[string]any)
		if ev["actor"] == "insights" {
			continue // the analysis' outcome, not a transition (insights_test.go)
		}
		s := ev["from"].(string) + "→" + ev["to"].(string)
		if r, _ := ev["reason"].(string); r != "" {
			s += " (" + r + ")"
		}
		out = append(out, s)
	}
	return out
}

// startReady starts an interview and requires it ready; it returns the
// machine's id.
func (f *flyController) startReady(t *testing.T, tok, id string) string {
	t.Helper()
	ans := f.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/start?wait=30", tok, nil)
	iv := ans["interview"].(map[string]any)
	if iv["status"] != "ready" {
		t.Fatalf("started interview = %v", iv)
	}
	return iv["machine"].(map[string]any)["id"].(string)
}

func TestFlyInterviewEndToEnd(t *testing.T) {
	f := startFlyController(t, []flymachinestest.Option{
		flymachinestest.WithFlyRateLimits(), flymachinestest.WithBootDelay(50 * time.Millisecond),
	}, nil)
	tenant := uuid.NewString()
	tok := token(t, tenant, "recruiter")
	id := f.seed(t, tok)

	ans := f.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/start?wait=30", tok, nil)
	iv := ans["interview"].(map[string]any)
	m := iv["machine"].(map[string]any)
	wantName := "interview-hybrid-" + strings.ReplaceAll(tenant, "-", "")[:8] + "-" + strings.ReplaceAll(id, "-", "")[:12]
	if iv["status"] != "ready" || m["name"] != wantName || m["region"] != "ams" {
		t.Fatalf("started interview = %v, want ready on machine %s in ams", iv, wantName)
	}
	if conn := ans["connect"].(map[string]any); conn["access_token"] == "" {
		t.Fatalf("connect = %v", conn)
	}

	// Exactly one machine, configured as docs/architecture.md says, and nothing of the
	// interview in it but its id, token, the controller's URL and the VM's
	// configuration, which holds neither a secret nor candidate data.
	ms := f.sessionMachines(id)
	if len(ms) != 1 || ms[0].ID != m["id"] {
		t.Fatalf("fake machines of the interview = %+v, want exactly machine %v", ms, m["id"])
	}
	fm := ms[0]
	if fm.Name != wantName || fm.Image != flyTestImage || !fm.AutoDestroy || fm.RestartPolicy != "no" {
		t.Errorf("machine = name %s image %s auto_destroy %v restart %s", fm.Name, fm.Image, fm.AutoDestroy, fm.RestartPolicy)
	}
	wantMeta := map[string]string{"interview_session_id": id, "tenant_id": tenant, "arch": "hybrid", "managed_by": "interview-controlplane"}
	if !maps.Equal(fm.Metadata, wantMeta) {
		t.Errorf("machine metadata = %v, want %v", fm.Metadata, wantMeta)
	}
	if keys := slices.Sorted(maps.Keys(fm.Env)); !slices.Equal(keys, []string{"CONTROLLER_URL", "SESSION_CONFIG", "SESSION_ID", "SESSION_PORT", "SESSION_TOKEN"}) {
		t.Errorf("machine env keys = %v", keys)
	}
	var vmCfg session.VMConfig
	if err := json.Unmarshal([]byte(fm.Env["SESSION_CONFIG"]), &vmCfg); err != nil || vmCfg.SessionID != id || vmCfg.Position.Title == "" {
		t.Errorf("machine's SESSION_CONFIG = %q (%v), want the VM's configuration", fm.Env["SESSION_CONFIG"], err)
	}
	for _, secret := range []string{fm.Env["SESSION_TOKEN"], "Grace Hopper", "grace@example.com"} {
		if strings.Contains(fm.Env["SESSION_CONFIG"], secret) {
			t.Errorf("machine's SESSION_CONFIG carries %q", secret)
		}
	}
	for _, c := range f.fake.Calls() {
		if c.AuthScheme != "FlyV1" {
			t.Errorf("%s %s sent auth scheme %q, want FlyV1", c.Method, c.Path, c.AuthScheme)
		}
	}

	// The controller reaches the VM at [private_ip]:SESSION_PORT, where one
	// real sessionvm process of this interview listens.
	provider, addr := f.machineRow(t, id)
	if want := net.JoinHostPort(fm.PrivateIP, f.port); provider != "fly" || addr != want {
		t.Fatalf("stored machine = provider %q addr %q, want fly at %s", provider, addr, want)
	}
	pids := vmPIDs(t, id)
	if len(pids) != 1 || f.runner.PIDs()[fm.ID] != pids[0] {
		t.Fatalf("sessionvm processes = %v, runner's = %v", pids, f.runner.PIDs())
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("VM at %s: %v", addr, err)
	}
	var health map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if health["session_id"] != id {
		t.Fatalf("VM at %s answers %v", addr, health)
	}

	// A repeated start is idempotent.
	again := f.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/start?wait=5", tok, nil)
	if again["interview"].(map[string]any)["machine"].(map[string]any)["id"] != fm.ID {
		t.Fatalf("second start changed the machine: %v", again)
	}
	if n := len(f.calls(flymachinestest.OpCreate, "")); n != 1 {
		t.Fatalf("creates = %d, want 1", n)
	}

	f.mustCall(t, 202, "POST", "/v1/interviews/"+id+"/end", tok, nil)
	eventually(t, "the interview to complete", 30*time.Second, func() bool {
		return f.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil)["status"] == "completed"
	})
	eventually(t, "the sessionvm process to exit and be reaped", 30*time.Second, func() bool { return gone(pids[0]) })
	eventually(t, "the machine to be destroyed on Fly", 10*time.Second, func() bool {
		got, _ := f.fake.Machine(flyTestApp, fm.ID)
		return got.State == "destroyed"
	})
	eventually(t, "the machine to be recorded destroyed", 10*time.Second, func() bool {
		got := f.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil)
		return got["machine"].(map[string]any)["state"] == "destroyed"
	})
	final := f.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil)
	if final["end_reason"] != "ended_by_user" {
		t.Errorf("completed interview = %v", final)
	}
	want := []string{"scheduled→provisioning", "provisioning→ready", "ready→ending (ended_by_user)", "ending→completed"}
	if got := f.timeline(t, tok, id); !slices.Equal(got, want) {
		t.Errorf("timeline = %v, want %v", got, want)
	}
	// Fly call metrics are on the controller's registry.
	if v := f.metric(t, `interview_flymachines_requests_total{code="200",op="create"}`); v != 1 {
		t.Errorf("interview_flymachines_requests_total for create = %v, want 1", v)
	}
}

func TestFlyLostCreateAnswerMakesOneMachine(t *testing.T) {
	// New machines show in lists only after a while, like Fly's eventually
	// consistent state: the first lookup after a lost answer misses.
	f := startFlyController(t, []flymachinestest.Option{
		flymachinestest.WithFlyRateLimits(), flymachinestest.WithListLag(700 * time.Millisecond),
	}, nil)
	tok := token(t, uuid.NewString(), "recruiter")

	for name, fault := range map[string]flymachinestest.Fault{
		"connection reset after the create": {Drop: true},
		"503 after the create":              {Status: http.StatusServiceUnavailable, AfterWork: true},
	} {
		t.Run(name, func(t *testing.T) {
			id := f.seed(t, tok)
			creates, lists := len(f.calls(flymachinestest.OpCreate, "")), len(f.calls(flymachinestest.OpList, ""))
			f.fake.FailNext(flymachinestest.OpCreate, 1, fault)
			mid := f.startReady(t, tok, id)
			if ms := f.sessionMachines(id); len(ms) != 1 || ms[0].ID != mid {
				t.Fatalf("machines of the interview = %+v, want exactly %s", ms, mid)
			}
			if n := len(f.calls(flymachinestest.OpCreate, "")) - creates; n != 1 {
				t.Errorf("creates sent = %d, want 1: a create whose answer was lost must not be resent", n)
			}
			if n := len(f.calls(flymachinestest.OpList, "")) - lists; n < 2 {
				t.Errorf("lookups = %d, want at least 2 (the first one misses)", n)
			}
			if pids := vmPIDs(t, id); len(pids) != 1 {
				t.Errorf("sessionvm processes = %v, want one", pids)
			}
		})
	}
	if v := f.metric(t, `interview_flymachines_create_recoveries_total{outcome="found"}`); v != 2 {
		t.Errorf("create recoveries found = %v, want 2", v)
	}
}

func TestFly429BurstsAreAbsorbed(t *testing.T) {
	f := startFlyController(t, []flymachinestest.Option{flymachinestest.WithFlyRateLimits()}, nil)
	tok := token(t, uuid.NewString(), "recruiter")
	id := f.seed(t, tok)
	tooMany := flymachinestest.Fault{Status: http.StatusTooManyRequests}
	f.fake.FailNext(flymachinestest.OpCreate, 3, tooMany)
	f.fake.FailNext(flymachinestest.OpWait, 1, flymachinestest.Fault{Status: http.StatusTooManyRequests, RetryAfter: time.Second})
	f.fake.FailNext(flymachinestest.OpWait, 1, tooMany)
	f.fake.FailNext(flymachinestest.OpGet, 2, tooMany)

	mid := f.startReady(t, tok, id)
	// The VM may report ready before the controller's own wait for
	// "started" is through: let it finish.
	eventually(t, "the controller to see the machine started", 20*time.Second, func() bool {
		return f.metric(t, `interview_flymachines_requests_total{code="200",op="get"}`) >= 1
	})
	if n := f.fake.StatusCount(http.StatusTooManyRequests); n < 7 {
		t.Errorf("429 answers = %d, want at least the 7 injected", n)
	}
	if ms := f.sessionMachines(id); len(ms) != 1 || ms[0].ID != mid {
		t.Fatalf("machines of the interview = %+v, want exactly %s", ms, mid)
	}
	for sample, want := range map[string]float64{
		`interview_flymachines_requests_total{code="429",op="create"}`: 3,
		`interview_flymachines_requests_total{code="200",op="create"}`: 1,
		`interview_flymachines_retries_total{op="create"}`:             3,
		`interview_flymachines_retries_total{op="wait"}`:               2,
		`interview_flymachines_retries_total{op="get"}`:                2,
	} {
		if got := f.metric(t, sample); got != want {
			t.Errorf("%s = %v, want %v", sample, got, want)
		}
	}
}

func TestFlyDestroyRetriedOn5xx(t *testing.T) {
	// Slow heartbeats: the cancelled VM must not notice (and exit, which
	// auto-destroys it) before the controller's destroy gets through.
	f := startFlyController(t, nil, map[string]string{"HEARTBEAT_INTERVAL": "10s", "HEARTBEAT_TIMEOUT": "60s"})
	tok := token(t, uuid.NewString(), "recruiter")
	id := f.seed(t, tok)
	mid := f.startReady(t, tok, id)
	pids := vmPIDs(t, id)
	if len(pids) != 1 {
		t.Fatalf("sessionvm processes = %v", pids)
	}

	f.fake.FailNext(flymachinestest.OpDestroy, 2, flymachinestest.Fault{Status: http.StatusServiceUnavailable})
	f.fake.FailNext(flymachinestest.OpDestroy, 1, flymachinestest.Fault{Status: http.StatusInternalServerError})
	f.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/cancel", tok, nil)
	eventually(t, "the machine to be destroyed on Fly", 20*time.Second, func() bool {
		got, _ := f.fake.Machine(flyTestApp, mid)
		return got.State == "destroyed"
	})
	var statuses []int
	for _, c := range f.calls(flymachinestest.OpDestroy, mid) {
		statuses = append(statuses, c.Status)
	}
	if want := []int{503, 503, 500, 200}; !slices.Equal(statuses, want) {
		t.Errorf("destroy answers = %v, want %v: retried until destroyed", statuses, want)
	}
	eventually(t, "the machine to be recorded destroyed", 10*time.Second, func() bool {
		got := f.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil)
		return got["machine"].(map[string]any)["state"] == "destroyed"
	})
	eventually(t, "the sessionvm process to be stopped and reaped", 10*time.Second, func() bool { return gone(pids[0]) })
}

func TestFlyWaitLoopsPastOneFlyWait(t *testing.T) {
	// Every wait asks Fly for its longest timeout, 60 s, which the fake lets
	// pass 60 times faster; the boot takes 2.5 s, i.e. 150 s of wait time:
	// two waits answer 408 and the client asks again.
	f := startFlyController(t, []flymachinestest.Option{
		flymachinestest.WithWaitScale(60), flymachinestest.WithBootDelay(2500 * time.Millisecond),
	}, nil)
	tok := token(t, uuid.NewString(), "recruiter")
	id := f.seed(t, tok)
	mid := f.startReady(t, tok, id)
	eventually(t, "the wait to be answered", 10*time.Second, func() bool {
		calls := f.calls(flymachinestest.OpWait, mid)
		return len(calls) > 0 && calls[len(calls)-1].Status == 200
	})

	var statuses []int
	for _, c := range f.calls(flymachinestest.OpWait, mid) {
		q, _ := url.ParseQuery(c.Query)
		if q.Get("timeout") != "60" || q.Get("state") != "started" {
			t.Errorf("wait query %q, want state=started and timeout=60", c.Query)
		}
		statuses = append(statuses, c.Status)
	}
	if len(statuses) < 3 || statuses[0] != http.StatusRequestTimeout || statuses[1] != http.StatusRequestTimeout || statuses[len(statuses)-1] != 200 {
		t.Errorf("wait answers = %v, want 408, 408, …, 200", statuses)
	}
	if ms := f.sessionMachines(id); len(ms) != 1 {
		t.Errorf("machines of the interview = %d, want 1", len(ms))
	}
}

func TestFlyCapacityErrorFailsTheStart(t *testing.T) {
	f := startFlyController(t, nil, nil)
	tok := token(t, uuid.NewString(), "recruiter")
	id := f.seed(t, tok)
	f.fake.FailNext(flymachinestest.OpCreate, 1, flymachinestest.CapacityFault())

	st, out := f.call(t, "POST", "/v1/interviews/"+id+"/start?wait=10", tok, nil)
	if st != http.StatusConflict {
		t.Fatalf("start = %d %v, want 409 (the interview failed)", st, out)
	}
	iv := f.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil)
	if iv["status"] != "failed" || iv["end_reason"] != "provision_failed" {
		t.Fatalf("interview = %v, want failed with provision_failed", iv)
	}
	want := []string{"scheduled→provisioning", "provisioning→failed (provision_failed)"}
	if got := f.timeline(t, tok, id); !slices.Equal(got, want) {
		t.Errorf("timeline = %v, want %v", got, want)
	}
	if n := len(f.calls(flymachinestest.OpCreate, "")); n != 1 {
		t.Errorf("creates = %d, want 1: a capacity error is an answer, not retried blindly", n)
	}
	if ms := f.fake.Machines(flyTestApp); len(ms) != 0 {
		t.Errorf("machines = %+v, want none", ms)
	}
	// The log says what failed and why, with Fly's code and request id.
	var failed map[string]any
	for _, line := range strings.Split(f.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "interview failed" && rec["session_id"] == id {
			failed = rec
		}
	}
	detail, _ := failed["detail"].(string)
	for _, s := range []string{"create machine interview-hybrid-", "412", "insufficient resources", "insufficient_capacity", "fly-request-id"} {
		if !strings.Contains(detail, s) {
			t.Errorf("failure log detail %q lacks %q", detail, s)
		}
	}
	if failed["reason"] != "provision_failed" {
		t.Errorf("failure log = %v", failed)
	}
}

func TestFlyFiftyConcurrentStartsUnderRateLimits(t *testing.T) {
	// Fly's limits are 1 request/s per action, burst 3: fifty creates in one
	// app take ~50 s. The fake and the controller both run ten times faster
	// (10/s; bursts unchanged: Fly's 3, the client keeping 200 ms of
	// refill, two tokens at 10/s, in hand) so the test
	// takes seconds; what it shows holds at any rate: a burst of starts
	// queues in the client instead of failing on 429s.
	f := startFlyController(t, []flymachinestest.Option{
		flymachinestest.WithRateLimits(flymachinestest.Limit{Rate: 10, Burst: 3}, flymachinestest.Limit{Rate: 50, Burst: 10}),
		flymachinestest.WithBootDelay(100 * time.Millisecond),
	}, map[string]string{
		"FLY_RATE_LIMIT": "10", "HEARTBEAT_INTERVAL": "1s", "HEARTBEAT_TIMEOUT": "30s",
		"RATE_LIMIT": "1000", "RATE_BURST": "1000", // our own API's per-user limit
	})
	tok := token(t, uuid.NewString(), "recruiter")
	const n = 50
	ids := make([]string, n)
	for i := range ids {
		ids[i] = f.seed(t, tok)
	}

	results := make([]string, n)
	var wg sync.WaitGroup
	hc := &http.Client{Timeout: 90 * time.Second}
	for i, id := range ids {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", f.base+"/v1/interviews/"+id+"/start?wait=60", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := hc.Do(req)
			if err != nil {
				results[i] = err.Error()
				return
			}
			defer resp.Body.Close()
			var out struct {
				Interview struct {
					Status string `json:"status"`
				} `json:"interview"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&out)
			results[i] = fmt.Sprintf("%d %s", resp.StatusCode, out.Interview.Status)
		})
	}
	wg.Wait()
	for i, r := range results {
		if r != "200 ready" {
			t.Errorf("start %d (%s) = %s, want 200 ready", i, ids[i], r)
		}
	}
	if live := f.fake.LiveMachines(flyTestApp); len(live) != n {
		t.Errorf("live machines = %d, want %d", len(live), n)
	}
	// Under heavy CPU load the client's and the fake's buckets drift a
	// little and a create may meet a 429; it is retried, never failed, and
	// never makes a second machine.
	if got, retried := len(f.calls(flymachinestest.OpCreate, "")), f.fake.StatusCount(http.StatusTooManyRequests); got < n || got > n+retried {
		t.Errorf("creates sent = %d, want %d plus at most the %d answered 429", got, n, retried)
	}
	waits := f.metric(t, `interview_flymachines_ratelimit_waits_total{op="create"}`)
	// How many of them queue depends on how fast the API hands the fifty
	// starts to the launcher (on a loaded machine they trickle in at
	// little more than the rate): at least one must have waited, which
	// shows the client queues rather than sends into Fly's 429s.
	if waits < 1 {
		t.Errorf("creates queued by the client's limiter = %v, want some of %d", waits, n)
	}
	t.Logf("%d creates, %v queued by the client's rate limiter, %d answers 429 (retried)",
		n, waits, f.fake.StatusCount(http.StatusTooManyRequests))
}

func TestFlyConfigIsValidated(t *testing.T) {
	env := map[string]string{
		"DATABASE_URL": "postgres://x", "JWT_SECRET": testSecret, "PROVIDER": "fly",
		"FLY_API_URL": "api.machines.dev", "SESSION_PORT": "0",
	}
	err := run(context.Background(), nil, func(k string) string { return env[k] }, io.Discard, io.Discard, nil)
	if err == nil {
		t.Fatal("PROVIDER=fly without its settings was accepted")
	}
	for _, s := range []string{"FLY_API_TOKEN", "FLY_APP", "SESSION_IMAGE", "FLY_API_URL", "SESSION_PORT"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %s", err, s)
		}
	}
}

// A controller that stops leaves the interviews' machines running: they are
// not its children, and another replica (or the restarted one) goes on
// serving them.
func TestFlyProviderCloseLeavesMachinesRunning(t *testing.T) {
	fake := flymachinestest.NewServer(flymachinestest.WithToken(flyTestToken), flymachinestest.WithApps(flyTestApp))
	defer fake.Close()
	cfg := Config{
		Provider: "fly", FlyAPIURL: fake.URL, FlyAPIToken: flyTestToken, FlyApp: flyTestApp,
		SessionImage: flyTestImage, SessionPort: 8080, FlyRateLimit: 1,
	}
	reg := prometheus.NewRegistry()
	machines, closeMachines, err := newMachines(cfg, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	m, err := machines.Create(context.Background(), session.MachineSpec{
		Name: "interview-hybrid-00000000-000000000000", SessionID: id, TenantID: uuid.NewString(), Arch: "hybrid",
		Env: map[string]string{session.EnvSessionID: id},
	})
	if err != nil {
		t.Fatal(err)
	}
	if m, err = machines.WaitStarted(context.Background(), m.ID); err != nil || m.Provider != "fly" {
		t.Fatalf("WaitStarted = %+v, %v", m, err)
	}
	if err := closeMachines(); err != nil {
		t.Fatal(err)
	}
	if got, _ := fake.Machine(flyTestApp, m.ID); got.State != "started" {
		t.Errorf("machine after the provider closed: %s, want started", got.State)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	if !slices.Contains(names, "flymachines_requests_total") {
		t.Errorf("registry lacks the Fly client's metrics: %v", names)
	}
}
