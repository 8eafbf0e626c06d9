package controller

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
)

// receiver is a customer's webhook endpoint: a real HTTP server that
// verifies every message with the reference Standard Webhooks library and
// answers as its mode says.
type receiver struct {
	t    *testing.T
	srv  *httptest.Server
	stop chan struct{}

	mu       sync.Mutex
	verifier *standardwebhooks.Webhook
	mode     string // "ok", "500" or "hang"
	attempts int
	acked    map[string]int // webhook-id → 2xx answers
	events   []receivedEvent
	invalid  []string
	timedOut chan struct{} // one value per hanging request its client gave up on
}

type receivedEvent struct {
	MsgID, Type, InterviewID, TenantID string
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, stop: make(chan struct{}), mode: "ok", acked: map[string]int{}, timedOut: make(chan struct{}, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(func() { close(r.stop); r.srv.Close() })
	return r
}

func (r *receiver) setSecret(secret string) {
	v, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		r.t.Fatalf("reference library refuses secret %q: %v", secret, err)
	}
	r.mu.Lock()
	r.verifier = v
	r.mu.Unlock()
}

func (r *receiver) setMode(m string) {
	r.mu.Lock()
	r.mode = m
	r.mu.Unlock()
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.attempts++
	mode := r.mode
	var ev struct {
		Type string `json:"type"`
		Data struct {
			Interview struct {
				ID       string `json:"id"`
				TenantID string `json:"tenant_id"`
			} `json:"interview"`
		} `json:"data"`
	}
	if r.verifier == nil {
		r.invalid = append(r.invalid, "message before the secret was known")
	} else if err := r.verifier.Verify(body, req.Header); err != nil {
		r.invalid = append(r.invalid, err.Error())
	} else if err := json.Unmarshal(body, &ev); err != nil {
		r.invalid = append(r.invalid, "body: "+err.Error())
	}
	r.mu.Unlock()
	switch mode {
	case "500":
		http.Error(w, "down", http.StatusInternalServerError)
	case "hang":
		select {
		case <-req.Context().Done():
			r.timedOut <- struct{}{}
		case <-r.stop:
		}
	default:
		r.mu.Lock()
		id := req.Header.Get("webhook-id")
		r.acked[id]++
		if r.acked[id] == 1 {
			r.events = append(r.events, receivedEvent{MsgID: id, Type: ev.Type, InterviewID: ev.Data.Interview.ID, TenantID: ev.Data.Interview.TenantID})
		}
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}
}

func (r *receiver) snapshot() (events []receivedEvent, acked map[string]int, invalid []string, attempts int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	acked = make(map[string]int, len(r.acked))
	for k, v := range r.acked {
		acked[k] = v
	}
	return append([]receivedEvent(nil), r.events...), acked, append([]string(nil), r.invalid...), r.attempts
}

// register registers the receiver for the tenant of tok and returns the
// endpoint's id.
func (c *controller) registerWebhook(t *testing.T, tok string, r *receiver, events ...string) string {
	t.Helper()
	out := c.mustCall(t, 201, "POST", "/v1/webhooks", tok, map[string]any{"url": r.srv.URL + "/hooks", "events": events, "description": "test receiver"})
	secret, _ := out["secret"].(string)
	if !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("created endpoint has no whsec_ secret: %v", out)
	}
	r.setSecret(secret)
	return out["id"].(string)
}

// seedInterviews creates n interviews of one candidate and position.
func (c *controller) seedInterviews(t *testing.T, tok string, n int, extra map[string]any) []string {
	t.Helper()
	pos := c.mustCall(t, 201, "POST", "/v1/positions", tok, map[string]any{"title": "Eng", "competencies": []map[string]any{{"name": "Go", "weight": 1}}})
	cand := c.mustCall(t, 201, "POST", "/v1/candidates", tok, map[string]any{"full_name": "Ada", "email": "ada@example.com"})
	var ids []string
	for i := 0; i < n; i++ {
		body := map[string]any{"candidate_id": cand["id"], "position_id": pos["id"]}
		for k, v := range extra {
			body[k] = v
		}
		ids = append(ids, c.mustCall(t, 201, "POST", "/v1/interviews", tok, body)["id"].(string))
	}
	return ids
}

