package controlclient_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/interviewvm/controlplane/pkg/controlclient"
	"github.com/interviewvm/controlplane/pkg/session"
)

const (
	sessionID = "7b4d0e5f-9a12-4c3d-8e9f-0a1b2c3d4e5f"
	token     = "s3cr3t-session-token-value"
)

// request is what the test server saw.
type request struct {
	Method, Path, Auth, ContentType, Body string
}

// recorder is an httptest server that records requests and answers with
// the next scripted reply.
type recorder struct {
	srv *httptest.Server

	mu      sync.Mutex
	reqs    []request
	replies []reply
}

type reply struct {
	status int
	header map[string]string
	body   string
}

func newRecorder(t *testing.T, replies ...reply) *recorder {
	t.Helper()
	r := &recorder{replies: replies}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, request{
			Method: req.Method, Path: req.URL.Path, Auth: req.Header.Get("Authorization"),
			ContentType: req.Header.Get("Content-Type"), Body: string(b),
		})
		rep := reply{status: http.StatusNoContent}
		if len(r.replies) > 0 {
			rep, r.replies = r.replies[0], r.replies[1:]
		}
		r.mu.Unlock()
		for k, v := range rep.header {
			w.Header().Set(k, v)
		}
		if rep.body != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(rep.status)
		io.WriteString(w, rep.body)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.reqs...)
}

