package controlapi_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/interviewvm/controlplane/pkg/controlapi"
	"github.com/interviewvm/controlplane/pkg/provision"
	"github.com/interviewvm/controlplane/pkg/session"
)

func withCORS(origins ...string) option {
	return func(c *controlapi.Config, _ *provision.Config) { c.CORSOrigins = origins }
}

func TestCORSByOrigin(t *testing.T) {
	e := newEnv(t, withCORS("https://app.example.com", "http://localhost:5173"))
	tok := tenantToken(t, newTenant(), "admin")
	preflight := func(origin string) response {
		return e.do("OPTIONS", "/v1/interviews", "", nil, "Origin", origin,
			"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization, content-type, idempotency-key")
	}
	r := preflight("https://app.example.com")
	if r.status != 204 || r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Fatalf("allowed preflight = %d %v", r.status, r.header)
	}
	if got := r.header.Get("Access-Control-Allow-Headers"); got != "Authorization, Content-Type, Idempotency-Key, Last-Event-ID" {
		t.Errorf("Access-Control-Allow-Headers = %q", got)
	}
	for _, m := range []string{"GET", "POST", "PATCH", "DELETE"} {
		if !strings.Contains(r.header.Get("Access-Control-Allow-Methods"), m) {
			t.Errorf("Access-Control-Allow-Methods = %q, lacks %s", r.header.Get("Access-Control-Allow-Methods"), m)
		}
	}
	if !slices.Contains(r.header.Values("Vary"), "Origin") {
		t.Errorf("preflight Vary = %v, want Origin", r.header.Values("Vary"))
	}
	// The actual request from the allowed origin exposes the contract's headers.
	r = e.do("GET", "/v1/interviews", tok, nil, "Origin", "http://localhost:5173")
	if r.status != 200 || r.header.Get("Access-Control-Allow-Origin") != "http://localhost:5173" ||
		r.header.Get("Access-Control-Expose-Headers") != "Location, Retry-After, X-Request-Id, Idempotent-Replayed" {
		t.Fatalf("allowed GET = %d %v", r.status, r.header)
	}
	if !slices.Contains(r.header.Values("Vary"), "Origin") || r.header.Get("X-Request-Id") == "" {
		t.Errorf("allowed GET Vary = %v, X-Request-Id = %q", r.header.Values("Vary"), r.header.Get("X-Request-Id"))
	}
	// A refused origin gets no CORS header at all, on the preflight and on the request.
	for _, origin := range []string{"https://evil.example.com", "https://app.example.com.evil.com", "http://app.example.com"} {
		for _, r := range []response{preflight(origin), e.do("GET", "/v1/interviews", tok, nil, "Origin", origin)} {
			for k := range r.header {
				if strings.HasPrefix(k, "Access-Control-") {
					t.Errorf("origin %s got %s: %v", origin, k, r.header[k])
				}
			}
		}
	}

	// Off when unset; "*" allows any origin.
	off := newEnvOn(t, e.db, e.dbURL)
	if r := off.do("OPTIONS", "/v1/interviews", "", nil, "Origin", "https://app.example.com", "Access-Control-Request-Method", "POST"); r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS off: preflight answered %v", r.header)
	}
	anyOrigin := newEnvOn(t, e.db, e.dbURL, withCORS("*"))
	if r := anyOrigin.do("GET", "/v1/interviews", tok, nil, "Origin", "https://whoever.example"); r.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("CORS *: GET answered %v", r.header)
	}
	if _, err := controlapi.New(controlapi.Config{Auth: controlapi.AuthConfig{Secret: testSecret},
		CORSOrigins: []string{"app.example.com"}}, nil, nil, nil, nil, nil, nil, nil); err == nil {
		t.Error("an origin without a scheme was accepted")
	}
}

