package controlapi_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/session"
)

// TestIdempotentCreates: replay, mismatch, other tenants, bad keys, and
// persistence across controller instances.
func TestIdempotentCreates(t *testing.T) {
	e := newEnv(t)
	tenant := newTenant()
	tok := tenantToken(t, tenant, "recruiter")
	body := map[string]any{"full_name": "Ada", "email": "ada@example.com"}

	first := e.do("POST", "/v1/candidates", tok, body, "Idempotency-Key", "cand-1")
	if first.status != 201 || first.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first create: %d %v %s", first.status, first.header, first.body)
	}
	again := e.do("POST", "/v1/candidates", tok, body, "Idempotency-Key", "cand-1")
	if again.status != 201 || !bytes.Equal(again.body, first.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %v %s, want 201 %s with Idempotent-Replayed: true", again.status, again.header, again.body, first.body)
	}
	if ct := again.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("replay content type %q", ct)
	}
	if n := e.count(`SELECT count(*) FROM interviews.candidates WHERE tenant_id = $1`, tenant); n != 1 {
		t.Fatalf("%d candidates after a replay, want 1", n)
	}
	// The stored answer is not readable in the table (it holds an e-mail).
	if n := e.count(`SELECT count(*) FROM interviews.idempotency_keys k WHERE position(convert_to('ada@example.com', 'UTF8') IN k.response) > 0
		OR strpos(k::text, 'cand-1') > 0`); n != 0 {
		t.Fatal("the stored answer or the key is readable in the table")
	}

	// Another body, or another route, with the same key: 422.
	other := e.do("POST", "/v1/candidates", tok, map[string]any{"full_name": "Bob", "email": "bob@example.com"}, "Idempotency-Key", "cand-1")
	if other.status != 422 || other.code() != "idempotency_key_reused" {
		t.Fatalf("reused key: %d %s", other.status, other.body)
	}
	if r := e.do("POST", "/v1/positions", tok, map[string]any{"title": "T", "competencies": []map[string]any{{"name": "Go", "weight": 1}}},
		"Idempotency-Key", "cand-1"); r.status != 422 {
		t.Fatalf("reused key on another route: %d %s", r.status, r.body)
	}
	// Another tenant's key of the same name is another key.
	tenantB := newTenant()
	if r := e.do("POST", "/v1/candidates", tenantToken(t, tenantB, "admin"), body, "Idempotency-Key", "cand-1"); r.status != 201 ||
		r.header.Get("Idempotent-Replayed") != "" || bytes.Equal(r.body, first.body) {
		t.Fatalf("tenant B with the same key: %d %v %s", r.status, r.header, r.body)
	}
	// An API key of the tenant shares the tenant's keys.
	apiKey := e.createKey(tenantToken(t, tenant, "admin"), "backend", "recruiter")["key"].(string)
	if r := e.do("POST", "/v1/candidates", apiKey, body, "Idempotency-Key", "cand-1"); r.status != 201 || !bytes.Equal(r.body, first.body) {
		t.Fatalf("the tenant's API key with the same key: %d %s", r.status, r.body)
	}

	// Bad keys: 400, nothing stored.
	before := e.count(`SELECT count(*) FROM interviews.idempotency_keys`)
	for _, k := range []string{strings.Repeat("k", 256), "ключ", "tab\there"} {
		if r := e.do("POST", "/v1/candidates", tok, body, "Idempotency-Key", k); r.status != 400 || r.code() != "invalid_request" {
			t.Fatalf("Idempotency-Key %q: %d %s", k, r.status, r.body)
		}
	}
	if after := e.count(`SELECT count(*) FROM interviews.idempotency_keys`); after != before {
		t.Fatalf("bad keys stored rows: %d → %d", before, after)
	}
	e.must(201, "POST", "/v1/candidates", tok, body, "Idempotency-Key", strings.Repeat("k", 255))

	// 4xx answers are kept and replayed: an interview of unknown objects.
	missing := map[string]any{"candidate_id": uuid.NewString(), "position_id": uuid.NewString()}
	r1 := e.do("POST", "/v1/interviews", tok, missing, "Idempotency-Key", "iv-1")
	r2 := e.do("POST", "/v1/interviews", tok, missing, "Idempotency-Key", "iv-1")
	if r1.status != 404 || r2.status != 404 || !bytes.Equal(r1.body, r2.body) || r2.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("4xx replay: %d %s / %d %v %s", r1.status, r1.body, r2.status, r2.header, r2.body)
	}

	// Every create honours it, including an API key's: its secret is
	// replayed to the same request only.
	admin := tenantToken(t, tenant, "admin")
	k1 := e.do("POST", "/v1/api-keys", admin, map[string]any{"name": "ci", "role": "viewer"}, "Idempotency-Key", "key-1")
	k2 := e.do("POST", "/v1/api-keys", admin, map[string]any{"name": "ci", "role": "viewer"}, "Idempotency-Key", "key-1")
	if k1.status != 201 || k2.status != 201 || !bytes.Equal(k1.body, k2.body) {
		t.Fatalf("api key replay: %d %s / %d %s", k1.status, k1.body, k2.status, k2.body)
	}
	if n := e.count(`SELECT count(*) FROM interviews.api_keys WHERE tenant_id = $1 AND name = 'ci'`, tenant); n != 1 {
		t.Fatalf("%d keys after a replay, want 1", n)
	}
	pos := map[string]any{"title": "Eng", "competencies": []map[string]any{{"name": "Go", "weight": 1}}}
	p1 := e.must(201, "POST", "/v1/positions", tok, pos, "Idempotency-Key", "pos-1")
	p2 := e.must(201, "POST", "/v1/positions", tok, pos, "Idempotency-Key", "pos-1")
	if p1["id"] != p2["id"] {
		t.Fatalf("position replay made another: %v / %v", p1, p2)
	}

	metrics := string(e.do("GET", "/metrics", "", nil).body)
	for _, line := range []string{`http_idempotent_requests_total{outcome="replayed"} 5`, `http_idempotent_requests_total{outcome="reused"} 2`} {
		if !strings.Contains(metrics, line) {
			t.Errorf("/metrics lacks %s", line)
		}
	}

	// A new controller instance on the same database replays too.
	restarted := newEnvOn(t, e.db, e.dbURL)
	r := restarted.do("POST", "/v1/candidates", tok, body, "Idempotency-Key", "cand-1")
	if r.status != 201 || !bytes.Equal(r.body, first.body) || r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay on a new instance: %d %v %s", r.status, r.header, r.body)
	}
}

