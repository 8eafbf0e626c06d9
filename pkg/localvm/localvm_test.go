package localvm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/interviewvm/controlplane/pkg/controlclient/controlclienttest"
	"github.com/interviewvm/controlplane/pkg/session"
)

// sessionvmBinary is built by TestMain.
var sessionvmBinary string

const (
	helperEnv     = "LOCALVM_TEST_HELPER"
	helperSpecEnv = "LOCALVM_TEST_SPEC"
	helperBinEnv  = "LOCALVM_TEST_BINARY"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helperMain())
	}
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "localvm-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	sessionvmBinary = filepath.Join(dir, "sessionvm")
	out, err := exec.Command("go", "build", "-o", sessionvmBinary,
		"github.com/interviewvm/controlplane/cmd/sessionvm").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build sessionvm: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// helperMain is a stand-in controller for TestChildDiesWithController: it
// creates one machine, prints the child's pid and waits to be killed.
func helperMain() int {
	var spec session.MachineSpec
	if err := json.Unmarshal([]byte(os.Getenv(helperSpecEnv)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "helper spec:", err)
		return 1
	}
	p := New(Config{Binary: os.Getenv(helperBinEnv)})
	m, err := p.Create(context.Background(), spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper create:", err)
		return 1
	}
	fmt.Println(p.pid(m.ID))
	time.Sleep(time.Hour)
	return 0
}

// pid returns the process id of a machine, for tests.
func (p *Provider) pid(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m := p.machines[id]; m != nil {
		return m.pid()
	}
	return 0
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// env is one test's fake controller and provider.
type env struct {
	ctl  *controlclienttest.Server
	p    *Provider
	logs *syncBuffer
	n    int
}

// setup returns a fake controller and a provider running the sessionvm
// binary, both closed (and goroutine leaks checked) when the test ends.
func setup(t *testing.T, stopTimeout time.Duration) *env {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last
	e := &env{ctl: controlclienttest.NewServer(), logs: &syncBuffer{}}
	t.Cleanup(e.ctl.Close)
	e.p = New(Config{
		Binary:      sessionvmBinary,
		Logger:      slog.New(slog.NewJSONHandler(e.logs, nil)),
		StopTimeout: stopTimeout,
	})
	t.Cleanup(func() {
		if err := e.p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			t.Logf("provider logs:\n%s", e.logs)
		}
	})
	return e
}

// spec registers a new session with the fake controller and returns the
// machine spec the lifecycle would pass.
func (e *env) spec(t *testing.T, heartbeatMS int64) session.MachineSpec {
	t.Helper()
	e.n++
	id := fmt.Sprintf("%08d-0000-4000-8000-000000000000", e.n)
	tenant := "3f2a9c1e-0000-4000-8000-000000000000"
	token := "token-" + strconv.Itoa(e.n) + "-secret"
	e.ctl.AddSession(token, session.VMConfig{
		SessionID:           id,
		TenantID:            tenant,
		Architecture:        session.ArchitectureHybrid,
		Realtime:            "simulated",
		Deadline:            time.Now().Add(time.Hour),
		HeartbeatIntervalMS: heartbeatMS,
	})
	return session.MachineSpec{
		Name:      session.MachineName(session.ArchitectureHybrid, tenant, id),
		SessionID: id,
		TenantID:  tenant,
		Arch:      session.ArchitectureHybrid,
		Env: map[string]string{
			session.EnvSessionID:     id,
			session.EnvSessionToken:  token,
			session.EnvControllerURL: e.ctl.URL,
		},
	}
}

func (e *env) waitCall(t *testing.T, sessionID, route string, n int) controlclienttest.Call {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	c, err := e.ctl.WaitCall(ctx, sessionID, route, n)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// healthz GETs /healthz of a machine and returns the session id it reports.
func healthz(t *testing.T, addr string) string {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("healthz on %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var hz map[string]string
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &hz) != nil || hz["status"] != "ok" {
		t.Fatalf("healthz on %s = %d %s", addr, resp.StatusCode, body)
	}
	return hz["session_id"]
}

// gone reports whether pid no longer runs: it does not exist, or is a
// zombie nobody reaped yet (an orphan in a container without a reaping
// init).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// pid (comm) state ...
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] == 'Z' || stat[i+2] == 'X'
	}
	return false
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var idPattern = regexp.MustCompile(`^local-[0-9a-f]{12}$`)