func TestPatchInterviewAndExternalID(t *testing.T) {
	e := newEnv(t)
	tok := tenantToken(t, newTenant(), "recruiter")
	a, b := e.interview(tok), e.interview(tok)
	iv := e.must(200, "PATCH", "/v1/interviews/"+a, tok, map[string]any{"max_duration_s": 600, "external_id": "ats-1",
		"metadata": map[string]string{"ats": "greenhouse", "req": "42"}})
	if iv["max_duration_s"] != 600.0 || iv["external_id"] != "ats-1" || iv["metadata"].(map[string]any)["req"] != "42" {
		t.Fatalf("patched interview = %v", iv)
	}
	if got := e.must(200, "GET", "/v1/interviews/"+a, tok, nil); got["external_id"] != "ats-1" || got["status"] != "scheduled" {
		t.Fatalf("interview after patch = %v", got)
	}
	// A duplicate external id in the tenant is a conflict, on create and on patch.
	if r := e.do("PATCH", "/v1/interviews/"+b, tok, map[string]any{"external_id": "ats-1"}); r.status != 409 || r.code() != session.ECONFLICT {
		t.Fatalf("duplicate external_id on patch = %d %s", r.status, r.body)
	}
	created := e.must(201, "POST", "/v1/candidates", tok, map[string]any{"full_name": "Bo", "email": "bo@example.com", "external_id": "cand-1"})
	if r := e.do("POST", "/v1/candidates", tok, map[string]any{"full_name": "Cy", "email": "cy@example.com", "external_id": "cand-1"}); r.status != 409 {
		t.Fatalf("duplicate candidate external_id = %d %s", r.status, r.body)
	}
	if created["external_id"] != "cand-1" || created["metadata"] == nil {
		t.Fatalf("created candidate = %v", created)
	}
	// Another tenant may use the same external id.
	other := tenantToken(t, newTenant(), "admin")
	o := e.interview(other)
	e.must(200, "PATCH", "/v1/interviews/"+o, other, map[string]any{"external_id": "ats-1"})
	// The filter finds exactly the tenant's interview.
	items := e.must(200, "GET", "/v1/interviews?external_id=ats-1", tok, nil)["items"].([]any)
	if len(items) != 1 || items[0].(map[string]any)["id"] != a {
		t.Fatalf("?external_id=ats-1 = %v", items)
	}
	if items := e.must(200, "GET", "/v1/interviews?external_id=none", tok, nil)["items"].([]any); len(items) != 0 {
		t.Fatalf("?external_id=none = %v", items)
	}
	// null clears it; then b may take it.
	if iv := e.must(200, "PATCH", "/v1/interviews/"+a, tok, map[string]any{"external_id": nil}); iv["external_id"] != nil {
		t.Fatalf("cleared external_id = %v", iv["external_id"])
	}
	e.must(200, "PATCH", "/v1/interviews/"+b, tok, map[string]any{"external_id": "ats-1"})

	// Limits.
	many := map[string]string{}
	for i := range 17 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	for _, body := range []map[string]any{
		{"external_id": strings.Repeat("x", 201)}, {"external_id": ""}, {"metadata": many},
		{"metadata": map[string]string{strings.Repeat("k", 41): "v"}}, {"metadata": map[string]string{"k": strings.Repeat("v", 501)}},
		{"max_duration_s": 0}, {}, {"status": "ready"},
	} {
		if r := e.do("PATCH", "/v1/interviews/"+b, tok, body); r.status != 400 {
			t.Errorf("PATCH %v = %d %s, want 400", body, r.status, r.body)
		}
	}

	// Once started, an interview no longer changes.
	e.ready(tok, a)
	if r := e.do("PATCH", "/v1/interviews/"+a, tok, map[string]any{"max_duration_s": 60}); r.status != 409 || r.code() != session.ECONFLICT {
		t.Fatalf("PATCH of a ready interview = %d %s, want 409", r.status, r.body)
	}
	viewer := tenantToken(t, tenantOf(t, tok), "viewer")
	if r := e.do("PATCH", "/v1/interviews/"+b, viewer, map[string]any{"max_duration_s": 60}); r.status != 403 {
		t.Fatalf("viewer PATCH = %d", r.status)
	}
	if r := e.do("PATCH", "/v1/interviews/"+o, tok, map[string]any{"max_duration_s": 60}); r.status != 404 {
		t.Fatalf("PATCH of another tenant's interview = %d", r.status)
	}
}