func fastWebhooks(extra map[string]string) map[string]string {
	env := map[string]string{"WEBHOOK_ALLOW_PRIVATE": "true", "WEBHOOK_RETRY_SCHEDULE": "200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms"}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// TestWebhooksSurviveAnOutageAndStayInTheirTenant: a receiver that answers
// 500, then times out, gets every message once it recovers, each webhook-id
// acknowledged once, every one verified by the reference library; another
// tenant's receiver gets only its own tenant's event.
func TestWebhooksSurviveAnOutageAndStayInTheirTenant(t *testing.T) {
	c := startController(t, fastWebhooks(nil))
	tokA := token(t, uuid.NewString(), "admin")
	tokB := token(t, uuid.NewString(), "admin")
	ra, rb := newReceiver(t), newReceiver(t)
	epA := c.registerWebhook(t, tokA, ra, "interview.cancelled", "interview.completed")
	c.registerWebhook(t, tokB, rb, "interview.cancelled")

	ivsA := c.seedInterviews(t, tokA, 3, nil)
	ivsB := c.seedInterviews(t, tokB, 1, nil)

	ra.setMode("500")
	for _, id := range ivsA {
		c.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/cancel", tokA, nil)
	}
	c.mustCall(t, 200, "POST", "/v1/interviews/"+ivsB[0]+"/cancel", tokB, nil)
	eventually(t, "receiver A to refuse a few attempts", 60*time.Second, func() bool {
		_, _, _, n := ra.snapshot()
		return n >= 6
	})
	// The operator sees the endpoint's failing deliveries.
	var failures struct {
		Items []struct {
			EventType      string `json:"event_type"`
			Status         string `json:"status"`
			LastStatusCode *int   `json:"last_status_code"`
		} `json:"items"`
	}
	eventually(t, "the CLI to list a failed attempt", 30*time.Second, func() bool {
		cliJSON(t, localCLIEnv(c), &failures, "webhooks", "failures", epA)
		return len(failures.Items) > 0
	})
	if f := failures.Items[0]; f.Status != "pending" || f.LastStatusCode == nil || *f.LastStatusCode != 500 || f.EventType != "interview.cancelled" {
		t.Fatalf("CLI failure = %+v, want a pending interview.cancelled that got 500", f)
	}
	ra.setMode("hang")
	select {
	case <-ra.timedOut:
	case <-time.After(90 * time.Second):
		t.Fatal("no delivery attempt timed out against the hanging receiver")
	}
	ra.setMode("ok")
	eventually(t, "receiver A to get all three messages", 90*time.Second, func() bool {
		evs, _, _, _ := ra.snapshot()
		return len(evs) == 3
	})
	eventually(t, "receiver B to get its message", 30*time.Second, func() bool {
		evs, _, _, _ := rb.snapshot()
		return len(evs) == 1
	})
	// Every delivery of A is recorded as succeeded after its failures.
	var items []any
	eventually(t, "A's deliveries to be recorded as succeeded", 30*time.Second, func() bool {
		items = c.mustCall(t, 200, "GET", "/v1/webhooks/"+epA+"/deliveries", tokA, nil)["items"].([]any)
		if len(items) != 3 {
			return false
		}
		for _, it := range items {
			if it.(map[string]any)["status"] != "succeeded" {
				return false
			}
		}
		return true
	})
	for _, it := range items {
		d := it.(map[string]any)
		if d["attempts"].(float64) < 2 || d["event_type"] != "interview.cancelled" || d["last_status_code"].(float64) != 204 {
			t.Errorf("delivery after an outage = %v, want succeeded after at least 2 attempts with 204", d)
		}
	}

	evsA, ackedA, invalidA, _ := ra.snapshot()
	evsB, ackedB, invalidB, _ := rb.snapshot()
	if len(invalidA)+len(invalidB) > 0 {
		t.Fatalf("messages the reference library refused: A %v, B %v", invalidA, invalidB)
	}
	for id, n := range ackedA {
		if n != 1 {
			t.Errorf("receiver A acknowledged webhook-id %s %d times, want once", id, n)
		}
	}
	got := map[string]bool{}
	for _, e := range evsA {
		if e.Type != "interview.cancelled" {
			t.Errorf("A got event %+v", e)
		}
		got[e.InterviewID] = true
	}
	for _, id := range ivsA {
		if !got[id] {
			t.Errorf("receiver A never got interview %s (got %+v)", id, evsA)
		}
	}
	if len(evsB) != 1 || evsB[0].InterviewID != ivsB[0] || ackedB[evsB[0].MsgID] != 1 {
		t.Fatalf("receiver B got %+v, want exactly its own interview %s", evsB, ivsB[0])
	}
	// GET /v1/webhooks never shows a secret; B sees only its own endpoint.
	list := c.mustCall(t, 200, "GET", "/v1/webhooks", tokB, nil)["items"].([]any)
	if len(list) != 1 {
		t.Fatalf("tenant B lists %d endpoints, want 1", len(list))
	}
	if _, ok := list[0].(map[string]any)["secret"]; ok {
		t.Fatalf("the list shows a secret: %v", list[0])
	}
	// Tenant B cannot see A's deliveries.
	c.mustCall(t, 404, "GET", "/v1/webhooks/"+epA+"/deliveries", tokB, nil)
}

// TestRolledBackTransitionSendsNothing: when the transaction of a status
// change fails after the webhook hook ran (a deferred check at commit),
// no delivery exists and nothing is sent; the next change is delivered.
func TestRolledBackTransitionSendsNothing(t *testing.T) {
	c := startController(t, fastWebhooks(nil))
	tok := token(t, uuid.NewString(), "admin")
	r := newReceiver(t)
	ep := c.registerWebhook(t, tok, r, "interview.cancelled")
	doomed := c.seedInterviews(t, tok, 1, map[string]any{"external_id": "fail-at-commit"})[0]
	fine := c.seedInterviews(t, tok, 1, nil)[0]

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `
		CREATE FUNCTION interviews.fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'refused at commit'; END $$;
		CREATE CONSTRAINT TRIGGER fail_at_commit AFTER UPDATE ON interviews.interview_sessions
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
			WHEN (NEW.external_id = 'fail-at-commit' AND NEW.status = 'cancelled')
			EXECUTE FUNCTION interviews.fail_at_commit();`); err != nil {
		t.Fatal(err)
	}
	if code, out := c.call(t, "POST", "/v1/interviews/"+doomed+"/cancel", tok, nil); code < 500 {
		t.Fatalf("cancel failing at commit = %d %v, want a 5xx", code, out)
	}
	c.mustCall(t, 200, "POST", "/v1/interviews/"+fine+"/cancel", tok, nil)
	eventually(t, "the committed change to be delivered", 60*time.Second, func() bool {
		evs, _, _, _ := r.snapshot()
		return len(evs) >= 1
	})
	evs, _, invalid, attempts := r.snapshot()
	if len(evs) != 1 || evs[0].InterviewID != fine || attempts != 1 || len(invalid) > 0 {
		t.Fatalf("receiver got %+v (%d attempts, invalid %v), want only interview %s", evs, attempts, invalid, fine)
	}
	var rows, jobs int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM interviews.webhook_deliveries WHERE interview_id = $1`, doomed).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM interviews.river_job WHERE kind = 'webhook_deliver'`).Scan(&jobs); err != nil {
		t.Fatal(err)
	}
	if rows != 0 || jobs != 1 {
		t.Fatalf("after a rolled-back change: %d deliveries of it, %d delivery jobs in all; want 0 and 1", rows, jobs)
	}
	items := c.mustCall(t, 200, "GET", "/v1/webhooks/"+ep+"/deliveries", tok, nil)["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("deliveries = %v, want one", items)
	}
}

