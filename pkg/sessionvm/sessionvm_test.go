package sessionvm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/interviewvm/controlplane/pkg/controlclient"
	"github.com/interviewvm/controlplane/pkg/controlclient/controlclienttest"
	"github.com/interviewvm/controlplane/pkg/session"
)

// binary is the sessionvm executable built by TestMain.
var binary string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sessionvm-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "sessionvm")
	out, err := exec.Command("go", "build", "-o", binary, "github.com/interviewvm/controlplane/cmd/sessionvm").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build sessionvm: %v\n%s", err, out)
		return 1
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			return 1
		}
	}
	return code
}

const testToken = "tok-9f8e7d6c5b4a-never-log-me"

var sessionSeq struct {
	sync.Mutex
	n int
}

// newSessionID returns a distinct UUID-shaped id per call.
func newSessionID() string {
	sessionSeq.Lock()
	defer sessionSeq.Unlock()
	sessionSeq.n++
	return fmt.Sprintf("00000000-0000-4000-8000-%012d", sessionSeq.n)
}

// syncBuffer is a bytes.Buffer safe for a writer and readers at once.
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

// proc is a running sessionvm.
type proc struct {
	cmd    *exec.Cmd
	addr   string
	stderr *syncBuffer
	done   chan struct{} // closed once exited and reaped
	err    error         // cmd.Wait's error, set before done closes
}

// startVM runs the sessionvm binary for one session of ctl, handing it a
// listening socket on fd 3 as the local provider does. env adds KEY=value
// entries to its environment.
func startVM(t *testing.T, ctl *controlclienttest.Server, sessionID string, env ...string) *proc {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{addr: ln.Addr().String(), stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary)
	p.cmd.Env = []string{
		session.EnvSessionID + "=" + sessionID,
		session.EnvSessionToken + "=" + testToken,
		session.EnvControllerURL + "=" + ctl.URL,
		session.EnvListenFD + "=3",
		"FLY_MACHINE_ID=machine-" + sessionID[len(sessionID)-4:],
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.ExtraFiles = []*os.File{f}
	p.cmd.Stderr = p.stderr
	p.cmd.Stdout = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ln.Close()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("sessionvm stderr:\n%s", p.stderr)
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("sessionvm still running after %v", timeout)
	}
	var exitErr *exec.ExitError
	if errors.As(p.err, &exitErr) {
		return exitErr.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("wait: %v", p.err)
	}
	return 0
}

// checkLogs checks every stderr line is a JSON object carrying the session
// id and that the token appears nowhere.
func checkLogs(t *testing.T, logs, sessionID string) {
	t.Helper()
	if strings.Contains(logs, testToken) {
		t.Errorf("token leaked into logs:\n%s", logs)
	}
	for line := range strings.Lines(logs) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		if m["session_id"] != sessionID {
			t.Errorf("log line without session_id %s: %q", sessionID, line)
		}
	}
}