func TestPatchPositionAndCandidate(t *testing.T) {
	e := newEnv(t)
	tok := tenantToken(t, newTenant(), "admin")
	pos := e.must(201, "POST", "/v1/positions", tok, map[string]any{"title": "Eng", "competencies": []map[string]any{{"name": "Go", "weight": 1}}})
	p := e.must(200, "PATCH", "/v1/positions/"+pos["id"].(string), tok, map[string]any{"title": " Staff Eng ",
		"competencies": []map[string]any{{"name": "Go", "weight": 3}, {"name": "SQL", "weight": 1, "description": "joins"}}})
	comps := p["competencies"].([]any)
	if p["title"] != "Staff Eng" || len(comps) != 2 || comps[1].(map[string]any)["description"] != "joins" {
		t.Fatalf("patched position = %v", p)
	}
	if r := e.do("PATCH", "/v1/positions/"+pos["id"].(string), tok, map[string]any{
		"competencies": []map[string]any{{"name": "Go", "weight": 1}, {"name": "go ", "weight": 1}}}); r.status != 400 {
		t.Fatalf("duplicate competency names on patch = %d %s", r.status, r.body)
	}
	c := e.must(201, "POST", "/v1/candidates", tok, map[string]any{"full_name": "Ada", "email": "ada@example.com"})
	got := e.must(200, "PATCH", "/v1/candidates/"+c["id"].(string), tok, map[string]any{"email": "ada@lovelace.dev",
		"metadata": map[string]string{"source": "referral"}})
	if got["email"] != "ada@lovelace.dev" || got["full_name"] != "Ada" || got["metadata"].(map[string]any)["source"] != "referral" {
		t.Fatalf("patched candidate = %v", got)
	}
	if r := e.do("PATCH", "/v1/candidates/"+c["id"].(string), tok, map[string]any{"email": "nope"}); r.status != 400 {
		t.Fatalf("bad email on patch = %d", r.status)
	}
}

func TestDeletePositionConflicts(t *testing.T) {
	e := newEnv(t)
	tok := tenantToken(t, newTenant(), "recruiter")
	id := e.interview(tok)
	pid := e.must(200, "GET", "/v1/interviews/"+id, tok, nil)["position_id"].(string)
	if r := e.do("DELETE", "/v1/positions/"+pid, tok, nil); r.status != 409 || r.code() != session.ECONFLICT {
		t.Fatalf("DELETE of a referenced position = %d %s, want 409", r.status, r.body)
	}
	e.must(200, "GET", "/v1/positions/"+pid, tok, nil)
	e.must(204, "DELETE", "/v1/interviews/"+id, tok, nil)
	e.must(204, "DELETE", "/v1/positions/"+pid, tok, nil)
	for _, path := range []string{"/v1/positions/" + pid, "/v1/interviews/" + id} {
		if r := e.do("GET", path, tok, nil); r.status != 404 {
			t.Errorf("GET %s after delete = %d", path, r.status)
		}
	}
	if n := e.count(`SELECT count(*) FROM interviews.position_competencies WHERE position_id = $1`, pid); n != 0 {
		t.Fatalf("%d competencies left", n)
	}
	if r := e.do("DELETE", "/v1/positions/"+pid, tok, nil); r.status != 404 {
		t.Fatalf("second DELETE = %d", r.status)
	}
}

// candidateTables says, for every table of the schema, how to count the
// rows of an erased candidate ($1: candidate id, $2: their interview ids)
// — or that the table holds nothing of a candidate. A table missing here
// fails TestCandidateErasure: whoever adds a table decides how it is
// erased.
var candidateTables = map[string]string{
	"candidates":            `SELECT count(*) FROM interviews.candidates WHERE id = $1`,
	"interview_sessions":    `SELECT count(*) FROM interviews.interview_sessions WHERE candidate_id = $1 OR id = ANY($2::uuid[])`,
	"session_events":        `SELECT count(*) FROM interviews.session_events WHERE session_id = ANY($2::uuid[])`,
	"transcript_segments":   `SELECT count(*) FROM interviews.transcript_segments WHERE session_id = ANY($2::uuid[])`,
	"idempotency_keys":      `SELECT count(*) FROM interviews.idempotency_keys WHERE subject_ids && ($1::uuid || $2::uuid[])`,
	"api_keys":              "",
	"tenants":               "",
	"companies":             "",
	"positions":             "",
	"position_competencies": "",
	"goose_db_version":      "",
}