// newClient returns a client of srv with tiny retry waits, logging into
// logs.
func newClient(t *testing.T, baseURL string, logs *bytes.Buffer) *controlclient.Client {
	t.Helper()
	c := controlclient.New(controlclient.Config{
		BaseURL:      baseURL,
		SessionID:    sessionID,
		Token:        token,
		Logger:       slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		RetryMax:     3,
		RetryWaitMin: time.Millisecond,
		RetryWaitMax: 5 * time.Millisecond,
	})
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func checkNoToken(t *testing.T, logs *bytes.Buffer, err error) {
	t.Helper()
	if strings.Contains(logs.String(), token) {
		t.Errorf("token leaked into logs:\n%s", logs)
	}
	if err != nil && strings.Contains(err.Error(), token) {
		t.Errorf("token leaked into error: %v", err)
	}
}

func TestCalls(t *testing.T) {
	// Registered first, so it runs after the server and client cleanups.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	deadline := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := newRecorder(t,
		reply{status: 200, body: `{"session_id":"` + sessionID + `","realtime":"simulated","deadline":"2030-01-02T03:04:05Z","heartbeat_interval_ms":5000,"position":{"title":"SRE","competencies":[{"name":"Go","weight":2}]}}`},
		reply{status: 204},
		reply{status: 200, body: `{"action":"end","reason":"completed"}`},
		reply{status: 200, body: `{"acked_seq":2}`},
		reply{status: 204},
	)
	var logs bytes.Buffer
	c := newClient(t, rec.srv.URL+"/", &logs)
	ctx := t.Context()

	cfg, err := c.Config(ctx)
	if err != nil {
		t.Fatalf("Config: %v", err)
	}
	wantCfg := session.VMConfig{
		SessionID: sessionID, Realtime: "simulated", Deadline: deadline, HeartbeatIntervalMS: 5000,
		Position: session.Position{Title: "SRE", Competencies: []session.Competency{{Name: "Go", Weight: 2}}},
	}
	if diff := cmp.Diff(wantCfg, cfg); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	if err := c.Ready(ctx, session.ReadyRequest{MachineID: "m1"}); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	ans, err := c.Heartbeat(ctx, session.Heartbeat{LastSeq: 3, AckedSeq: 2})
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if want := (session.HeartbeatAnswer{Action: session.ActionEnd, Reason: session.ReasonCompleted}); ans != want {
		t.Errorf("heartbeat answer = %+v, want %+v", ans, want)
	}
	ack, err := c.Transcript(ctx, session.TranscriptBatch{Segments: []session.Segment{
		{Seq: 1, Speaker: session.SpeakerInterviewer, Text: "Hello"},
		{Seq: 2, Speaker: session.SpeakerCandidate, Text: "Hi"},
	}})
	if err != nil {
		t.Fatalf("Transcript: %v", err)
	}
	if ack.AckedSeq != 2 {
		t.Errorf("acked = %d, want 2", ack.AckedSeq)
	}
	if err := c.Ended(ctx, session.Ended{Reason: session.ReasonCompleted, LastSeq: 2}); err != nil {
		t.Fatalf("Ended: %v", err)
	}

	base := "/internal/v1/sessions/" + sessionID
	auth := "Bearer " + token
	want := []request{
		{Method: "GET", Path: base + "/config", Auth: auth},
		{Method: "POST", Path: base + "/ready", Auth: auth, ContentType: "application/json", Body: `{"machine_id":"m1"}`},
		{Method: "POST", Path: base + "/heartbeat", Auth: auth, ContentType: "application/json",
			Body: `{"last_seq":3,"acked_seq":2,"buffered_segments":0,"retries":0}`},
		{Method: "POST", Path: base + "/transcript", Auth: auth, ContentType: "application/json",
			Body: `{"segments":[{"seq":1,"speaker":"interviewer","text":"Hello"},{"seq":2,"speaker":"candidate","text":"Hi"}]}`},
		{Method: "POST", Path: base + "/ended", Auth: auth, ContentType: "application/json", Body: `{"reason":"completed","last_seq":2}`},
	}
	if diff := cmp.Diff(want, rec.requests()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	checkNoToken(t, &logs, nil)
}

func TestRetry503ThenSuccess(t *testing.T) {
	rec := newRecorder(t,
		reply{status: 503, body: `{"error":{"code":"unavailable","message":"db down"}}`},
		reply{status: 502},
		reply{status: 200, body: `{"action":"continue"}`},
	)
	var logs bytes.Buffer
	c := newClient(t, rec.srv.URL, &logs)
	ans, err := c.Heartbeat(t.Context(), session.Heartbeat{LastSeq: 1})
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if ans.Action != session.ActionContinue {
		t.Errorf("action = %q, want continue", ans.Action)
	}
	reqs := rec.requests()
	if len(reqs) != 3 {
		t.Fatalf("got %d requests, want 3", len(reqs))
	}
	for i, r := range reqs {
		if r.Body != `{"last_seq":1,"acked_seq":0,"buffered_segments":0,"retries":0}` {
			t.Errorf("attempt %d body = %q: body not rewound", i, r.Body)
		}
	}
	checkNoToken(t, &logs, nil)
}

func TestRetriesExhausted(t *testing.T) {
	rec := newRecorder(t,
		reply{status: 503, body: `{"error":{"code":"unavailable","message":"db down"}}`},
		reply{status: 503, body: `{"error":{"code":"unavailable","message":"db down"}}`},
		reply{status: 503, body: `{"error":{"code":"unavailable","message":"db down"}}`},
		reply{status: 503, body: `{"error":{"code":"unavailable","message":"still down"}}`},
	)
	var logs bytes.Buffer
	c := newClient(t, rec.srv.URL, &logs)
	err := c.Ready(t.Context(), session.ReadyRequest{})
	var apiErr *controlclient.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %v, want *Error", err)
	}
	if want := (controlclient.Error{Status: 503, Code: "unavailable", Message: "still down"}); *apiErr != want {
		t.Errorf("error = %+v, want %+v", *apiErr, want)
	}
	if got := len(rec.requests()); got != 4 {
		t.Errorf("got %d attempts, want 1 + RetryMax(3)", got)
	}
	if controlclient.IsPermanent(err) {
		t.Errorf("IsPermanent(%v) = true, want false", err)
	}
	if !strings.HasPrefix(err.Error(), "post ready: ") {
		t.Errorf("error %q does not say what failed", err)
	}
	checkNoToken(t, &logs, err)
}