// TestWebhookDeliveredByAnotherController: a controller enqueues a
// delivery, fails an attempt and stops; another controller on the same
// database delivers it. A manual retry then sends it again under the same
// webhook-id.
func TestWebhookDeliveredByAnotherController(t *testing.T) {
	r := newReceiver(t)
	r.setMode("500")
	first, stopFirst := startStoppableController(t, fastWebhooks(map[string]string{"WEBHOOK_RETRY_SCHEDULE": "3s,3s,3s,3s,3s,3s,3s,3s,3s,3s"}))
	tok := token(t, uuid.NewString(), "admin")
	ep := first.registerWebhook(t, tok, r, "interview.cancelled")
	iv := first.seedInterviews(t, tok, 1, nil)[0]
	first.mustCall(t, 200, "POST", "/v1/interviews/"+iv+"/cancel", tok, nil)
	eventually(t, "a refused attempt", 60*time.Second, func() bool {
		_, _, _, n := r.snapshot()
		return n >= 1
	})
	stopFirst()
	r.setMode("ok")
	second := startController(t, fastWebhooks(map[string]string{"DATABASE_URL": first.dbURL}))
	eventually(t, "the second controller to deliver", 60*time.Second, func() bool {
		evs, _, _, _ := r.snapshot()
		return len(evs) == 1
	})
	evs, _, invalid, _ := r.snapshot()
	if evs[0].InterviewID != iv || len(invalid) > 0 {
		t.Fatalf("got %+v (invalid %v), want interview %s", evs, invalid, iv)
	}
	var d map[string]any
	eventually(t, "the delivery to be recorded", 30*time.Second, func() bool {
		d = second.mustCall(t, 200, "GET", "/v1/webhooks/"+ep+"/deliveries", tok, nil)["items"].([]any)[0].(map[string]any)
		return d["status"] == "succeeded"
	})
	// A manual retry sends the same message again, once the first job has
	// finished (while one is pending or running, a retry adds nothing).
	conn, err := pgx.Connect(context.Background(), first.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	eventually(t, "the delivery job to complete", 30*time.Second, func() bool {
		var n int
		err := conn.QueryRow(context.Background(), `SELECT count(*) FROM interviews.river_job WHERE kind = 'webhook_deliver' AND state = 'completed'`).Scan(&n)
		return err == nil && n == 1
	})
	second.mustCall(t, 202, "POST", "/v1/webhooks/"+ep+"/deliveries/"+d["id"].(string)+"/retry", tok, nil)
	eventually(t, "the retried message", 60*time.Second, func() bool {
		_, acked, _, _ := r.snapshot()
		return acked[evs[0].MsgID] == 2
	})
	second.mustCall(t, 404, "POST", "/v1/webhooks/"+ep+"/deliveries/"+uuid.NewString()+"/retry", tok, nil)
}

// startStoppableController is startController with a stop the test
// calls (also run at cleanup).
func startStoppableController(t *testing.T, env map[string]string) (*controller, func()) {
	t.Helper()
	c := &controller{dbURL: postgrestest.NewURL(t), logs: &syncBuffer{}}
	full := map[string]string{
		"DATABASE_URL": c.dbURL, "LISTEN_ADDR": "127.0.0.1:0", "JWT_SECRET": testSecret,
		"SESSIONVM_BIN": sessionVMBin, "LOG_FORMAT": "json", "LOG_LEVEL": "debug",
	}
	for k, v := range env {
		full[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		done <- run(ctx, []string{"serve"}, func(k string) string { return full[k] }, io.Discard, c.logs, ready)
	}()
	select {
	case addr := <-ready:
		c.base = "http://" + addr
	case err := <-done:
		cancel()
		t.Fatalf("controller did not start: %v\n%s", err, c.logs.String())
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("controller exited with %v\n%s", err, c.logs.String())
			}
		})
	}
	t.Cleanup(stop)
	return c, stop
}

