package flymachines_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/interviewvm/controlplane/pkg/flymachines"
	"github.com/interviewvm/controlplane/pkg/flymachines/flymachinestest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testApp   = "interview-sessions"
	testToken = "fo1_secret-token-value-0123456789"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	fake   *flymachinestest.Server
	client *flymachines.Client
	logs   *syncBuffer
	reg    *prometheus.Registry
}

// setup starts a fake requiring testToken and a client for it with fast
// retries and lookups; mutate adjusts the client config.
func setup(t *testing.T, opts []flymachinestest.Option, mutate func(*flymachines.Config)) *env {
	t.Helper()
	fake := flymachinestest.NewServer(append([]flymachinestest.Option{flymachinestest.WithToken(testToken)}, opts...)...)
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	cfg := flymachines.Config{
		BaseURL:           fake.URL,
		Token:             testToken,
		Logger:            slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		RetryWaitMin:      10 * time.Millisecond,
		RetryWaitMax:      50 * time.Millisecond,
		CreateLookupDelay: 10 * time.Millisecond,
		Registerer:        reg,
		// Tests run many calls against one machine; production limits are
		// covered by their own tests.
		DisableRateLimit: true,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := flymachines.New(cfg)
	if err != nil {
		fake.Close()
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		fake.Close()
	})
	return &env{fake: fake, client: c, logs: logs, reg: reg}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func sessionRequest(name, sessionID string) flymachines.CreateRequest {
	return flymachines.CreateRequest{
		Name:   name,
		Region: "ams,iad",
		Config: flymachines.MachineConfig{
			Image:       "registry.fly.io/sessionvm@sha256:abc",
			Env:         map[string]string{"SESSION_ID": sessionID},
			Guest:       &flymachines.Guest{CPUKind: "shared", CPUs: 1, MemoryMB: 256},
			Metadata:    map[string]string{"interview_session_id": sessionID, "managed_by": "test"},
			AutoDestroy: true,
			Restart:     &flymachines.Restart{Policy: flymachines.RestartNo},
		},
		RecoverKey: "interview_session_id",
	}
}

func TestMachineLifecycle(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 20*time.Second)

	m, err := e.client.Create(ctx, testApp, sessionRequest("interview-a", "s-a"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if m.ID == "" || m.Name != "interview-a" || m.State != flymachines.StateCreated || m.Region != "ams" {
		t.Fatalf("Create answered %+v", m)
	}
	if !strings.HasPrefix(m.PrivateIP, "127.0.") {
		t.Errorf("private_ip = %q, want a 127.0.x.y address", m.PrivateIP)
	}
	if got := m.Metadata()["interview_session_id"]; got != "s-a" {
		t.Errorf("metadata session id = %q", got)
	}
	if _, err := e.client.Create(ctx, testApp, sessionRequest("interview-b", "s-b")); err != nil {
		t.Fatalf("Create b: %v", err)
	}

	if err := e.client.Wait(ctx, testApp, m.ID, flymachines.WaitOptions{}); err != nil {
		t.Fatalf("Wait started: %v", err)
	}
	got, err := e.client.Get(ctx, testApp, m.ID)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.State != flymachines.StateStarted || got.PrivateIP != m.PrivateIP || got.Config.Image != m.Config.Image {
		t.Errorf("Get = %+v", got)
	}

	list, err := e.client.List(ctx, testApp, flymachines.ListOptions{Metadata: map[string]string{"interview_session_id": "s-a"}})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != 1 || list[0].ID != m.ID {
		t.Fatalf("List by metadata = %+v, want only %s", list, m.ID)
	}
	all, err := e.client.List(ctx, testApp, flymachines.ListOptions{})
	if err != nil || len(all) != 2 {
		t.Fatalf("List all = %d machines, %v; want 2", len(all), err)
	}

	if err := e.client.Stop(ctx, testApp, m.ID, flymachines.StopRequest{Signal: "SIGTERM", Timeout: flymachines.Duration(5 * time.Second)}); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// auto_destroy: a stopped session machine goes away.
	if err := e.client.Wait(ctx, testApp, m.ID, flymachines.WaitOptions{State: flymachines.StateDestroyed}); err != nil {
		t.Fatalf("Wait destroyed after stop: %v", err)
	}

	b := all[1]
	if err := e.client.Destroy(ctx, testApp, b.ID, true); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if err := e.client.Wait(ctx, testApp, b.ID, flymachines.WaitOptions{State: flymachines.StateDestroyed}); err != nil {
		t.Fatalf("Wait destroyed: %v", err)
	}
	if live, err := e.client.List(ctx, testApp, flymachines.ListOptions{}); err != nil || len(live) != 0 {
		t.Fatalf("List after destroy = %+v, %v; want none", live, err)
	}
	if dead, err := e.client.List(ctx, testApp, flymachines.ListOptions{IncludeDeleted: true}); err != nil || len(dead) != 2 {
		t.Fatalf("List include_deleted = %d, %v; want 2", len(dead), err)
	}
	if gone, err := e.client.Get(ctx, testApp, b.ID); err != nil || gone.State != flymachines.StateDestroyed {
		t.Fatalf("Get destroyed = %+v, %v", gone, err)
	}
	for _, c := range e.fake.Calls() {
		if c.Op == flymachinestest.OpList && !strings.Contains(c.Query, "include_deleted=") {
			t.Errorf("list sent without include_deleted: %q", c.Query)
		}
		if c.Op == flymachinestest.OpDestroy && c.Query != "force=true" {
			t.Errorf("destroy query = %q, want force=true", c.Query)
		}
	}
}

func TestSkipLaunchThenStart(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 20*time.Second)
	req := sessionRequest("interview-warm", "s-warm")
	req.SkipLaunch = true
	m, err := e.client.Create(ctx, testApp, req)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	// A skip_launch machine stays created: waiting for started times out.
	short, cancel := context.WithTimeout(ctx, 1200*time.Millisecond)
	err = e.client.Wait(short, testApp, m.ID, flymachines.WaitOptions{PerCall: time.Second})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on a skip_launch machine = %v, want deadline exceeded", err)
	}
	if got, _ := e.fake.Machine(testApp, m.ID); got.State != flymachines.StateCreated {
		t.Fatalf("state = %s, want created", got.State)
	}
	if err := e.client.Start(ctx, testApp, m.ID); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := e.client.Wait(ctx, testApp, m.ID, flymachines.WaitOptions{}); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	// Starting a running machine is harmless.
	if err := e.client.Start(ctx, testApp, m.ID); err != nil {
		t.Fatalf("second Start: %v", err)
	}
}