func TestCreateDestroy(t *testing.T) {
	e := setup(t, 5*time.Second)
	ctx := t.Context()
	spec := e.spec(t, 50)

	m, err := e.p.Create(ctx, spec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if !idPattern.MatchString(m.ID) {
		t.Errorf("id %q does not match %s", m.ID, idPattern)
	}
	if m.Name != spec.Name || m.SessionID != spec.SessionID || m.Provider != "local" ||
		m.Region != "local" || m.State != session.MachineStarted || !strings.HasPrefix(m.Addr, "127.0.0.1:") {
		t.Errorf("machine = %+v", m)
	}
	pid := e.p.pid(m.ID)
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("process %d not running: %v", pid, err)
	}
	if pgid, err := syscall.Getpgid(pid); err != nil || pgid != pid {
		t.Errorf("child pgid = %d (%v), want its own group %d", pgid, err, pid)
	}

	e.waitCall(t, spec.SessionID, controlclienttest.RouteReady, 1)
	if got := healthz(t, m.Addr); got != spec.SessionID {
		t.Errorf("healthz session_id = %q, want %q", got, spec.SessionID)
	}
	if got, err := e.p.WaitStarted(ctx, m.ID); err != nil || got != m {
		t.Errorf("WaitStarted = %+v, %v; want %+v", got, err, m)
	}
	if got, err := e.p.Get(ctx, m.ID); err != nil || got != m {
		t.Errorf("Get = %+v, %v; want %+v", got, err, m)
	}
	if list, err := e.p.List(ctx); err != nil || len(list) != 1 || list[0] != m {
		t.Errorf("List = %+v, %v; want [%+v]", list, err, m)
	}

	if err := e.p.Destroy(ctx, m.ID); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("after Destroy, kill(%d, 0) = %v, want ESRCH (exited and reaped)", pid, err)
	}
	// SIGTERM let sessionvm end gracefully and report it.
	var ended session.Ended
	if err := e.waitCall(t, spec.SessionID, controlclienttest.RouteEnded, 1).Decode(&ended); err != nil {
		t.Fatal(err)
	}
	if ended.Reason != session.ReasonEndedByUser {
		t.Errorf("ended reason = %q, want ended_by_user", ended.Reason)
	}
	if list, _ := e.p.List(ctx); len(list) != 0 {
		t.Errorf("List after Destroy = %+v, want empty", list)
	}
	if got, err := e.p.Get(ctx, m.ID); err != nil || got.State != session.MachineDestroyed {
		t.Errorf("Get after Destroy = %+v, %v; want state destroyed", got, err)
	}
	if err := e.p.Destroy(ctx, m.ID); err != nil {
		t.Errorf("second Destroy = %v, want nil", err)
	}
	if err := e.p.Destroy(ctx, "local-000000000000"); err != nil {
		t.Errorf("Destroy of an unknown id = %v, want nil", err)
	}
	if err := e.p.Start(ctx, m.ID); session.ErrorCode(err) != session.ECONFLICT {
		t.Errorf("Start of a destroyed machine = %v, want conflict", err)
	}

	// The child's output reached the provider's logger, tagged.
	logs := e.logs.String()
	if !strings.Contains(logs, `"machine_id":"`+m.ID+`"`) || !strings.Contains(logs, `"machine_name":"`+m.Name+`"`) ||
		!strings.Contains(logs, `reported ready`) {
		t.Errorf("child output not forwarded with machine attrs:\n%s", logs)
	}
}