// TestIdempotencyInFlight: while the first request holds the key, the
// same request answers 409; another request 422.
func TestIdempotencyInFlight(t *testing.T) {
	e := newEnv(t)
	tenant := newTenant()
	tok := tenantToken(t, tenant, "admin")
	body := `{"full_name":"Ada","email":"ada@example.com"}`
	// Play a first request that is still running: it holds the key. The
	// hashes are the middleware's: the request's is checked by the 409.
	first := e.do("POST", "/v1/candidates", tok, body, "Idempotency-Key", "probe")
	if first.status != 201 {
		t.Fatalf("probe: %d %s", first.status, first.body)
	}
	// Put the stored row back in flight, held by a live attempt.
	if _, err := e.db.Pool.Exec(context.Background(), `UPDATE interviews.idempotency_keys
		SET status = NULL, response = NULL, content_type = NULL, claim = $2, claimed_at = now()
		WHERE tenant_id = $1`, tenant, uuid.NewString()); err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/v1/candidates", tok, body, "Idempotency-Key", "probe")
	if r.status != 409 || r.code() != "idempotency_key_in_flight" {
		t.Fatalf("same request in flight: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/v1/candidates", tok, `{"full_name":"Bob","email":"b@example.com"}`, "Idempotency-Key", "probe"); r.status != 422 {
		t.Fatalf("other request while in flight: %d %s", r.status, r.body)
	}
	// An attempt that has held the key past its lease died: a retry takes
	// the key over and runs the request.
	if _, err := e.db.Pool.Exec(context.Background(), `UPDATE interviews.idempotency_keys
		SET claimed_at = now() - interval '2 minutes' WHERE tenant_id = $1`, tenant); err != nil {
		t.Fatal(err)
	}
	if r := e.do("POST", "/v1/candidates", tok, body, "Idempotency-Key", "probe"); r.status != 201 || r.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("retry after the lease: %d %v %s", r.status, r.header, r.body)
	}
	// An expired key is taken anew.
	if _, err := e.db.Pool.Exec(context.Background(), `UPDATE interviews.idempotency_keys
		SET expires_at = now() - interval '1 second' WHERE tenant_id = $1`, tenant); err != nil {
		t.Fatal(err)
	}
	if r := e.do("POST", "/v1/candidates", tok, `{"full_name":"Cy","email":"c@example.com"}`, "Idempotency-Key", "probe"); r.status != 201 || r.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("expired key with another body: %d %v %s", r.status, r.header, r.body)
	}
}