func TestCandidateErasure(t *testing.T) {
	e := newEnv(t)
	tok := tenantToken(t, newTenant(), "recruiter")
	marker := "erase-me-" + newTenant()[:8]
	cand := e.must(201, "POST", "/v1/candidates", tok, map[string]any{"full_name": "Ada " + marker,
		"email": marker + "@example.com", "external_id": marker, "metadata": map[string]string{"note": marker}},
		"Idempotency-Key", "cand-"+marker) // its stored answer holds their data too
	cid := cand["id"].(string)
	pos := e.must(201, "POST", "/v1/positions", tok, map[string]any{"title": "Eng", "competencies": []map[string]any{{"name": "Go", "weight": 1}}})
	newIV := func(candidate string) string {
		return e.must(201, "POST", "/v1/interviews", tok, map[string]any{"candidate_id": candidate, "position_id": pos["id"],
			"external_id": candidate[:8] + "-" + newTenant()[:8], "metadata": map[string]string{"note": marker}},
			"Idempotency-Key", "iv-"+newTenant())["id"].(string)
	}
	// Three interviews: one live with a transcript, one cancelled, one scheduled.
	live, cancelled, scheduled := newIV(cid), newIV(cid), newIV(cid)
	vmTok, _ := e.ready(tok, live)
	e.must(200, "POST", "/internal/v1/sessions/"+live+"/transcript", vmTok, session.TranscriptBatch{Segments: []session.Segment{
		seg(1, session.SpeakerInterviewer, "Hello "+marker), seg(2, session.SpeakerCandidate, "I am "+marker)}})
	e.must(200, "POST", "/v1/interviews/"+cancelled+"/cancel", tok, nil)
	// Someone else's interview, which must survive.
	keep := e.interview(tok)
	ids := []string{live, cancelled, scheduled}

	e.must(204, "DELETE", "/v1/candidates/"+cid, tok, nil)

	// The live interview's machine was destroyed before the answer.
	if !e.destroyed(live) {
		t.Fatal("the live interview's machine was not destroyed before the erasure answered")
	}

	// Every table of the schema, from the catalog: none holds a row of the
	// candidate, and no row anywhere mentions them.
	rows, err := e.db.Pool.Query(context.Background(), `SELECT table_name FROM information_schema.tables
		WHERE table_schema = 'interviews' AND table_type = 'BASE TABLE' ORDER BY table_name`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	if rows.Err() != nil || len(tables) < 5 {
		t.Fatalf("tables = %v, %v", tables, rows.Err())
	}
	for _, table := range tables {
		q, known := candidateTables[table]
		if !known {
			t.Errorf("table interviews.%s: this test does not know how to check it for an erased candidate; "+
				"add it to candidateTables (and to the erasure in pkg/postgres)", table)
			continue
		}
		if q != "" {
			args := []any{cid}
			if strings.Contains(q, "$2") {
				args = append(args, ids)
			}
			if !strings.Contains(q, "$1") {
				q = strings.ReplaceAll(q, "$2", "$1")
				args = []any{ids}
			}
			if n := e.count(q, args...); n != 0 {
				t.Errorf("table %s keeps %d rows of the erased candidate", table, n)
			}
		}
		for _, needle := range append([]string{marker, cid}, ids...) {
			if n := e.count(fmt.Sprintf(`SELECT count(*) FROM interviews.%q t WHERE t::text LIKE '%%' || $1 || '%%'`, table), needle); n != 0 {
				t.Errorf("table %s has %d rows mentioning %s", table, n, needle)
			}
		}
	}
	for _, id := range ids {
		if r := e.do("GET", "/v1/interviews/"+id, tok, nil); r.status != 404 {
			t.Errorf("erased interview %s = %d", id, r.status)
		}
	}
	if r := e.do("GET", "/v1/candidates/"+cid, tok, nil); r.status != 404 {
		t.Errorf("erased candidate = %d", r.status)
	}
	e.must(200, "GET", "/v1/interviews/"+keep, tok, nil)
	if r := e.do("DELETE", "/v1/candidates/"+cid, tok, nil); r.status != 404 {
		t.Errorf("second erasure = %d", r.status)
	}
	viewer := tenantToken(t, tenantOf(t, tok), "viewer")
	if r := e.do("DELETE", "/v1/interviews/"+keep, viewer, nil); r.status != 403 {
		t.Errorf("viewer DELETE = %d", r.status)
	}
}

func TestDeleteLiveInterview(t *testing.T) {
	e := newEnv(t)
	tok := tenantToken(t, newTenant(), "admin")
	id := e.interview(tok)
	vmTok, _ := e.ready(tok, id)
	e.must(200, "POST", "/internal/v1/sessions/"+id+"/transcript", vmTok, session.TranscriptBatch{Segments: []session.Segment{seg(1, "candidate", "hi")}})
	other := tenantToken(t, newTenant(), "admin")
	if r := e.do("DELETE", "/v1/interviews/"+id, other, nil); r.status != 404 {
		t.Fatalf("another tenant's DELETE = %d", r.status)
	}
	e.must(204, "DELETE", "/v1/interviews/"+id, tok, nil)
	if !e.destroyed(id) {
		t.Fatal("the live interview's machine was not destroyed before the erasure answered")
	}
	for _, table := range []string{"interview_sessions", "session_events", "transcript_segments"} {
		col := "session_id"
		if table == "interview_sessions" {
			col = "id"
		}
		if n := e.count(fmt.Sprintf(`SELECT count(*) FROM interviews.%s WHERE %s = $1`, table, col), id); n != 0 {
			t.Errorf("%s keeps %d rows", table, n)
		}
	}
	// Its VM token writes nothing any more.
	if r := e.do("POST", "/internal/v1/sessions/"+id+"/heartbeat", vmTok, `{}`); r.status < 400 {
		t.Errorf("heartbeat of an erased session = %d", r.status)
	}
}

func TestStreamWithAccessTokenInURL(t *testing.T) {
	e := newEnv(t)
	tok := tenantToken(t, newTenant(), "recruiter")
	id := e.interview(tok)
	vmTok, start := e.ready(tok, id)
	access := start["connect"].(map[string]any)["access_token"].(string)
	e.must(200, "POST", "/internal/v1/sessions/"+id+"/transcript", vmTok, session.TranscriptBatch{Segments: []session.Segment{seg(1, "interviewer", "Welcome")}})

	resp, err := http.Get(e.base + "/v1/interviews/" + id + "/transcript/stream?access_token=" + url.QueryEscape(access))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream with ?access_token= = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &sse{resp: resp, r: bufio.NewReader(resp.Body)}
	if ev := s.next(t); ev.name != "segment" || ev.id != "1" || !strings.Contains(ev.data, "Welcome") {
		t.Fatalf("first event = %+v", ev)
	}
	e.must(200, "POST", "/internal/v1/sessions/"+id+"/transcript", vmTok, session.TranscriptBatch{Segments: []session.Segment{seg(2, "candidate", "Thanks")}})
	if ev := s.next(t); ev.name != "segment" || ev.id != "2" {
		t.Fatalf("live event = %+v", ev)
	}

	// Only the interview's own access token is accepted in a URL.
	other := e.interview(tok)
	_, otherStart := e.ready(tok, other)
	otherAccess := otherStart["connect"].(map[string]any)["access_token"].(string)
	for _, c := range []struct {
		token string
		want  int
	}{{tok, 401}, {tenantToken(t, tenantOf(t, tok), "admin"), 401}, {"garbage", 401}, {otherAccess, 404}, {"", 401}} {
		if r := e.do("GET", "/v1/interviews/"+id+"/transcript/stream?access_token="+url.QueryEscape(c.token), "", nil); r.status != c.want {
			t.Errorf("?access_token=%.12s… = %d %s, want %d", c.token, r.status, r.body, c.want)
		}
	}
	// The access token is for the stream only, not for tenant routes.
	if r := e.do("GET", "/v1/interviews/"+id+"?access_token="+url.QueryEscape(access), "", nil); r.status != 401 {
		t.Errorf("GET interview with ?access_token= = %d, want 401", r.status)
	}
	// An escaped parameter name is the same parameter.
	if r := e.do("GET", "/v1/interviews/"+id+"/transcript/stream?access%5Ftoken="+url.QueryEscape(tok), "", nil); r.status != 401 {
		t.Errorf("?access%%5Ftoken=<JWT> = %d, want 401", r.status)
	}
	// The tenant JWT in the header still works.
	e.stream(tok, id, "2")

	// Neither token appears in any log line or metric.
	metrics := e.do("GET", "/metrics", "", nil)
	for name, secret := range map[string]string{"access token": access, "tenant JWT": tok, "other access token": otherAccess} {
		if strings.Contains(e.logs.String(), secret) {
			t.Errorf("the %s is in the logs", name)
		}
		if strings.Contains(string(metrics.body), secret) {
			t.Errorf("the %s is in the metrics", name)
		}
	}
	if !strings.Contains(e.logs.String(), "/transcript/stream") {
		t.Fatal("the captured logs do not show the stream requests at all")
	}
}

func TestTextPostgresCannotStore(t *testing.T) {
	e := newEnv(t)
	tok := tenantToken(t, newTenant(), "admin")
	id := e.interview(tok)
	iv := e.must(200, "GET", "/v1/interviews/"+id, tok, nil)
	pid, cid := iv["position_id"].(string), iv["candidate_id"].(string)
	bad := []string{`\u0000`, `a\u0000b`, `\ud800`, `x\udc00`, `\ud800\u0041`, `\ud83d`}
	type call struct{ method, path, tmpl string }
	calls := []call{
		{"POST", "/v1/positions", `{"title":"%s","competencies":[{"name":"Go","weight":1}]}`},
		{"POST", "/v1/positions", `{"title":"T","description":"%s","competencies":[{"name":"Go","weight":1}]}`},
		{"POST", "/v1/positions", `{"title":"T","competencies":[{"name":"%s","weight":1}]}`},
		{"POST", "/v1/positions", `{"title":"T","competencies":[{"name":"Go","weight":1,"description":"%s"}]}`},
		{"POST", "/v1/candidates", `{"full_name":"%s","email":"a@b.c"}`},
		{"POST", "/v1/candidates", `{"full_name":"A","email":"a%s@b.c"}`},
		{"POST", "/v1/candidates", `{"full_name":"A","email":"a@b.c","external_id":"%s"}`},
		{"POST", "/v1/candidates", `{"full_name":"A","email":"a@b.c","metadata":{"%s":"v"}}`},
		{"POST", "/v1/candidates", `{"full_name":"A","email":"a@b.c","metadata":{"k":"%s"}}`},
		{"POST", "/v1/interviews", `{"candidate_id":"` + cid + `","position_id":"` + pid + `","external_id":"%s"}`},
		{"POST", "/v1/interviews", `{"candidate_id":"` + cid + `","position_id":"` + pid + `","metadata":{"k":"%s"}}`},
		{"PATCH", "/v1/positions/" + pid, `{"title":"%s"}`},
		{"PATCH", "/v1/candidates/" + cid, `{"full_name":"%s"}`},
		{"PATCH", "/v1/interviews/" + id, `{"external_id":"%s"}`},
		{"PATCH", "/v1/interviews/" + id, `{"metadata":{"k":"%s"}}`},
	}
	before := e.snapshot()
	for _, c := range calls {
		for _, b := range bad {
			body := fmt.Sprintf(c.tmpl, b)
			if r := e.do(c.method, c.path, tok, body); r.status != 400 || r.code() != session.EINVALID {
				t.Errorf("%s %s %s = %d %s, want 400 invalid_request", c.method, c.path, body, r.status, r.body)
			}
		}
		// Invalid UTF-8 bytes, not escaped.
		body := []byte(fmt.Sprintf(c.tmpl, "\xff\xfe"))
		if r := e.do(c.method, c.path, tok, body); r.status != 400 || r.code() != session.EINVALID {
			t.Errorf("%s %s with invalid UTF-8 = %d %s, want 400", c.method, c.path, r.status, r.body)
		}
	}
	if after := e.snapshot(); after != before {
		t.Fatalf("refused text changed the database: %s → %s", before, after)
	}
	if r := e.do("GET", "/v1/interviews?external_id=%00", tok, nil); r.status != 400 {
		t.Errorf("?external_id=NUL = %d", r.status)
	}
	// A proper surrogate pair and an escaped backslash before u0000 are fine.
	p := e.must(201, "POST", "/v1/positions", tok, `{"title":"Rocket \ud83d\ude80 \\u0000","competencies":[{"name":"Go","weight":1}]}`)
	if p["title"] != "Rocket 🚀 \\u0000" {
		t.Fatalf("title = %q", p["title"])
	}
	// Duplicate competency names (after trimming, any case) are refused.
	if r := e.do("POST", "/v1/positions", tok, `{"title":"T","competencies":[{"name":"Go","weight":1},{"name":" go","weight":2}]}`); r.status != 400 {
		t.Fatalf("duplicate competency names = %d %s", r.status, r.body)
	}
}

// destroyed reports whether the machine of session id was destroyed.
func (e *env) destroyed(id string) bool {
	e.machines.mu.Lock()
	defer e.machines.mu.Unlock()
	return e.machines.destroyed["vm-"+id[:8]]
}