// TestWebhookRegistrationRefusesPrivateTargets: without
// WEBHOOK_ALLOW_PRIVATE, loopback, private, metadata and names resolving
// to loopback are refused with 400, as are http URLs; nothing is stored.
func TestWebhookRegistrationRefusesPrivateTargets(t *testing.T) {
	c := startController(t, nil)
	tok := token(t, uuid.NewString(), "admin")
	for _, u := range []string{
		"https://127.0.0.1/hook", "https://10.1.2.3/hook", "https://169.254.169.254/latest/meta-data",
		"https://localhost/hook", "https://[::1]/hook", "http://example.com/hook", "not a url",
	} {
		code, out := c.call(t, "POST", "/v1/webhooks", tok, map[string]any{"url": u, "events": []string{"interview.completed"}})
		if code != 400 || out["error"] == nil {
			t.Errorf("register %s = %d %v, want 400 with an error", u, code, out)
		}
	}
	code, out := c.call(t, "POST", "/v1/webhooks", tok, map[string]any{"url": "https://example.com/hook", "events": []string{"interview.exploded"}})
	if code != 400 {
		t.Errorf("unknown event = %d %v, want 400", code, out)
	}
	rec := token(t, uuid.NewString(), "recruiter")
	c.mustCall(t, 403, "POST", "/v1/webhooks", rec, map[string]any{"url": "https://example.com/hook", "events": []string{"interview.completed"}})
	if items := c.mustCall(t, 200, "GET", "/v1/webhooks", tok, nil)["items"].([]any); len(items) != 0 {
		t.Fatalf("refused registrations stored endpoints: %v", items)
	}
	c.mustCall(t, 404, "DELETE", "/v1/webhooks/"+uuid.NewString(), tok, nil)
}