func TestNoRetryOn4xx(t *testing.T) {
	for _, tc := range []struct {
		status    int
		body      string
		wantIs    error
		wantCode  string
		wantMsg   string
		permanent bool
	}{
		{status: 400, body: `{"error":{"code":"invalid_request","message":"bad seq"}}`, wantCode: "invalid_request", wantMsg: "bad seq", permanent: true},
		{status: 409, body: `{"error":{"code":"conflict","message":"interview is completed"}}`, wantIs: controlclient.ErrNotLive, wantCode: "conflict", wantMsg: "interview is completed", permanent: true},
		{status: 401, body: `{"error":{"code":"unauthenticated","message":"invalid token"}}`, wantIs: controlclient.ErrUnauthorized, wantCode: "unauthenticated", wantMsg: "invalid token", permanent: true},
		{status: 404, body: `not json ` + token, wantCode: "not_found", wantMsg: "Not Found", permanent: true},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			rec := newRecorder(t, reply{status: tc.status, body: tc.body}, reply{status: 204})
			var logs bytes.Buffer
			c := newClient(t, rec.srv.URL, &logs)
			_, err := c.Transcript(t.Context(), session.TranscriptBatch{})
			if err == nil {
				t.Fatal("Transcript succeeded, want an error")
			}
			if n := len(rec.requests()); n != 1 {
				t.Errorf("got %d attempts, want 1 (no retry on %d)", n, tc.status)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.wantIs)
			}
			if errors.Is(err, controlclient.ErrNotLive) != (tc.status == 409) {
				t.Errorf("errors.Is(%v, ErrNotLive) wrong for %d", err, tc.status)
			}
			var apiErr *controlclient.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if apiErr.Status != tc.status || apiErr.Code != tc.wantCode || apiErr.Message != tc.wantMsg {
				t.Errorf("error = %+v", *apiErr)
			}
			if got := controlclient.IsPermanent(err); got != tc.permanent {
				t.Errorf("IsPermanent = %v, want %v", got, tc.permanent)
			}
			checkNoToken(t, &logs, err)
		})
	}
}

func TestRetryAfter(t *testing.T) {
	rec := newRecorder(t,
		reply{status: 429, header: map[string]string{"Retry-After": "1"}, body: `{"error":{"code":"rate_limited","message":"slow down"}}`},
		reply{status: 204},
	)
	var logs bytes.Buffer
	c := newClient(t, rec.srv.URL, &logs) // backoff alone would wait ≤5ms
	start := time.Now()
	if err := c.Ended(t.Context(), session.Ended{Reason: session.ReasonEndedByUser}); err != nil {
		t.Fatalf("Ended: %v", err)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("retried after %v, want Retry-After's 1s honoured", d)
	}
	if n := len(rec.requests()); n != 2 {
		t.Errorf("got %d attempts, want 2", n)
	}
}

func TestNetworkErrorRetried(t *testing.T) {
	// A port that refuses connections, then the same calls against a live
	// server: network errors are retried RetryMax times and then reported.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var logs bytes.Buffer
	c := newClient(t, "http://"+addr, &logs)
	_, err = c.Config(t.Context())
	if err == nil {
		t.Fatal("Config against a closed port succeeded")
	}
	if controlclient.IsPermanent(err) {
		t.Errorf("IsPermanent(network error) = true")
	}
	if !strings.HasPrefix(err.Error(), "get config: ") {
		t.Errorf("error %q does not say what failed", err)
	}
	if n := strings.Count(logs.String(), `"msg":"request failed"`); n != 4 {
		t.Errorf("logged %d failed attempts, want 4:\n%s", n, &logs)
	}
	checkNoToken(t, &logs, err)
}

func TestContextCancelStopsRetrying(t *testing.T) {
	rec := newRecorder(t,
		reply{status: 503, header: map[string]string{"Retry-After": "30"}},
		reply{status: 204},
	)
	c := newClient(t, rec.srv.URL, &bytes.Buffer{})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Ready(ctx, session.ReadyRequest{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Ready took %v after its context ended", d)
	}
}

func TestInvalidBaseURL(t *testing.T) {
	c := controlclient.New(controlclient.Config{BaseURL: "not a url", SessionID: sessionID, Token: token})
	if err := c.Ready(t.Context(), session.ReadyRequest{}); err == nil || strings.Contains(err.Error(), token) {
		t.Errorf("Ready with invalid base URL: err = %v", err)
	}
}
