package webhooks_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/interviewvm/controlplane/pkg/jobs"
	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
	"github.com/interviewvm/controlplane/pkg/webhooks"
)

// memStore keeps endpoints and deliveries in memory: the worker's Store
// until the PostgreSQL one exists. River, PostgreSQL and the receivers
// are real.
type memStore struct {
	mu        sync.Mutex
	endpoints map[string]*webhooks.Endpoint
	messages  map[string]webhooks.Message
	attempts  map[string][]webhooks.Attempt
	changed   chan struct{}
}

func newMemStore() *memStore {
	return &memStore{
		endpoints: map[string]*webhooks.Endpoint{}, messages: map[string]webhooks.Message{},
		attempts: map[string][]webhooks.Attempt{}, changed: make(chan struct{}, 100),
	}
}

func (s *memStore) add(ep webhooks.Endpoint, deliveryID string, body []byte) webhooks.DeliverArgs {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := ep
	s.endpoints[ep.ID] = &e
	s.messages[deliveryID] = webhooks.Message{ID: deliveryID, Body: body}
	return webhooks.DeliverArgs{DeliveryID: deliveryID, EndpointID: ep.ID, TenantID: "t1"}
}

func (s *memStore) Delivery(_ context.Context, a webhooks.DeliverArgs) (webhooks.Endpoint, webhooks.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ep, ok := s.endpoints[a.EndpointID]
	msg, ok2 := s.messages[a.DeliveryID]
	if !ok || !ok2 {
		return webhooks.Endpoint{}, webhooks.Message{}, fmt.Errorf("delivery %s: %w", a.DeliveryID, webhooks.ErrDeliveryNotFound)
	}
	return *ep, msg, nil
}

func (s *memStore) RecordAttempt(_ context.Context, a webhooks.DeliverArgs, at webhooks.Attempt) error {
	s.mu.Lock()
	s.attempts[a.DeliveryID] = append(s.attempts[a.DeliveryID], at)
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return nil
}

func (s *memStore) DisableEndpoint(_ context.Context, a webhooks.DeliverArgs) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endpoints[a.EndpointID].Disabled = true
	return nil
}

func (s *memStore) history(deliveryID string) []webhooks.Attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]webhooks.Attempt(nil), s.attempts[deliveryID]...)
}

// waitFinal waits until the delivery's last recorded status is final.
func (s *memStore) waitFinal(t *testing.T, ctx context.Context, deliveryID string) []webhooks.Attempt {
	t.Helper()
	for {
		h := s.history(deliveryID)
		if n := len(h); n > 0 && h[n-1].Status != webhooks.StatusPending {
			return h
		}
		select {
		case <-s.changed:
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatalf("delivery %s did not finish; attempts %+v", deliveryID, s.history(deliveryID))
		}
	}
}

// receiver is a real HTTP receiver that verifies every request with the
// reference library; fail decides, per request number (1-based), what to
// answer instead of 204.
type receiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	ids      []string
	verified []bool
	got      chan string
}