// TestIdempotencyConcurrent: identical requests racing with one key make
// one row; each answer is the created object or 409.
func TestIdempotencyConcurrent(t *testing.T) {
	e := newEnv(t)
	replica := newEnvOn(t, e.db, e.dbURL)
	tenant := newTenant()
	tok := tenantToken(t, tenant, "admin")
	const n = 8
	body := map[string]any{"full_name": "Ada", "email": "ada@example.com"}
	var wg sync.WaitGroup
	answers := make([]response, n)
	gate := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			on := e
			if i%2 == 1 {
				on = replica
			}
			answers[i] = on.do("POST", "/v1/candidates", tok, body, "Idempotency-Key", "race")
		}()
	}
	close(gate)
	wg.Wait()
	fresh, replays := 0, 0
	var created []byte
	for _, a := range answers {
		switch {
		case a.status == 201 && a.header.Get("Idempotent-Replayed") == "":
			fresh++
			created = a.body
		case a.status == 201:
			replays++
		case a.status == 409 && a.code() == "idempotency_key_in_flight":
		default:
			t.Fatalf("racing create answered %d %s", a.status, a.body)
		}
	}
	if fresh != 1 {
		t.Fatalf("%d requests created (replays %d), want exactly 1", fresh, replays)
	}
	for _, a := range answers {
		if a.status == 201 && !bytes.Equal(a.body, created) {
			t.Fatalf("replay %s differs from the created %s", a.body, created)
		}
	}
	if c := e.count(`SELECT count(*) FROM interviews.candidates WHERE tenant_id = $1`, tenant); c != 1 {
		t.Fatalf("%d candidates, want 1", c)
	}
}

// TestIdempotencyRelease: a key released after a failed (5xx) attempt is
// taken by the next attempt, which runs the request.
func TestIdempotencyRelease(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	scope := session.TenantScope(newTenant())
	req := session.IdempotencyRequest{KeyHash: bytes.Repeat([]byte{1}, 32), RequestHash: bytes.Repeat([]byte{2}, 32),
		Claim: uuid.NewString(), TTL: time.Hour, Lease: time.Minute}
	rec, err := e.db.ClaimIdempotencyKey(ctx, scope, req)
	if err != nil || !rec.Claimed {
		t.Fatalf("first claim: %+v %v", rec, err)
	}
	second := req
	second.Claim = uuid.NewString()
	if rec, err := e.db.ClaimIdempotencyKey(ctx, scope, second); err != nil || rec.Claimed || rec.Status != 0 {
		t.Fatalf("claim while held: %+v %v", rec, err)
	}
	// Only the holder releases.
	if err := e.db.ReleaseIdempotencyKey(ctx, scope, req.KeyHash, second.Claim); err != nil {
		t.Fatal(err)
	}
	if rec, _ := e.db.ClaimIdempotencyKey(ctx, scope, second); rec.Claimed {
		t.Fatal("a release by another attempt freed the key")
	}
	if err := e.db.ReleaseIdempotencyKey(ctx, scope, req.KeyHash, req.Claim); err != nil {
		t.Fatal(err)
	}
	if rec, err := e.db.ClaimIdempotencyKey(ctx, scope, second); err != nil || !rec.Claimed {
		t.Fatalf("claim after release: %+v %v", rec, err)
	}
}

// TestIdempotencyFailedCreateIsNotKept: a create that fails with a 5xx
// keeps nothing, so its retry with the same key runs again.
func TestIdempotencyFailedCreateIsNotKept(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tenant := newTenant()
	tok := tenantToken(t, tenant, "admin")
	body := map[string]any{"full_name": "Ada", "email": "ada@example.com"}
	// Break candidate inserts in this test's database only.
	if _, err := e.db.Pool.Exec(ctx, `REVOKE INSERT ON interviews.candidates FROM interview_app`); err != nil {
		t.Fatal(err)
	}
	if r := e.do("POST", "/v1/candidates", tok, body, "Idempotency-Key", "retry-me"); r.status != 500 {
		t.Fatalf("create without the privilege: %d %s", r.status, r.body)
	}
	if n := e.count(`SELECT count(*) FROM interviews.idempotency_keys WHERE tenant_id = $1`, tenant); n != 0 {
		t.Fatalf("a failed create kept %d idempotency rows", n)
	}
	if _, err := e.db.Pool.Exec(ctx, `GRANT INSERT ON interviews.candidates TO interview_app`); err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/v1/candidates", tok, body, "Idempotency-Key", "retry-me")
	if r.status != 201 || r.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("retry after the failure: %d %v %s", r.status, r.header, r.body)
	}
	if again := e.do("POST", "/v1/candidates", tok, body, "Idempotency-Key", "retry-me"); again.status != 201 ||
		again.header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(again.body, r.body) {
		t.Fatalf("replay of the retry: %d %v %s", again.status, again.header, again.body)
	}
	metrics := string(e.do("GET", "/metrics", "", nil).body)
	if !strings.Contains(metrics, `http_idempotent_requests_total{outcome="released"} 1`) {
		t.Error("/metrics does not count the released key")
	}
}