func waitCall(t *testing.T, ctl *controlclienttest.Server, id, route string, n int) controlclienttest.Call {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := ctl.WaitCall(ctx, id, route, n)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func endedReason(t *testing.T, c controlclienttest.Call) session.Ended {
	t.Helper()
	var e session.Ended
	if err := c.Decode(&e); err != nil {
		t.Fatal(err)
	}
	return e
}

func vmConfig(id string, deadline time.Time) session.VMConfig {
	return session.VMConfig{
		SessionID:           id,
		TenantID:            "3f2a9c1e-0000-4000-8000-000000000000",
		Architecture:        session.ArchitectureHybrid,
		Realtime:            "simulated",
		Deadline:            deadline,
		MaxDurationS:        2700,
		HeartbeatIntervalMS: 50,
		Position:            session.Position{Title: "SRE", Competencies: []session.Competency{{Name: "Go", Weight: 1}}},
	}
}

func TestEndToEnd(t *testing.T) {
	ctl := controlclienttest.NewServer()
	defer ctl.Close()
	id := newSessionID()
	ctl.AddSession(testToken, vmConfig(id, time.Now().Add(time.Hour)))
	ctl.FailNext(id, controlclienttest.RouteConfig, http.StatusServiceUnavailable)
	p := startVM(t, ctl, id)

	ready := waitCall(t, ctl, id, controlclienttest.RouteReady, 1)
	var rr session.ReadyRequest
	if err := ready.Decode(&rr); err != nil {
		t.Fatal(err)
	}
	if want := "machine-" + id[len(id)-4:]; rr.MachineID != want {
		t.Errorf("ready machine_id = %q, want %q", rr.MachineID, want)
	}

	resp, err := http.Get("http://" + p.addr + "/healthz")
	if err != nil {
		t.Fatalf("healthz: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var hz map[string]string
	if resp.StatusCode != 200 || json.Unmarshal(body, &hz) != nil || hz["status"] != "ok" || hz["session_id"] != id {
		t.Errorf("healthz = %d %s", resp.StatusCode, body)
	}

	waitCall(t, ctl, id, controlclienttest.RouteHeartbeat, 3)
	ctl.SetHeartbeatAnswer(id, session.HeartbeatAnswer{Action: session.ActionEnd, Reason: session.ReasonCompleted})
	ended := waitCall(t, ctl, id, controlclienttest.RouteEnded, 1)
	if got := endedReason(t, ended); got != (session.Ended{Reason: session.ReasonCompleted, LastSeq: 0}) {
		t.Errorf("ended = %+v, want completed", got)
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}

	// The flow in order: config (after one 503), ready, heartbeats, ended.
	var routes []string
	for _, c := range ctl.Calls(id) {
		if len(routes) == 0 || routes[len(routes)-1] != c.Route {
			routes = append(routes, c.Route)
		}
	}
	if got, want := strings.Join(routes, ","), "config,ready,heartbeat,ended"; got != want {
		t.Errorf("call sequence = %s, want %s", got, want)
	}
	if _, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
		t.Errorf("VM still accepts connections on %s after exit", p.addr)
	}
	checkLogs(t, p.stderr.String(), id)
}

func TestEndAnswerWithoutReason(t *testing.T) {
	ctl := controlclienttest.NewServer()
	defer ctl.Close()
	id := newSessionID()
	ctl.AddSession(testToken, vmConfig(id, time.Now().Add(time.Hour)))
	ctl.SetHeartbeatAnswer(id, session.HeartbeatAnswer{Action: session.ActionEnd})
	p := startVM(t, ctl, id)
	if got := endedReason(t, waitCall(t, ctl, id, controlclienttest.RouteEnded, 1)); got.Reason != session.ReasonEndedByUser {
		t.Errorf("ended reason = %q, want ended_by_user", got.Reason)
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
}

func TestDeadline(t *testing.T) {
	ctl := controlclienttest.NewServer()
	defer ctl.Close()
	id := newSessionID()
	ctl.AddSession(testToken, vmConfig(id, time.Now().Add(time.Second)))
	p := startVM(t, ctl, id)
	start := time.Now()
	ended := waitCall(t, ctl, id, controlclienttest.RouteEnded, 1)
	if got := endedReason(t, ended); got.Reason != session.ReasonMaxDuration {
		t.Errorf("ended reason = %q, want max_duration", got.Reason)
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("ended %v after start, deadline was 1s", d)
	}
	checkLogs(t, p.stderr.String(), id)
}

func TestSIGTERM(t *testing.T) {
	ctl := controlclienttest.NewServer()
	defer ctl.Close()
	id := newSessionID()
	ctl.AddSession(testToken, vmConfig(id, time.Now().Add(time.Hour)))
	p := startVM(t, ctl, id)
	waitCall(t, ctl, id, controlclienttest.RouteReady, 1)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := endedReason(t, waitCall(t, ctl, id, controlclienttest.RouteEnded, 1)); got.Reason != session.ReasonEndedByUser {
		t.Errorf("ended reason = %q, want ended_by_user", got.Reason)
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	checkLogs(t, p.stderr.String(), id)
}

func TestSIGTERMWhenAlreadyEnded(t *testing.T) {
	// The controller destroys the VM after ending the session itself:
	// ended answers 409 and the VM still exits 0, promptly.
	ctl := controlclienttest.NewServer()
	defer ctl.Close()
	id := newSessionID()
	ctl.AddSession(testToken, vmConfig(id, time.Now().Add(time.Hour)))
	p := startVM(t, ctl, id)
	waitCall(t, ctl, id, controlclienttest.RouteReady, 1)
	ctl.SetHeartbeatAnswer(id, session.HeartbeatAnswer{Action: session.ActionContinue})
	ctl.EndSession(id)
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("exit took %v", d)
	}
}

func TestHeartbeatNotLive(t *testing.T) {
	ctl := controlclienttest.NewServer()
	defer ctl.Close()
	id := newSessionID()
	ctl.AddSession(testToken, vmConfig(id, time.Now().Add(time.Hour)))
	p := startVM(t, ctl, id)
	waitCall(t, ctl, id, controlclienttest.RouteHeartbeat, 1)
	ctl.EndSession(id)
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	for _, c := range ctl.Calls(id) {
		if c.Route == controlclienttest.RouteEnded {
			t.Errorf("VM reported ended after a 409: %+v", c)
		}
	}
	checkLogs(t, p.stderr.String(), id)
}

// TestRun runs sessionvm in process (with the race detector when enabled),
// listening on LISTEN_ADDR, and ends it by cancelling its context.
func TestRun(t *testing.T) {
	ctl := controlclienttest.NewServer()
	defer ctl.Close()
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs after ctl.Close
	id := newSessionID()
	ctl.AddSession(testToken, vmConfig(id, time.Now().Add(time.Hour)))
	env := map[string]string{
		session.EnvSessionID:     id,
		session.EnvSessionToken:  testToken,
		session.EnvControllerURL: ctl.URL,
		session.EnvListenAddr:    "127.0.0.1:0",
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var logs syncBuffer
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, func(k string) string { return env[k] }, &logs) }()
	waitCall(t, ctl, id, controlclienttest.RouteHeartbeat, 2)
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("run = %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if got := endedReason(t, waitCall(t, ctl, id, controlclienttest.RouteEnded, 1)); got.Reason != session.ReasonEndedByUser {
		t.Errorf("ended reason = %q, want ended_by_user", got.Reason)
	}
	checkLogs(t, logs.String(), id)
}

// TestRunWithConfigInEnvironment gives the VM its configuration with the
// machine (SESSION_CONFIG): it reports ready and heartbeats at the given
// interval without ever asking the controller for its configuration.
func TestRunWithConfigInEnvironment(t *testing.T) {
	ctl := controlclienttest.NewServer()
	defer ctl.Close()
	id := newSessionID()
	cfg := vmConfig(id, time.Now().Add(time.Hour))
	// The controller's copy differs: the VM must use the one it was given.
	ctl.AddSession(testToken, session.VMConfig{SessionID: id, Realtime: "no-such-mode", HeartbeatIntervalMS: 3_600_000})
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := startVM(t, ctl, id, session.EnvSessionConfig+"="+string(raw))
	waitCall(t, ctl, id, controlclienttest.RouteReady, 1)
	waitCall(t, ctl, id, controlclienttest.RouteHeartbeat, 2)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	for _, c := range ctl.Calls(id) {
		if c.Route == controlclienttest.RouteConfig {
			t.Fatalf("the VM fetched its configuration although it was given one")
		}
	}
	checkLogs(t, p.stderr.String(), id)
}

func TestRunConfigRefused(t *testing.T) {
	ctl := controlclienttest.NewServer()
	defer ctl.Close()
	id := newSessionID()
	ctl.AddSession(testToken, vmConfig(id, time.Now().Add(time.Hour)))
	for name, tc := range map[string]struct {
		token string
		setup func()
		want  error
	}{
		"unauthorized": {token: "wrong-token", want: controlclient.ErrUnauthorized},
		"not live":     {token: testToken, setup: func() { ctl.EndSession(id) }, want: controlclient.ErrNotLive},
	} {
		t.Run(name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			env := map[string]string{
				session.EnvSessionID:     id,
				session.EnvSessionToken:  tc.token,
				session.EnvControllerURL: ctl.URL,
				session.EnvListenAddr:    "127.0.0.1:0",
			}
			var logs syncBuffer
			err := Run(t.Context(), func(k string) string { return env[k] }, &logs)
			if !errors.Is(err, tc.want) {
				t.Errorf("run = %v, want %v", err, tc.want)
			}
			if strings.Contains(logs.String(), tc.token) {
				t.Errorf("token leaked into logs:\n%s", logs.String())
			}
		})
	}
}

func TestRunBadEnvironment(t *testing.T) {
	base := map[string]string{
		session.EnvSessionID:     "s1",
		session.EnvSessionToken:  "t",
		session.EnvControllerURL: "http://127.0.0.1:1",
	}
	for name, tc := range map[string]struct {
		set   map[string]string
		unset string
		want  string
	}{
		"no session id": {unset: session.EnvSessionID, want: "SESSION_ID is not set"},
		"no token":      {unset: session.EnvSessionToken, want: "SESSION_TOKEN is not set"},
		"no controller": {unset: session.EnvControllerURL, want: "CONTROLLER_URL is not set"},
		"bad fd":        {set: map[string]string{session.EnvListenFD: "x"}, want: "LISTEN_FD"},
		"bad port":      {set: map[string]string{session.EnvSessionPort: "http"}, want: "SESSION_PORT"},
		"bad config":    {set: map[string]string{session.EnvSessionConfig: "{"}, want: "SESSION_CONFIG"},
		"another session's config": {set: map[string]string{session.EnvSessionConfig: `{"session_id":"s2"}`},
			want: "SESSION_CONFIG is the configuration of session"},
	} {
		t.Run(name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tc.set {
				env[k] = v
			}
			delete(env, tc.unset)
			var logs syncBuffer
			err := Run(t.Context(), func(k string) string { return env[k] }, &logs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run = %v, want an error mentioning %s", err, tc.want)
			}
			if !strings.Contains(logs.String(), tc.want) {
				t.Errorf("error not logged:\n%s", logs.String())
			}
		})
	}
}

