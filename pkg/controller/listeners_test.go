package controller

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// listenAddrs reads the listeners' addresses from the controller's
// "controller listening" log line (JSON logs).
func listenAddrs(t *testing.T, c *controller) (metrics, internal string) {
	t.Helper()
	for _, line := range strings.Split(c.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "controller listening" {
			continue
		}
		m, _ := rec["metrics_addr"].(string)
		i, _ := rec["internal_addr"].(string)
		return "http://" + m, "http://" + i
	}
	t.Fatalf("no \"controller listening\" log line:\n%s", c.logs.String())
	return "", ""
}

// get answers a GET's status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// wantNotFound checks an answer is the contract's 404 error JSON.
func wantNotFound(t *testing.T, what string, status int, body map[string]any) {
	t.Helper()
	e, _ := body["error"].(map[string]any)
	if status != http.StatusNotFound || e["code"] != "not_found" || e["message"] == "" {
		t.Errorf("%s = %d %v, want 404 not_found", what, status, body)
	}
}

// TestMetricsAndInternalOnTheirOwnListeners starts the controller with
// METRICS_ADDR and INTERNAL_ADDR: /metrics and /internal/v1/* answer 404
// on the public listener, each is served on its own listener only, and an
// interview still runs end to end, its VM reporting (ready, heartbeats,
// transcript, end) on the internal listener, the default INTERNAL_URL.
func TestMetricsAndInternalOnTheirOwnListeners(t *testing.T) {
	c := startController(t, map[string]string{
		"METRICS_ADDR": "127.0.0.1:0", "INTERNAL_ADDR": "127.0.0.1:0",
		"REALTIME": "synthetic", "SYNTHETIC_TURN": "50ms",
	})
	metricsBase, internalBase := listenAddrs(t, c)
	internal := &controller{base: internalBase}
	metricsL := &controller{base: metricsBase}
	tok := token(t, uuid.NewString(), "recruiter")
	id := c.seed(t, tok)

	// The public listener: neither /metrics nor the internal API.
	st, body := c.call(t, "GET", "/metrics", "", nil)
	wantNotFound(t, "public GET /metrics", st, body)
	for _, route := range []string{"config", "ready", "heartbeat", "transcript", "ended"} {
		method := "POST"
		if route == "config" {
			method = "GET"
		}
		st, body := c.call(t, method, "/internal/v1/sessions/"+id+"/"+route, "", nil)
		wantNotFound(t, "public "+method+" /internal/v1/sessions/{id}/"+route, st, body)
	}
	// The metrics listener: /metrics and /healthz only.
	if st, text := get(t, metricsBase+"/metrics"); st != 200 || !strings.Contains(text, "interview_http_requests_total") {
		t.Errorf("GET /metrics on METRICS_ADDR = %d, lacks interview_http_requests_total", st)
	}
	metricsL.mustCall(t, 200, "GET", "/healthz", "", nil)
	st, body = metricsL.call(t, "GET", "/v1/interviews/"+id, tok, nil)
	wantNotFound(t, "GET /v1/interviews/{id} on METRICS_ADDR", st, body)
	st, body = metricsL.call(t, "GET", "/internal/v1/sessions/"+id+"/config", "", nil)
	wantNotFound(t, "GET /internal/v1/… on METRICS_ADDR", st, body)
	// The internal listener: the internal API and /healthz only.
	internal.mustCall(t, 200, "GET", "/healthz", "", nil)
	st, body = internal.call(t, "GET", "/metrics", "", nil)
	wantNotFound(t, "GET /metrics on INTERNAL_ADDR", st, body)
	st, body = internal.call(t, "GET", "/v1/interviews/"+id, tok, nil)
	wantNotFound(t, "GET /v1/interviews/{id} on INTERNAL_ADDR", st, body)
	// A VM route without the VM's token is refused there, not hidden.
	if st, _ := internal.call(t, "GET", "/internal/v1/sessions/"+id+"/config", "", nil); st != http.StatusUnauthorized {
		t.Errorf("GET /internal/v1/sessions/{id}/config without a token on INTERNAL_ADDR = %d, want 401", st)
	}
	if got := c.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil); got["status"] != "scheduled" {
		t.Fatalf("the refused calls changed the interview: %v", got)
	}

	// An interview end to end: its VM can only have reported on the
	// internal listener.
	ans := c.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/start?wait=30", tok, nil)
	if st := ans["interview"].(map[string]any)["status"]; st != "ready" {
		t.Fatalf("started interview status = %v, want ready", st)
	}
	eventually(t, "transcript segments from the VM", 30*time.Second, func() bool {
		segs, _ := c.mustCall(t, 200, "GET", "/v1/interviews/"+id+"/transcript", tok, nil)["segments"].([]any)
		return len(segs) >= 2
	})
	c.mustCall(t, 202, "POST", "/v1/interviews/"+id+"/end", tok, nil)
	eventually(t, "the interview to complete", 30*time.Second, func() bool {
		return c.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil)["status"] == "completed"
	})
	s := scrapeMetrics(t, metricsBase)
	if got := s.value("interview_interviews_started_total"); got != 1 {
		t.Errorf("interview_interviews_started_total on METRICS_ADDR = %v, want 1", got)
	}
	if got := s.value(`interview_interviews_ended_total{reason="ended_by_user"}`); got != 1 {
		t.Errorf(`interview_interviews_ended_total{reason="ended_by_user"} = %v, want 1`, got)
	}
}