func newReceiver(t *testing.T, secret string, answer func(n int) int) *receiver {
	t.Helper()
	verifier, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{got: make(chan string, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.ids = append(r.ids, req.Header.Get("webhook-id"))
		r.verified = append(r.verified, verifier.Verify(body, req.Header) == nil)
		n := len(r.ids)
		r.mu.Unlock()
		w.WriteHeader(answer(n))
		r.got <- req.Header.Get("webhook-id")
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) requests() ([]string, []bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids...), append([]bool(nil), r.verified...)
}

type harness struct {
	pool  *pgxpool.Pool
	store *memStore
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	db, _ := postgrestest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := jobs.Migrate(ctx, db.Pool, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return &harness{pool: db.Pool, store: newMemStore()}
}

// client builds and starts a jobs client working the webhooks queue.
func startClient(t *testing.T, pool *pgxpool.Pool, store webhooks.Store, schedule string, rescueAfter time.Duration) *jobs.Client {
	t.Helper()
	sched, err := webhooks.ParseRetrySchedule(schedule)
	if err != nil {
		t.Fatal(err)
	}
	m, err := webhooks.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("WEBHOOKS_TEST_LOG") != "" { // River's debug log, when investigating
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	d := webhooks.NewDeliverer(webhooks.DelivererConfig{AllowPrivate: true, Timeout: 5 * time.Second}, m)
	workers := river.NewWorkers()
	river.AddWorker(workers, webhooks.NewDeliverWorker(store, d, sched, m, logger))
	c, err := jobs.New(pool, logger, jobs.Config{
		Workers: workers, Queues: map[string]int{webhooks.Queue: 4},
		FetchPollInterval: 100 * time.Millisecond, RescueStuckJobsAfter: rescueAfter, RetryPolicy: sched,
		// River wants RescueStuckJobsAfter >= JobTimeout; the worker's own
		// Timeout still bounds each delivery job.
		JobTimeout: rescueAfter,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("stop jobs client: %v", err)
		}
	})
	return c
}

func newEndpoint(t *testing.T, id, url string) webhooks.Endpoint {
	t.Helper()
	secret, err := webhooks.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return webhooks.Endpoint{ID: id, URL: url, Secret: secret}
}

func body(t *testing.T, typ webhooks.EventType) []byte {
	t.Helper()
	b, err := webhooks.NewBody(typ, time.Now(), map[string]string{"id": "iv_1"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRolledBackEnqueueSendsNothingCommittedOneIsDelivered(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	secret, _ := webhooks.NewSecret()
	rcv := newReceiver(t, secret, func(int) int { return http.StatusNoContent })
	ep := newEndpoint(t, "ep_1", rcv.srv.URL)
	ep.Secret = secret
	c := startClient(t, h.pool, h.store, "10ms", 0)

	rolled := h.store.add(ep, "msg_rolledback", body(t, webhooks.EventInterviewFailed))
	tx, err := h.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.InsertTx(ctx, tx, rolled, nil); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	committed := h.store.add(ep, "msg_committed", body(t, webhooks.EventInterviewCompleted))
	tx, err = h.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.InsertTx(ctx, tx, committed, nil); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	hist := h.store.waitFinal(t, ctx, "msg_committed")
	if len(hist) != 1 || hist[0].Status != webhooks.StatusSucceeded || hist[0].StatusCode != 204 {
		t.Fatalf("committed delivery attempts %+v", hist)
	}
	ids, verified := rcv.requests()
	if len(ids) != 1 || ids[0] != "msg_committed" || !verified[0] {
		t.Fatalf("receiver got %v (verified %v), want only msg_committed, verified", ids, verified)
	}
	var n int
	if err := h.pool.QueryRow(ctx, "SELECT count(*) FROM interviews.river_job WHERE args->>'delivery_id' = 'msg_rolledback'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("rolled-back job rows %d (%v), want 0", n, err)
	}
	if got := h.store.history("msg_rolledback"); len(got) != 0 {
		t.Fatalf("rolled-back delivery was attempted: %+v", got)
	}
}

func TestReceiverFailingThenRecoveringGetsTheSameMessage(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	secret, _ := webhooks.NewSecret()
	rcv := newReceiver(t, secret, func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	ep := newEndpoint(t, "ep_1", rcv.srv.URL)
	ep.Secret = secret
	c := startClient(t, h.pool, h.store, "10ms,20ms,30ms", 0)
	args := h.store.add(ep, "msg_recover", body(t, webhooks.EventInterviewCompleted))
	if _, err := c.Insert(ctx, args, nil); err != nil {
		t.Fatal(err)
	}
	hist := h.store.waitFinal(t, ctx, "msg_recover")
	if len(hist) != 3 || hist[0].Status != webhooks.StatusPending || hist[1].Status != webhooks.StatusPending ||
		hist[2].Status != webhooks.StatusSucceeded || hist[0].StatusCode != 500 || hist[2].StatusCode != 200 {
		t.Fatalf("attempts %+v, want pending(500), pending(500), succeeded(200)", hist)
	}
	for i, a := range hist {
		if a.Number != i+1 {
			t.Fatalf("attempt %d numbered %d", i+1, a.Number)
		}
	}
	if hist[0].NextAttemptAt.IsZero() || hist[2].NextAttemptAt != (time.Time{}) {
		t.Fatalf("next attempt times %v, %v", hist[0].NextAttemptAt, hist[2].NextAttemptAt)
	}
	ids, verified := rcv.requests()
	if len(ids) != 3 {
		t.Fatalf("receiver got %d requests, want 3", len(ids))
	}
	for i := range ids {
		if ids[i] != "msg_recover" || !verified[i] {
			t.Fatalf("request %d: webhook-id %q verified %v", i+1, ids[i], verified[i])
		}
	}
}

func TestScheduleExhaustedFailsAndGoneDisables(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	secret, _ := webhooks.NewSecret()
	down := newReceiver(t, secret, func(int) int { return http.StatusBadGateway })
	gone := newReceiver(t, secret, func(int) int { return http.StatusGone })
	c := startClient(t, h.pool, h.store, "10ms", 0)

	epDown := newEndpoint(t, "ep_down", down.srv.URL)
	epDown.Secret = secret
	epGone := newEndpoint(t, "ep_gone", gone.srv.URL)
	epGone.Secret = secret
	if _, err := c.Insert(ctx, h.store.add(epDown, "msg_down", body(t, webhooks.EventInterviewReady)), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Insert(ctx, h.store.add(epGone, "msg_gone", body(t, webhooks.EventInterviewReady)), nil); err != nil {
		t.Fatal(err)
	}
	hist := h.store.waitFinal(t, ctx, "msg_down")
	if len(hist) != 2 || hist[0].Status != webhooks.StatusPending || hist[1].Status != webhooks.StatusFailed || hist[1].StatusCode != 502 {
		t.Fatalf("exhausted delivery attempts %+v, want pending then failed", hist)
	}
	hist = h.store.waitFinal(t, ctx, "msg_gone")
	if len(hist) != 1 || hist[0].Status != webhooks.StatusFailed || hist[0].StatusCode != 410 {
		t.Fatalf("410 delivery attempts %+v, want one failed", hist)
	}
	ep, _, _ := h.store.Delivery(ctx, webhooks.DeliverArgs{DeliveryID: "msg_gone", EndpointID: "ep_gone"})
	if !ep.Disabled {
		t.Fatal("the endpoint that answered 410 is not disabled")
	}
	// Both jobs end cancelled in River, not retried further (River
	// records a job's end asynchronously: poll).
	for {
		var cancelled, total int
		if err := h.pool.QueryRow(ctx, "SELECT count(*) FILTER (WHERE state = 'cancelled'), count(*) FROM interviews.river_job").Scan(&cancelled, &total); err != nil {
			t.Fatal(err)
		}
		if total != 2 {
			t.Fatalf("%d jobs, want 2", total)
		}
		if cancelled == 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("jobs cancelled %d of 2", cancelled)
		case <-time.After(50 * time.Millisecond):
		}
	}
	// A delivery to the disabled endpoint is dropped without a request.
	before, _ := gone.requests()
	if _, err := c.Insert(ctx, h.store.add(webhooks.Endpoint{ID: "ep_gone", URL: gone.srv.URL, Secret: secret, Disabled: true}, "msg_after", body(t, webhooks.EventInterviewReady)), nil); err != nil {
		t.Fatal(err)
	}
	hist = h.store.waitFinal(t, ctx, "msg_after")
	after, _ := gone.requests()
	if hist[0].Status != webhooks.StatusFailed || len(after) != len(before) {
		t.Fatalf("delivery to a disabled endpoint: %+v, receiver requests %d → %d", hist, len(before), len(after))
	}
}

// childEnv names the variables of the helper process that plays a
// controller killed in the middle of a delivery.
const childEnv = "WEBHOOKS_TEST_CHILD_DB"

func TestMain(m *testing.M) {
	if url := os.Getenv(childEnv); url != "" {
		runChild(url)
		return
	}
	os.Exit(m.Run())
}

// runChild works the webhooks queue until it is killed.
func runChild(dbURL string) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	store := newMemStore()
	store.add(webhooks.Endpoint{ID: "ep_kill", URL: os.Getenv("CHILD_URL"), Secret: os.Getenv("CHILD_SECRET")}, "msg_kill", []byte(os.Getenv("CHILD_BODY")))
	sched, _ := webhooks.ParseRetrySchedule("10ms")
	logger := slog.New(slog.DiscardHandler)
	d := webhooks.NewDeliverer(webhooks.DelivererConfig{AllowPrivate: true, Timeout: 5 * time.Second}, nil)
	workers := river.NewWorkers()
	river.AddWorker(workers, webhooks.NewDeliverWorker(store, d, sched, nil, logger))
	c, err := jobs.New(pool, logger, jobs.Config{Workers: workers, Queues: map[string]int{webhooks.Queue: 1}, FetchPollInterval: 100 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	if err := c.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	select {} // until killed
}

// A controller killed while a delivery is in flight: its job stays
// "running" in River; a controller started afterwards rescues it and the
// receiver gets the message, under the same webhook-id.
func TestDeliveryCompletesAfterControllerKilledMidDelivery(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	secret, _ := webhooks.NewSecret()
	firstArrived := make(chan struct{})
	verifier, _ := standardwebhooks.NewWebhook(secret)
	type req struct {
		id string
		ok bool
	}
	var mu sync.Mutex
	var reqs []req
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		reqs = append(reqs, req{r.Header.Get("webhook-id"), verifier.Verify(b, r.Header) == nil})
		n := len(reqs)
		mu.Unlock()
		if n == 1 {
			close(firstArrived)
			<-r.Context().Done() // hang until the sender dies
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	msgBody := body(t, webhooks.EventInterviewCompleted)

	// Enqueue with an insert-only client, committed.
	ins, err := jobs.New(h.pool, slog.New(slog.DiscardHandler), jobs.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ep := webhooks.Endpoint{ID: "ep_kill", URL: srv.URL, Secret: secret}
	args := h.store.add(ep, "msg_kill", msgBody)
	if _, err := ins.Insert(ctx, args, nil); err != nil {
		t.Fatal(err)
	}

	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"="+postgrestestURL(t, h.pool), "CHILD_URL="+srv.URL, "CHILD_SECRET="+secret, "CHILD_BODY="+string(msgBody))
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-firstArrived:
	case <-ctx.Done():
		_ = child.Process.Kill()
		t.Fatal("the child controller never attempted the delivery")
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	var state string
	if err := h.pool.QueryRow(ctx, "SELECT state::text FROM interviews.river_job").Scan(&state); err != nil || state != "running" {
		t.Fatalf("job state after the kill %q (%v), want running", state, err)
	}

	// River's rescuer runs on the leader every 30 s (not configurable in
	// v0.51.2), so this test takes about half a minute. Start the new
	// controller once the job has been running longer than its
	// RescueStuckJobsAfter (1 s), as it would be after a real restart.
	for {
		var stuck bool
		if err := h.pool.QueryRow(ctx, "SELECT now() - attempted_at > interval '1.2 seconds' FROM interviews.river_job").Scan(&stuck); err != nil {
			t.Fatal(err)
		}
		if stuck {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the job never looked stuck")
		case <-time.After(100 * time.Millisecond):
		}
	}
	// The dead controller was River's leader; its lease would lapse within
	// about 15 s. Let it lapse now so the test does not wait for it.
	if _, err := h.pool.Exec(ctx, "UPDATE interviews.river_leader SET expires_at = now()"); err != nil {
		t.Fatal(err)
	}
	// A new controller: it becomes leader, its rescuer finds the job stuck
	// for over RescueStuckJobsAfter, and it is worked again.
	startClient(t, h.pool, h.store, "10ms", time.Second)
	hist := h.store.waitFinal(t, ctx, "msg_kill")
	if hist[len(hist)-1].Status != webhooks.StatusSucceeded || hist[len(hist)-1].Number < 2 {
		t.Fatalf("attempts after restart %+v, want a later attempt that succeeded", hist)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reqs) != 2 {
		t.Fatalf("receiver got %d requests, want 2 (the interrupted one and the rescued one)", len(reqs))
	}
	for i, r := range reqs {
		if r.id != "msg_kill" || !r.ok {
			t.Fatalf("request %d: webhook-id %q verified %v", i+1, r.id, r.ok)
		}
	}
}

// postgrestestURL returns a connection string for the pool's database.
func postgrestestURL(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	return pool.Config().ConnString()
}