func TestMetadataEndpoints(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 10*time.Second)
	m, err := e.client.Create(ctx, testApp, sessionRequest("interview-md", "s-md"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := e.client.SetMetadata(ctx, testApp, m.ID, "phase", "warm"); err != nil {
		t.Fatalf("SetMetadata: %v", err)
	}
	md, err := e.client.GetMetadata(ctx, testApp, m.ID)
	if err != nil {
		t.Fatalf("GetMetadata: %v", err)
	}
	want := map[string]string{"interview_session_id": "s-md", "managed_by": "test", "phase": "warm"}
	if diff := cmp.Diff(want, md); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	list, err := e.client.List(ctx, testApp, flymachines.ListOptions{Metadata: map[string]string{"phase": "warm"}})
	if err != nil || len(list) != 1 {
		t.Fatalf("List by new metadata = %d, %v", len(list), err)
	}
	if err := e.client.DeleteMetadata(ctx, testApp, m.ID, "phase"); err != nil {
		t.Fatalf("DeleteMetadata: %v", err)
	}
	md, err = e.client.GetMetadata(ctx, testApp, m.ID)
	if err != nil || md["phase"] != "" {
		t.Fatalf("after delete: %v, %v", md, err)
	}
	for _, c := range e.fake.Calls() {
		if c.Op == flymachinestest.OpSetMetadata && string(c.Body) != `{"value":"warm"}` {
			t.Errorf("set metadata body = %s", c.Body)
		}
	}
}

func TestAuthorizationHeader(t *testing.T) {
	tests := []struct{ token, want string }{
		{"FlyV1 fm2_aaa,fm2_bbb", "FlyV1 fm2_aaa,fm2_bbb"},
		{"fm2_aaa,fm2_bbb", "FlyV1 fm2_aaa,fm2_bbb"},
		{"plain-oauth-token", "Bearer plain-oauth-token"},
		{"Bearer already-prefixed", "Bearer already-prefixed"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			var got string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got = r.Header.Get("Authorization")
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, `{"id":"m1","state":"started"}`)
			}))
			defer srv.Close()
			c, err := flymachines.New(flymachines.Config{BaseURL: srv.URL, Token: tt.token})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Get(ctxT(t, 5*time.Second), "app", "m1"); err != nil {
				t.Fatalf("Get: %v", err)
			}
			if got != tt.want {
				t.Errorf("Authorization = %q, want %q", got, tt.want)
			}
		})
	}

	t.Run("fake accepts both schemes and rejects a wrong token", func(t *testing.T) {
		fake := flymachinestest.NewServer(flymachinestest.WithToken("good-token"))
		defer fake.Close()
		for _, tok := range []string{"good-token", "FlyV1 good-token"} {
			c, err := flymachines.New(flymachines.Config{BaseURL: fake.URL, Token: tok})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.List(ctxT(t, 5*time.Second), testApp, flymachines.ListOptions{}); err != nil {
				t.Errorf("token %q: %v", tok, err)
			}
			c.Close()
		}
		c, err := flymachines.New(flymachines.Config{BaseURL: fake.URL, Token: "bad-token"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.List(ctxT(t, 5*time.Second), testApp, flymachines.ListOptions{})
		if !errors.Is(err, flymachines.ErrUnauthorized) {
			t.Fatalf("wrong token: %v, want ErrUnauthorized", err)
		}
		if n := fake.CallCount(flymachinestest.OpList); n != 3 {
			t.Errorf("list calls = %d, want 3 (a 401 is not retried)", n)
		}
	})
}

func TestWaitLoopsPast408(t *testing.T) {
	e := setup(t, []flymachinestest.Option{flymachinestest.WithBootDelay(2300 * time.Millisecond)}, nil)
	ctx := ctxT(t, 20*time.Second)
	m, err := e.client.Create(ctx, testApp, sessionRequest("interview-slow", "s-slow"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := e.client.Wait(ctx, testApp, m.ID, flymachines.WaitOptions{PerCall: time.Second}); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	var timeouts, oks int
	for _, c := range e.fake.Calls() {
		if c.Op != flymachinestest.OpWait {
			continue
		}
		q, _ := url.ParseQuery(c.Query)
		if q.Get("timeout") != "1" || q.Get("state") != "started" {
			t.Errorf("wait query = %q", c.Query)
		}
		switch c.Status {
		case http.StatusRequestTimeout:
			timeouts++
		case http.StatusOK:
			oks++
		}
	}
	if timeouts < 2 || oks != 1 {
		t.Errorf("wait answers: %d×408, %d×200; want ≥2×408 then one 200", timeouts, oks)
	}
}

func TestWaitTimeoutCappedAt60s(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 10*time.Second)
	m, err := e.client.Create(ctx, testApp, sessionRequest("interview-cap", "s-cap"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := e.client.Wait(ctx, testApp, m.ID, flymachines.WaitOptions{PerCall: 90 * time.Second}); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	for _, c := range e.fake.Calls() {
		if c.Op == flymachinestest.OpWait {
			q, _ := url.ParseQuery(c.Query)
			if q.Get("timeout") != "9" && q.Get("timeout") != "10" {
				// Bounded by the ctx deadline (10 s).
				t.Errorf("wait timeout = %s, want the ctx's remaining 9–10 s", q.Get("timeout"))
			}
		}
	}

	// Without a deadline the per-call timeout is Fly's maximum, 60 s.
	if err := e.client.Wait(context.Background(), testApp, m.ID, flymachines.WaitOptions{PerCall: 90 * time.Second}); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	calls := e.fake.Calls()
	last := calls[len(calls)-1]
	if q, _ := url.ParseQuery(last.Query); q.Get("timeout") != "60" {
		t.Errorf("wait timeout = %s, want 60", q.Get("timeout"))
	}
}

func TestWaitFailsWhenMachineDestroyed(t *testing.T) {
	e := setup(t, []flymachinestest.Option{flymachinestest.WithBootDelay(-1)}, nil)
	ctx := ctxT(t, 10*time.Second)
	m, err := e.client.Create(ctx, testApp, sessionRequest("interview-doomed", "s-doomed"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- e.client.Wait(ctx, testApp, m.ID, flymachines.WaitOptions{PerCall: 5 * time.Second}) }()
	time.Sleep(100 * time.Millisecond)
	if err := e.client.Destroy(ctx, testApp, m.ID, true); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if err := <-done; !errors.Is(err, flymachines.ErrBadRequest) {
		t.Fatalf("Wait = %v, want a 400 (machine failed to reach desired state)", err)
	}
}

func TestWaitStopsWhenMachineGoneDespite408(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 10*time.Second)
	req := sessionRequest("interview-gone", "s-gone")
	req.SkipLaunch = true
	m, err := e.client.Create(ctx, testApp, req)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := e.client.Destroy(ctx, testApp, m.ID, true); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if err := e.client.Wait(ctx, testApp, m.ID, flymachines.WaitOptions{State: flymachines.StateDestroyed}); err != nil {
		t.Fatalf("Wait destroyed: %v", err)
	}
	// An API that only ever says "not yet".
	e.fake.FailNext(flymachinestest.OpWait, 100, flymachinestest.Fault{Status: http.StatusRequestTimeout})
	err = e.client.Wait(ctx, testApp, m.ID, flymachines.WaitOptions{})
	if !errors.Is(err, flymachines.ErrDestroyed) {
		t.Fatalf("Wait = %v, want ErrDestroyed", err)
	}
	if n := e.fake.CallCount(flymachinestest.OpWait); n != 2 {
		t.Errorf("wait calls = %d, want 2 (one for destroyed, one 408)", n)
	}
}

func TestRetriesReadsOn429And503(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 10*time.Second)
	m, err := e.client.Create(ctx, testApp, sessionRequest("interview-r", "s-r"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	e.fake.FailNext(flymachinestest.OpGet, 1, flymachinestest.Fault{Status: http.StatusTooManyRequests, RetryAfter: time.Second})
	e.fake.FailNext(flymachinestest.OpGet, 1, flymachinestest.Fault{Status: http.StatusServiceUnavailable})
	start := time.Now()
	if _, err := e.client.Get(ctx, testApp, m.ID); err != nil {
		t.Fatalf("Get: %v", err)
	}
	if el := time.Since(start); el < time.Second {
		t.Errorf("Get took %v; Retry-After: 1 was not honoured", el)
	}
	if n := e.fake.CallCount(flymachinestest.OpGet); n != 3 {
		t.Errorf("get calls = %d, want 3", n)
	}
	// Error answers that were retried away are logged with their request id.
	for _, c := range e.fake.Calls() {
		if c.Op == flymachinestest.OpGet && c.Status >= 400 && !strings.Contains(e.logs.String(), "fly_request_id="+c.RequestID) {
			t.Errorf("the %d answer's request id %s is not in the log", c.Status, c.RequestID)
		}
	}

	e.fake.FailNext(flymachinestest.OpList, 2, flymachinestest.Fault{Status: http.StatusBadGateway})
	if _, err := e.client.List(ctx, testApp, flymachines.ListOptions{}); err != nil {
		t.Fatalf("List: %v", err)
	}
	e.fake.FailNext(flymachinestest.OpWait, 1, flymachinestest.Fault{Drop: true})
	if err := e.client.Wait(ctx, testApp, m.ID, flymachines.WaitOptions{}); err != nil {
		t.Fatalf("Wait after a dropped answer: %v", err)
	}
}

func TestRetriesGiveUp(t *testing.T) {
	e := setup(t, nil, func(c *flymachines.Config) { c.RetryMax = 2 })
	ctx := ctxT(t, 10*time.Second)
	e.fake.FailNext(flymachinestest.OpGet, 10, flymachinestest.Fault{Status: http.StatusInternalServerError})
	_, err := e.client.Get(ctx, testApp, "0123456789abcd")
	var fe *flymachines.Error
	if !errors.As(err, &fe) || fe.StatusCode != 500 || !errors.Is(err, flymachines.ErrServer) {
		t.Fatalf("Get = %v, want the last 500 as *Error", err)
	}
	if n := e.fake.CallCount(flymachinestest.OpGet); n != 3 {
		t.Errorf("get calls = %d, want 1 + 2 retries", n)
	}
}

func TestDestroyRetries5xxUntilGone(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 10*time.Second)
	m, err := e.client.Create(ctx, testApp, sessionRequest("interview-d", "s-d"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	e.fake.FailNext(flymachinestest.OpDestroy, 2, flymachinestest.Fault{Status: http.StatusInternalServerError})
	e.fake.FailNext(flymachinestest.OpDestroy, 1, flymachinestest.Fault{Status: http.StatusServiceUnavailable})
	if err := e.client.Destroy(ctx, testApp, m.ID, true); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if err := e.client.Wait(ctx, testApp, m.ID, flymachines.WaitOptions{State: flymachines.StateDestroyed}); err != nil {
		t.Fatalf("Wait destroyed: %v", err)
	}
	if n := e.fake.CallCount(flymachinestest.OpDestroy); n != 4 {
		t.Errorf("destroy calls = %d, want 4", n)
	}

	// A destroy whose answer is lost is retried; the retry finds it gone.
	m2, err := e.client.Create(ctx, testApp, sessionRequest("interview-d2", "s-d2"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	e.fake.FailNext(flymachinestest.OpDestroy, 1, flymachinestest.Fault{Drop: true})
	if err := e.client.Destroy(ctx, testApp, m2.ID, true); err != nil {
		t.Fatalf("Destroy with a lost answer: %v", err)
	}
}

func TestDestroyMissingIsSuccess(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 10*time.Second)
	if err := e.client.Destroy(ctx, testApp, "0000000000dead", true); err != nil {
		t.Fatalf("Destroy of a machine that never existed: %v", err)
	}
	m, err := e.client.Create(ctx, testApp, sessionRequest("interview-twice", "s-twice"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := e.client.Destroy(ctx, testApp, m.ID, true); err != nil {
			t.Fatalf("Destroy #%d: %v", i+1, err)
		}
	}
	if _, err := e.client.Get(ctx, testApp, "0000000000dead"); !errors.Is(err, flymachines.ErrNotFound) {
		t.Fatalf("Get of a missing machine = %v, want ErrNotFound", err)
	}
}

// assertOneMachine checks the fake holds exactly one live machine, m.
func assertOneMachine(t *testing.T, fake *flymachinestest.Server, m *flymachines.Machine) {
	t.Helper()
	live := fake.LiveMachines(testApp)
	if len(live) != 1 {
		t.Fatalf("fake holds %d live machines, want exactly 1: %+v", len(live), live)
	}
	if m == nil || live[0].ID != m.ID {
		t.Fatalf("client returned %+v, fake holds %s", m, live[0].ID)
	}
}

func TestCreateLostAnswerMakesOneMachine(t *testing.T) {
	faults := map[string]flymachinestest.Fault{
		"connection reset":     {Drop: true},
		"timeout":              {Hang: true},
		"500 after the work":   {Status: http.StatusInternalServerError, AfterWork: true},
		"408 after the work":   {Status: http.StatusRequestTimeout, AfterWork: true},
		"502 after a slow job": {Status: http.StatusBadGateway, AfterWork: true, Delay: 50 * time.Millisecond},
	}
	for name, f := range faults {
		t.Run(name, func(t *testing.T) {
			e := setup(t, nil, func(c *flymachines.Config) { c.AttemptTimeout = 500 * time.Millisecond })
			ctx := ctxT(t, 20*time.Second)
			e.fake.FailNext(flymachinestest.OpCreate, 1, f)
			m, err := e.client.Create(ctx, testApp, sessionRequest("interview-lost", "s-lost"))
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			assertOneMachine(t, e.fake, m)
			if n := e.fake.CallCount(flymachinestest.OpCreate); n != 1 {
				t.Errorf("create calls = %d, want 1: the create must not be resent", n)
			}
			if m.Metadata()["interview_session_id"] != "s-lost" {
				t.Errorf("recovered machine metadata = %v", m.Metadata())
			}
		})
	}
}

func TestCreateFailedBeforeStorageCreatesOnce(t *testing.T) {
	for _, status := range []int{http.StatusInternalServerError, http.StatusServiceUnavailable} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			e := setup(t, nil, nil)
			ctx := ctxT(t, 10*time.Second)
			e.fake.FailNext(flymachinestest.OpCreate, 1, flymachinestest.Fault{Status: status})
			m, err := e.client.Create(ctx, testApp, sessionRequest("interview-500", "s-500"))
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			assertOneMachine(t, e.fake, m)
			if n := e.fake.CallCount(flymachinestest.OpCreate); n != 2 {
				t.Errorf("create calls = %d, want 2 (one failed, one after finding none)", n)
			}
			if n := e.fake.CallCount(flymachinestest.OpList); n < 1 {
				t.Errorf("no lookup before creating again")
			}
		})
	}
}

func TestCreateLostAnswerWithListLag(t *testing.T) {
	// Fly's list can lag a create. The first lookups find nothing, the
	// create is sent again, Fly answers name taken, and the machine is
	// found by name once the list catches up.
	e := setup(t, []flymachinestest.Option{flymachinestest.WithListLag(400 * time.Millisecond)}, func(c *flymachines.Config) {
		c.CreateLookupDelay = 20 * time.Millisecond
	})
	ctx := ctxT(t, 20*time.Second)
	e.fake.FailNext(flymachinestest.OpCreate, 1, flymachinestest.Fault{Drop: true})
	m, err := e.client.Create(ctx, testApp, sessionRequest("interview-lag", "s-lag"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	assertOneMachine(t, e.fake, m)
	var statuses []int
	for _, c := range e.fake.Calls() {
		if c.Op == flymachinestest.OpCreate {
			statuses = append(statuses, c.Status)
		}
	}
	if diff := cmp.Diff([]int{0, http.StatusConflict}, statuses); diff != "" {
		t.Errorf("create answers (-want +got):\n%s", diff)
	}
}

func TestCreateNameTakenByAnotherSession(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 10*time.Second)
	if _, err := e.client.Create(ctx, testApp, sessionRequest("interview-x", "s-one")); err != nil {
		t.Fatalf("Create: %v", err)
	}
	_, err := e.client.Create(ctx, testApp, sessionRequest("interview-x", "s-two"))
	if !errors.Is(err, flymachines.ErrNameTaken) || !errors.Is(err, flymachines.ErrConflict) {
		t.Fatalf("Create with a taken name = %v, want ErrNameTaken", err)
	}
	if n := len(e.fake.LiveMachines(testApp)); n != 1 {
		t.Errorf("live machines = %d, want 1", n)
	}

	// The same session creating again gets its machine back.
	m, err := e.client.Create(ctx, testApp, sessionRequest("interview-x", "s-one"))
	if err != nil {
		t.Fatalf("repeated Create: %v", err)
	}
	assertOneMachine(t, e.fake, m)
}

func TestCreateErrorsAreNotRetried(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 10*time.Second)
	e.fake.FailNext(flymachinestest.OpCreate, 1, flymachinestest.CapacityFault())
	_, err := e.client.Create(ctx, testApp, sessionRequest("interview-full", "s-full"))
	if !errors.Is(err, flymachines.ErrCapacity) {
		t.Fatalf("Create = %v, want ErrCapacity", err)
	}
	if !strings.Contains(err.Error(), "insufficient resources") {
		t.Errorf("error %q lacks Fly's message", err)
	}
	if n := e.fake.CallCount(flymachinestest.OpCreate); n != 1 {
		t.Errorf("create calls = %d, want 1", n)
	}
	if n := len(e.fake.LiveMachines(testApp)); n != 0 {
		t.Errorf("live machines = %d, want 0", n)
	}

	bad := sessionRequest("interview-bad", "s-bad")
	bad.Config.Guest.MemoryMB = 300
	if _, err := e.client.Create(ctx, testApp, bad); !errors.Is(err, flymachines.ErrBadRequest) {
		t.Fatalf("Create with invalid memory = %v, want ErrBadRequest", err)
	}
}

func TestCreateRetries429(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 10*time.Second)
	e.fake.FailNext(flymachinestest.OpCreate, 2, flymachinestest.Fault{Status: http.StatusTooManyRequests})
	m, err := e.client.Create(ctx, testApp, sessionRequest("interview-429", "s-429"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	assertOneMachine(t, e.fake, m)
	if n := e.fake.CallCount(flymachinestest.OpCreate); n != 3 {
		t.Errorf("create calls = %d, want 3", n)
	}
}

func TestCreateUnknownOutcomeWithoutRecoveryKey(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 10*time.Second)
	req := sessionRequest("", "s-anon")
	req.RecoverKey = ""
	e.fake.FailNext(flymachinestest.OpCreate, 1, flymachinestest.Fault{Drop: true})
	if _, err := e.client.Create(ctx, testApp, req); err == nil || !strings.Contains(err.Error(), "outcome unknown") {
		t.Fatalf("Create = %v, want an unknown-outcome error", err)
	}
	if n := e.fake.CallCount(flymachinestest.OpCreate); n != 1 {
		t.Errorf("create calls = %d, want 1", n)
	}
}

func TestRateLimiterQueuesBursts(t *testing.T) {
	// Fly's limits scaled ×10 so the test is quick: 10/s, burst 3 per
	// action, on both sides; the client keeps 100 ms of refill (one token
	// at 10/s) in hand.
	e := setup(t,
		[]flymachinestest.Option{flymachinestest.WithRateLimits(
			flymachinestest.Limit{Rate: 10, Burst: 3}, flymachinestest.Limit{Rate: 50, Burst: 10})},
		func(c *flymachines.Config) {
			c.DisableRateLimit = false
			c.ActionLimit = flymachines.Limit{Rate: 10, Burst: 3}
			c.GetLimit = flymachines.Limit{Rate: 50, Burst: 10}
			c.RateMargin = 100 * time.Millisecond
			c.RetryMax = -1 // a 429 would fail the call
		})
	ctx := ctxT(t, 20*time.Second)

	var wg sync.WaitGroup
	errs := make(chan error, 10)
	ids := make(chan string, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := e.client.Create(ctx, testApp, sessionRequest(fmt.Sprintf("interview-burst-%d", i), fmt.Sprintf("s-%d", i)))
			if err != nil {
				errs <- err
				return
			}
			ids <- m.ID
		}()
	}
	wg.Wait()
	close(errs)
	close(ids)
	for err := range errs {
		t.Errorf("Create: %v", err)
	}
	var first string
	for id := range ids {
		first = id
	}

	// Ten starts of one machine: the per-machine bucket queues them.
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.client.Start(ctx, testApp, first); err != nil {
				t.Errorf("Start: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := e.fake.StatusCount(http.StatusTooManyRequests); n != 0 {
		t.Errorf("fake answered %d×429, want none", n)
	}
	if n := len(e.fake.LiveMachines(testApp)); n != 10 {
		t.Errorf("live machines = %d, want 10", n)
	}
	if v := counterSum(t, e.reg, "flymachines_ratelimit_waits_total"); v < 10 {
		t.Errorf("rate-limit waits = %v, want at least 10 queued calls", v)
	}
}

func TestRateLimiterDefaultsFitFlyLimits(t *testing.T) {
	e := setup(t, []flymachinestest.Option{flymachinestest.WithFlyRateLimits()}, func(c *flymachines.Config) {
		c.DisableRateLimit = false
		c.RetryMax = -1
	})
	ctx := ctxT(t, 20*time.Second)
	m, err := e.client.Create(ctx, testApp, sessionRequest("interview-defaults", "s-defaults"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.client.Start(ctx, testApp, m.ID); err != nil {
				t.Errorf("Start: %v", err)
			}
		}()
	}
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.client.Get(ctx, testApp, m.ID); err != nil {
				t.Errorf("Get: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := e.fake.StatusCount(http.StatusTooManyRequests); n != 0 {
		t.Errorf("fake answered %d×429, want none", n)
	}
}

func TestRequestIDInErrorAndLog(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 10*time.Second)
	e.fake.FailNext(flymachinestest.OpStart, 1, flymachinestest.Fault{
		Status: http.StatusPreconditionFailed, Message: "unable to start machine from current state",
	})
	err := e.client.Start(ctx, testApp, "0123456789abcd")
	var fe *flymachines.Error
	if !errors.As(err, &fe) {
		t.Fatalf("Start = %v, want *Error", err)
	}
	calls := e.fake.Calls()
	reqID := calls[len(calls)-1].RequestID
	if reqID == "" || fe.RequestID != reqID {
		t.Fatalf("error request id = %q, fake sent %q", fe.RequestID, reqID)
	}
	if !strings.Contains(err.Error(), reqID) || !strings.Contains(err.Error(), "start machine 0123456789abcd") {
		t.Errorf("error %q lacks the request id or the operation", err)
	}
	if fe.Op != "start" || fe.StatusCode != 412 || fe.Message != "unable to start machine from current state" || !errors.Is(err, flymachines.ErrPrecondition) {
		t.Errorf("error = %+v", fe)
	}
	if !strings.Contains(e.logs.String(), "fly_request_id="+reqID) {
		t.Errorf("log lacks fly_request_id=%s:\n%s", reqID, e.logs)
	}
}

func TestNoTokenInLogs(t *testing.T) {
	e := setup(t, nil, func(c *flymachines.Config) { c.AttemptTimeout = 300 * time.Millisecond })
	ctx := ctxT(t, 20*time.Second)
	e.fake.FailNext(flymachinestest.OpCreate, 1, flymachinestest.Fault{Drop: true})
	m, err := e.client.Create(ctx, testApp, sessionRequest("interview-logs", "s-logs"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	e.fake.FailNext(flymachinestest.OpGet, 2, flymachinestest.Fault{Status: http.StatusServiceUnavailable})
	if _, err := e.client.Get(ctx, testApp, m.ID); err != nil {
		t.Fatalf("Get: %v", err)
	}
	_, _ = e.client.Get(ctx, testApp, "0000000000beef")

	bad, err := flymachines.New(flymachines.Config{
		BaseURL: e.fake.URL, Token: "wrong-" + testToken,
		Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.Get(ctx, testApp, m.ID); err == nil {
		t.Fatal("Get with a wrong token succeeded")
	} else if strings.Contains(err.Error(), testToken) {
		t.Errorf("error contains the token: %v", err)
	}

	logs := e.logs.String()
	if !strings.Contains(logs, "fly_request_id=") || !strings.Contains(logs, "retrying") {
		t.Fatalf("expected error and retry logs, got:\n%s", logs)
	}
	if strings.Contains(logs, testToken) || strings.Contains(logs, "secret-token") {
		t.Fatalf("token leaked into logs:\n%s", logs)
	}
}

func TestAffinityCookieKept(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 10*time.Second)
	m, err := e.client.Create(ctx, testApp, sessionRequest("interview-cookie", "s-cookie"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := e.client.Get(ctx, testApp, m.ID); err != nil {
		t.Fatalf("Get: %v", err)
	}
	calls := e.fake.Calls()
	if calls[0].Affinity {
		t.Errorf("first call carried an affinity cookie it could not have")
	}
	for _, c := range calls[1:] {
		if !c.Affinity {
			t.Errorf("%s %s sent without the affinity cookie", c.Method, c.Path)
		}
	}
}

func TestMetrics(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 10*time.Second)
	m, err := e.client.Create(ctx, testApp, sessionRequest("interview-metrics", "s-metrics"))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	e.fake.FailNext(flymachinestest.OpGet, 1, flymachinestest.Fault{Status: http.StatusServiceUnavailable})
	if _, err := e.client.Get(ctx, testApp, m.ID); err != nil {
		t.Fatalf("Get: %v", err)
	}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
		for _, metric := range mf.GetMetric() {
			for _, l := range metric.GetLabel() {
				if strings.Contains(l.GetValue(), m.ID) || strings.Contains(l.GetValue(), testApp) {
					t.Errorf("%s has label %s=%s: no ids or app names as labels", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
	for _, name := range []string{"flymachines_requests_total", "flymachines_request_duration_seconds", "flymachines_retries_total"} {
		if !seen[name] {
			t.Errorf("metric %s missing", name)
		}
	}
	if v := counterSum(t, e.reg, "flymachines_retries_total"); v != 1 {
		t.Errorf("retries = %v, want 1", v)
	}
	if _, err := flymachines.New(flymachines.Config{Token: "t", Registerer: e.reg}); err == nil {
		t.Errorf("registering twice in one registry succeeded")
	}
}

func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func TestNewValidates(t *testing.T) {
	if _, err := flymachines.New(flymachines.Config{}); err == nil {
		t.Error("New without a token succeeded")
	}
	if _, err := flymachines.New(flymachines.Config{Token: "t", BaseURL: "::not a url"}); err == nil {
		t.Error("New with a bad base URL succeeded")
	}
	c, err := flymachines.New(flymachines.Config{Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestCloseReleasesConnections(t *testing.T) {
	fake := flymachinestest.NewServer()
	defer fake.Close()
	c, err := flymachines.New(flymachines.Config{BaseURL: fake.URL, Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.List(ctxT(t, 5*time.Second), testApp, flymachines.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// With the client's idle connection closed, no connection goroutine
	// may outlive it (the fake is still running).
	if err := goleak.Find(goleak.IgnoreTopFunction("net/http.(*conn).serve"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreAnyFunction("net/http.(*Server).Serve"),
		goleak.IgnoreAnyFunction("net/http/httptest.(*Server).goServe.func1"),
		goleak.IgnoreAnyFunction("net/http.(*conn).serve"),
		goleak.IgnoreAnyFunction("net/http.(*connReader).backgroundRead")); err != nil {
		t.Errorf("client connections outlive Close: %v", err)
	}
}

// TestListSummaries: the summary list is sent with summary=true and the
// metadata filter, decodes Fly's summary form (no config, so no metadata)
// oldest first, retries a 502 and reports a persistent 500 and a body
// that is not a machine list.
func TestListSummaries(t *testing.T) {
	e := setup(t, nil, nil)
	ctx := ctxT(t, 20*time.Second)
	var created []*flymachines.Machine
	for _, name := range []string{"interview-a", "interview-b"} {
		m, err := e.client.Create(ctx, testApp, sessionRequest(name, "s-"+name))
		if err != nil {
			t.Fatalf("Create %s: %v", name, err)
		}
		created = append(created, m)
	}
	other := sessionRequest("not-ours", "s-x")
	other.Config.Metadata["managed_by"] = "someone-else"
	if _, err := e.client.Create(ctx, testApp, other); err != nil {
		t.Fatalf("Create unmanaged: %v", err)
	}
	opts := flymachines.ListOptions{Metadata: map[string]string{"managed_by": "test"}}
	got, err := e.client.ListSummaries(ctx, testApp, opts)
	if err != nil {
		t.Fatalf("ListSummaries: %v", err)
	}
	var want []flymachines.MachineSummary
	for _, m := range created {
		want = append(want, flymachines.MachineSummary{ID: m.ID, Name: m.Name, Region: m.Region,
			InstanceID: m.InstanceID, PrivateIP: m.PrivateIP, CreatedAt: m.CreatedAt})
	}
	for i := range got {
		if got[i].State == "" {
			t.Errorf("summary of %s has no state", got[i].ID)
		}
		got[i].State = "" // it moves on as the machine boots
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ListSummaries (-want +got):\n%s", diff)
	}
	calls := e.fake.Calls()
	last := calls[len(calls)-1]
	if last.Op != flymachinestest.OpList || !strings.Contains(last.Query, "summary=true") || !strings.Contains(last.Query, "metadata.managed_by=test") {
		t.Errorf("list call = %+v, want summary=true and the metadata filter", last)
	}

	e.fake.FailNext(flymachinestest.OpList, 2, flymachinestest.Fault{Status: http.StatusBadGateway})
	if got, err := e.client.ListSummaries(ctx, testApp, opts); err != nil || len(got) != 2 {
		t.Fatalf("ListSummaries after two 502s = %d machines, %v; want 2", len(got), err)
	}
	e.fake.FailNext(flymachinestest.OpList, 10, flymachinestest.Fault{Status: http.StatusInternalServerError})
	var fe *flymachines.Error
	if _, err := e.client.ListSummaries(ctx, testApp, opts); !errors.As(err, &fe) || fe.StatusCode != http.StatusInternalServerError {
		t.Fatalf("ListSummaries on a persistent 500 = %v, want a 500 *Error", err)
	}
}

// TestListSummariesRefusesAnUnexpectedBody: an answer that is not a list
// of machines is an error, not an empty list.
func TestListSummariesRefusesAnUnexpectedBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"machines":[]}`))
	}))
	defer srv.Close()
	c, err := flymachines.New(flymachines.Config{BaseURL: srv.URL, Token: testToken, RetryMax: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ms, err := c.ListSummaries(ctxT(t, 5*time.Second), testApp, flymachines.ListOptions{}); err == nil {
		t.Fatalf("ListSummaries of an object = %+v, want an error", ms)
	}
}