func TestReadSettingsListen(t *testing.T) {
	base := map[string]string{
		session.EnvSessionID:     "s1",
		session.EnvSessionToken:  "t",
		session.EnvControllerURL: "http://c",
	}
	for name, tc := range map[string]struct {
		set      map[string]string
		wantFD   int
		wantAddr string
	}{
		"default port": {wantFD: -1, wantAddr: ":8080"},
		"session port": {set: map[string]string{session.EnvSessionPort: "9000"}, wantFD: -1, wantAddr: ":9000"},
		"listen addr": {set: map[string]string{session.EnvSessionPort: "9000", session.EnvListenAddr: "127.0.0.2:81"},
			wantFD: -1, wantAddr: "127.0.0.2:81"},
		"listen fd": {set: map[string]string{session.EnvListenAddr: "127.0.0.2:81", session.EnvListenFD: "3"}, wantFD: 3},
	} {
		t.Run(name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tc.set {
				env[k] = v
			}
			s, err := readSettings(func(k string) string { return env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if s.listenFD != tc.wantFD || s.listenAddr != tc.wantAddr {
				t.Errorf("listen fd=%d addr=%q, want fd=%d addr=%q", s.listenFD, s.listenAddr, tc.wantFD, tc.wantAddr)
			}
		})
	}
}