func TestChildEnvironment(t *testing.T) {
	if _, err := os.Stat("/proc/self/environ"); err != nil {
		t.Skip("no /proc")
	}
	t.Setenv("CONTROLLER_ONLY_SECRET", "must-not-leak")
	e := setup(t, 5*time.Second)
	spec := e.spec(t, 1000)
	m, err := e.p.Create(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	// Start returns once the kernel has begun the child's exec; until
	// the exec has laid out the new stack, /proc shows an empty
	// environment (seen on a busy machine). Read it once it is there.
	var raw []byte
	for deadline := time.Now().Add(10 * time.Second); ; {
		var err error
		raw, err = os.ReadFile(fmt.Sprintf("/proc/%d/environ", e.p.pid(m.ID)))
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	got := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	slices.Sort(got)
	want := []string{"LISTEN_FD=3", "PATH=" + os.Getenv("PATH")}
	for k, v := range spec.Env {
		want = append(want, k+"="+v)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("child environment = %q, want %q", got, want)
	}
}

func TestExitOnItsOwn(t *testing.T) {
	e := setup(t, 5*time.Second)
	ctx := t.Context()
	spec := e.spec(t, 50)
	e.ctl.SetHeartbeatAnswer(spec.SessionID, session.HeartbeatAnswer{Action: session.ActionEnd, Reason: session.ReasonCompleted})
	m, err := e.p.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	pid := e.p.pid(m.ID)
	e.waitCall(t, spec.SessionID, controlclienttest.RouteEnded, 1)

	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := e.p.Get(ctx, m.ID)
		if err != nil {
			t.Fatalf("Get = %v, want the destroyed machine (kept for DestroyedRetention)", err)
		}
		if got.State == session.MachineDestroyed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("machine still %s after its process ended the session", got.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill(%d, 0) = %v, want ESRCH (reaped)", pid, err)
	}
	if list, _ := e.p.List(ctx); len(list) != 0 {
		t.Errorf("List = %+v, want empty", list)
	}
	if _, err := e.p.WaitStarted(ctx, m.ID); session.ErrorCode(err) != session.ECONFLICT {
		t.Errorf("WaitStarted of a destroyed machine = %v, want conflict", err)
	}
	if err := e.p.Destroy(ctx, m.ID); err != nil {
		t.Errorf("Destroy of an exited machine = %v, want nil", err)
	}
	if !strings.Contains(e.logs.String(), "machine exited on its own") {
		t.Errorf("exit not logged:\n%s", e.logs)
	}

	// Once forgotten, Get says not found.
	e.p.mu.Lock()
	e.p.machines[m.ID].destroyedAt = time.Now().Add(-DestroyedRetention - time.Second)
	e.p.mu.Unlock()
	if _, err := e.p.Get(ctx, m.ID); !errors.Is(err, session.ErrMachineNotFound) {
		t.Errorf("Get of a forgotten machine = %v, want ErrMachineNotFound", err)
	}
}

func TestSkipLaunch(t *testing.T) {
	e := setup(t, 5*time.Second)
	ctx := t.Context()
	spec := e.spec(t, 50)
	spec.SkipLaunch = true
	m, err := e.p.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if m.State != session.MachineCreated || m.Addr == "" {
		t.Fatalf("machine = %+v, want created with an address", m)
	}
	if list, _ := e.p.List(ctx); len(list) != 1 || list[0].State != session.MachineCreated {
		t.Errorf("List = %+v, want the created machine", list)
	}

	waited := make(chan error, 1)
	go func() {
		got, err := e.p.WaitStarted(ctx, m.ID)
		if err == nil && got.State != session.MachineStarted {
			err = fmt.Errorf("state %s", got.State)
		}
		waited <- err
	}()
	select {
	case err := <-waited:
		t.Fatalf("WaitStarted returned before Start: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if calls := e.ctl.Calls(spec.SessionID); len(calls) != 0 {
		t.Fatalf("a created machine called the controller: %+v", calls)
	}
	if err := e.p.Start(ctx, m.ID); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := <-waited; err != nil {
		t.Errorf("WaitStarted: %v", err)
	}
	if err := e.p.Start(ctx, m.ID); err != nil {
		t.Errorf("second Start = %v, want nil", err)
	}
	e.waitCall(t, spec.SessionID, controlclienttest.RouteReady, 1)
	if got := healthz(t, m.Addr); got != spec.SessionID {
		t.Errorf("healthz on the address given at create = %q", got)
	}

	// A created machine destroyed before it ever starts.
	spec2 := e.spec(t, 50)
	spec2.SkipLaunch = true
	m2, err := e.p.Create(ctx, spec2)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.p.Destroy(ctx, m2.ID); err != nil {
		t.Fatalf("Destroy of a created machine: %v", err)
	}
	if got, _ := e.p.Get(ctx, m2.ID); got.State != session.MachineDestroyed {
		t.Errorf("state = %s, want destroyed", got.State)
	}
}

func TestDuplicateName(t *testing.T) {
	e := setup(t, 5*time.Second)
	ctx := t.Context()
	spec := e.spec(t, 1000)
	m1, err := e.p.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := e.p.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if m1 != m2 {
		t.Errorf("second Create = %+v, want the existing %+v", m2, m1)
	}
	if list, _ := e.p.List(ctx); len(list) != 1 {
		t.Errorf("List = %+v, want one machine", list)
	}
	// Once destroyed, the name is free again.
	if err := e.p.Destroy(ctx, m1.ID); err != nil {
		t.Fatal(err)
	}
	m3, err := e.p.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if m3.ID == m1.ID || m3.State != session.MachineStarted {
		t.Errorf("Create after Destroy = %+v, want a new started machine", m3)
	}
}

func TestUnknownMachine(t *testing.T) {
	e := setup(t, time.Second)
	ctx := t.Context()
	const id = "local-0123456789ab"
	if _, err := e.p.Get(ctx, id); !errors.Is(err, session.ErrMachineNotFound) {
		t.Errorf("Get = %v, want ErrMachineNotFound", err)
	}
	if err := e.p.Start(ctx, id); !errors.Is(err, session.ErrMachineNotFound) {
		t.Errorf("Start = %v, want ErrMachineNotFound", err)
	}
	if _, err := e.p.WaitStarted(ctx, id); !errors.Is(err, session.ErrMachineNotFound) {
		t.Errorf("WaitStarted = %v, want ErrMachineNotFound", err)
	}
	if err := e.p.Destroy(ctx, id); err != nil {
		t.Errorf("Destroy = %v, want nil", err)
	}
	if _, err := e.p.Create(ctx, session.MachineSpec{}); session.ErrorCode(err) != session.EINVALID {
		t.Errorf("Create without a name = %v, want invalid", err)
	}
}

func TestBadBinary(t *testing.T) {
	e := setup(t, time.Second)
	p := New(Config{Binary: filepath.Join(t.TempDir(), "missing")})
	defer p.Close()
	if _, err := p.Create(t.Context(), e.spec(t, 1000)); err == nil {
		t.Fatal("Create with a missing binary succeeded")
	}
	if list, _ := p.List(t.Context()); len(list) != 0 {
		t.Errorf("List = %+v, want empty", list)
	}
}

func TestStopTimeoutKillsGroup(t *testing.T) {
	// A VM that ignores SIGTERM, with a child of its own in its group.
	script := filepath.Join(t.TempDir(), "stubborn")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ntrap '' TERM\nsleep 300 &\necho started\nwait\nwhile :; do sleep 1; done\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	e := setup(t, 5*time.Second)
	p := New(Config{Binary: script, StopTimeout: 300 * time.Millisecond, Logger: slog.New(slog.NewJSONHandler(e.logs, nil))})
	defer p.Close()
	ctx := t.Context()
	m, err := p.Create(ctx, session.MachineSpec{Name: "stubborn", Env: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	pid := p.pid(m.ID)
	// Wait for the script to have started its sleep.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(e.logs.String(), `"line":"started"`) {
		if time.Now().After(deadline) {
			t.Fatal("script did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	members := groupMembers(t, pid)
	if len(members) < 2 {
		t.Fatalf("group %d has members %v, want the script and its sleep", pid, members)
	}
	start := time.Now()
	if err := p.Destroy(ctx, m.ID); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 4*time.Second {
		t.Errorf("Destroy took %v, want StopTimeout (300ms) then SIGKILL", d)
	}
	for _, member := range members {
		waitGone(t, member)
	}
	if !strings.Contains(e.logs.String(), "did not stop in time") {
		t.Errorf("escalation not logged")
	}
}

// groupMembers lists the pids of process group pgid.
func groupMembers(t *testing.T, pgid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skip("no /proc")
	}
	var out []int
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
			out = append(out, pid)
		}
	}
	return out
}

func TestConcurrentCreatesAndClose(t *testing.T) {
	e := setup(t, 5*time.Second)
	ctx := t.Context()
	const n = 20
	specs := make([]session.MachineSpec, n)
	for i := range specs {
		specs[i] = e.spec(t, 200)
	}
	machines := make([]session.Machine, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { machines[i], errs[i] = e.p.Create(ctx, specs[i]) })
	}
	wg.Wait()
	addrs := map[string]bool{}
	ids := map[string]bool{}
	for i, m := range machines {
		if errs[i] != nil {
			t.Fatalf("Create %d: %v", i, errs[i])
		}
		if m.State != session.MachineStarted {
			t.Errorf("machine %d state %s", i, m.State)
		}
		addrs[m.Addr] = true
		ids[m.ID] = true
	}
	if len(addrs) != n || len(ids) != n {
		t.Fatalf("%d distinct addresses and %d ids for %d machines", len(addrs), len(ids), n)
	}
	for i, m := range machines {
		e.waitCall(t, specs[i].SessionID, controlclienttest.RouteReady, 1)
		if got := healthz(t, m.Addr); got != specs[i].SessionID {
			t.Errorf("machine %d healthz session = %q, want %q", i, got, specs[i].SessionID)
		}
	}
	if list, _ := e.p.List(ctx); len(list) != n {
		t.Errorf("List has %d machines, want %d", len(list), n)
	}
	pids := make([]int, n)
	for i, m := range machines {
		pids[i] = e.p.pid(m.ID)
	}

	if err := e.p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("after Close, kill(%d, 0) = %v, want ESRCH", pid, err)
		}
	}
	if list, _ := e.p.List(ctx); len(list) != 0 {
		t.Errorf("List after Close = %+v, want empty", list)
	}
	if _, err := e.p.Create(ctx, e.spec(t, 200)); !errors.Is(err, ErrClosed) {
		t.Errorf("Create after Close = %v, want ErrClosed", err)
	}
	if err := e.p.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// TestChildDiesWithController runs a provider in a helper process, kills
// that process with SIGKILL (no Close), and checks the kernel killed its
// VM: the parent-death signal.
func TestChildDiesWithController(t *testing.T) {
	e := setup(t, time.Second)
	spec := e.spec(t, 200)
	specJSON, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), helperEnv+"=1", helperSpecEnv+"="+string(specJSON), helperBinEnv+"="+sessionvmBinary)
	helper.Stderr = os.Stderr
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		helper.Process.Kill()
		helper.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("read child pid from helper: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		t.Fatalf("helper printed %q", line)
	}
	t.Cleanup(func() {
		if !gone(pid) { // the test failed: do not leave an orphan behind
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	// Past ready, the VM only heartbeats and logs nothing more: it will
	// not die of SIGPIPE writing to its dead parent's pipe, only of the
	// parent-death signal.
	e.waitCall(t, spec.SessionID, controlclienttest.RouteHeartbeat, 1)
	if gone(pid) {
		t.Fatalf("VM %d not running before the controller dies", pid)
	}
	// The helper has been running a while: several of its OS threads
	// came and went, yet only its death must kill the VM.
	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	helper.Wait()
	waitGone(t, pid)
}

func TestChildEnv(t *testing.T) {
	t.Setenv("PATH", "/x/bin")
	got := childEnv(nil, map[string]string{"B": "2", "A": "1", session.EnvListenFD: "9"})
	want := []string{"A=1", "B=2", "LISTEN_FD=3", "PATH=/x/bin"}
	if !slices.Equal(got, want) {
		t.Errorf("childEnv = %q, want %q", got, want)
	}
	got = childEnv(map[string]string{"OPENAI_API_KEY": "k"}, map[string]string{"PATH": "/vm/bin"})
	if want := []string{"LISTEN_FD=3", "OPENAI_API_KEY=k", "PATH=/vm/bin"}; !slices.Equal(got, want) {
		t.Errorf("childEnv with PATH = %q, want %q", got, want)
	}
}