// TestWebhookRegistrationIsIdempotent: the same Idempotency-Key and body
// replay the first answer (one endpoint, the same secret); delete removes
// the endpoint.
func TestWebhookRegistrationIsIdempotent(t *testing.T) {
	c := startController(t, fastWebhooks(nil))
	tok := token(t, uuid.NewString(), "admin")
	r := newReceiver(t)
	post := func() (int, string, map[string]any) {
		req, _ := http.NewRequest("POST", c.base+"/v1/webhooks", strings.NewReader(`{"url":"`+r.srv.URL+`/h","events":["interview.completed"]}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "register-once")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header.Get("Idempotent-Replayed"), out
	}
	code1, _, first := post()
	code2, replayed, second := post()
	if code1 != 201 || code2 != 201 || replayed != "true" || first["id"] != second["id"] || first["secret"] != second["secret"] {
		t.Fatalf("two posts with one key: %d %v, then %d (replayed %q) %v", code1, first, code2, replayed, second)
	}
	if items := c.mustCall(t, 200, "GET", "/v1/webhooks", tok, nil)["items"].([]any); len(items) != 1 {
		t.Fatalf("endpoints = %v, want one", items)
	}
	c.mustCall(t, 204, "DELETE", "/v1/webhooks/"+first["id"].(string), tok, nil)
	if items := c.mustCall(t, 200, "GET", "/v1/webhooks", tok, nil)["items"].([]any); len(items) != 0 {
		t.Fatalf("endpoints after delete = %v, want none", items)
	}
}

// TestInsightsEventsReachWebhooks: an endpoint subscribed to
// insights.ready receives one message, verified, when the analysis of a
// completed interview is stored — and nothing for the interview's own
// status changes, which it did not subscribe to.
func TestInsightsEventsReachWebhooks(t *testing.T) {
	c := startController(t, fastWebhooks(map[string]string{"REALTIME": "synthetic", "SYNTHETIC_TURN": "50ms"}))
	tok := token(t, uuid.NewString(), "admin")
	r := newReceiver(t)
	c.registerWebhook(t, tok, r, "insights.ready", "insights.failed")
	id, _ := c.completedInterview(t, tok)
	eventually(t, "the insights.ready message", 90*time.Second, func() bool {
		evs, _, _, _ := r.snapshot()
		return len(evs) >= 1
	})
	evs, _, invalid, _ := r.snapshot()
	if len(invalid) > 0 {
		t.Fatalf("messages that failed verification: %v", invalid)
	}
	if len(evs) != 1 || evs[0].Type != "insights.ready" || evs[0].InterviewID != id {
		t.Fatalf("received %+v, want one insights.ready about %s", evs, id)
	}
}
