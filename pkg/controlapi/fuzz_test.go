package controlapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// FuzzRoutes sends arbitrary bodies to the JSON routes (creates and
// updates), the VM's transcript route and the SDP route. Whatever arrives, the answer is never a 5xx, and
// a refused request writes nothing. The seeds run in every `go test`; fuzz
// longer with: go test -run XXX -fuzz FuzzRoutes ./pkg/controlapi
func FuzzRoutes(f *testing.F) {
	seeds := []string{
		`{"title":"T","competencies":[{"name":"Go","weight":1}]}`,
		`{"full_name":"A","email":"a@b.c"}`,
		`{"candidate_id":"00000000-0000-4000-8000-000000000000","position_id":"00000000-0000-4000-8000-000000000000"}`,
		`{"segments":[{"seq":1,"speaker":"candidate","text":"hi"}]}`,
		"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\n",
		`{"title":"\u0000","competencies":[{"name":"x","weight":1e309}]}`,
		`{"segments":[{"seq":9223372036854775807,"speaker":"candidate","text":"\u0000"}]}`,
		`{"weight":-0}`, `[]`, `null`, `{"title":5}`, "\xff\xfe", `{"a":[`, "",
		`{"name":"backend","role":"recruiter"}`, `{"name":"\u0000","role":"admin"}`,
		`{"name":"\ud800","role":"viewer"}`, `{"name":"k","role":"owner"}`, "{\"name\":\"\xff\",\"role\":\"admin\"}",
		// Text PostgreSQL cannot store: NUL, unpaired surrogates, invalid UTF-8.
		`{"title":"a\u0000b","competencies":[{"name":"Go","weight":1}]}`,
		`{"title":"T","competencies":[{"name":"\u0000","weight":1}]}`,
		`{"title":"T","description":"\ud800","competencies":[{"name":"Go","weight":1}]}`,
		`{"full_name":"\udc00x","email":"a@b.c"}`,
		`{"full_name":"A","email":"a\u0000@b.c"}`,
		"{\"full_name\":\"\xed\xa0\x80\",\"email\":\"a@b.c\"}",
		`{"full_name":"A","email":"a@b.c","external_id":"\ud83d"}`,
		`{"full_name":"A","email":"a@b.c","metadata":{"\u0000":"v"}}`,
		`{"external_id":"x\u0000","metadata":{"k":"\ud800\u0041"}}`,
		`{"external_id":null,"metadata":{}}`, `{"max_duration_s":1}`, `{"title":"Rocket \ud83d\ude80"}`,
		`{"competencies":[{"name":"Go","weight":1},{"name":"go","weight":1}]}`,
		`{"segments":[{"seq":1,"speaker":"candidate","text":"\ud800"}]}`,
	}
	for _, s := range seeds {
		for r := range uint8(len(fuzzRoutes)) {
			f.Add(r, []byte(s))
		}
	}
	e := newEnv(f)
	tok := tenantToken(f, newTenant(), "admin")
	id := e.interview(tok)
	vmTok, _ := e.ready(tok, id)
	scheduled := e.interview(tok)
	iv := e.must(200, "GET", "/v1/interviews/"+scheduled, tok, nil)
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		ee := *e
		ee.t = t
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		before := ee.snapshot()
		path := strings.NewReplacer("{id}", id, "{scheduled}", scheduled,
			"{position}", iv["position_id"].(string), "{candidate}", iv["candidate_id"].(string)).Replace(rt.path)
		bearer := tok
		if rt.vm {
			bearer = vmTok
		}
		req, err := http.NewRequest(rt.method, ee.base+path, strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", rt.contentType)
		req.Header.Set("Authorization", "Bearer "+bearer)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s with %q = %d", rt.method, path, body, resp.StatusCode)
		}
		if resp.StatusCode >= 400 {
			if after := ee.snapshot(); after != before {
				t.Fatalf("refused %s %s with %q (%d) changed the database: %s → %s", rt.method, path, body, resp.StatusCode, before, after)
			}
		}
	})
}

var fuzzRoutes = []struct {
	method, path, contentType string
	vm                        bool
}{
	{"POST", "/v1/positions", "application/json", false},
	{"POST", "/v1/candidates", "application/json", false},
	{"POST", "/v1/interviews", "application/json", false},
	{"POST", "/internal/v1/sessions/{id}/transcript", "application/json", true},
	{"POST", "/v1/interviews/{id}/session/sdp", "application/sdp", false},
	{"PATCH", "/v1/positions/{position}", "application/json", false},
	{"PATCH", "/v1/candidates/{candidate}", "application/json", false},
	{"PATCH", "/v1/interviews/{scheduled}", "application/json", false},
	{"PATCH", "/v1/interviews/{id}", "application/json", false},
	{"POST", "/v1/api-keys", "application/json", false},
}

// snapshot summarises every table the API writes, contents included.
func (e *env) snapshot() string {
	e.t.Helper()
	var out string
	err := e.db.Pool.QueryRow(context.Background(), `SELECT concat_ws(',',
		(SELECT count(*) FROM interviews.positions), (SELECT count(*) FROM interviews.position_competencies),
		(SELECT count(*) FROM interviews.candidates), (SELECT count(*) FROM interviews.interview_sessions),
		(SELECT count(*) FROM interviews.session_events), (SELECT count(*) FROM interviews.transcript_segments),
		(SELECT count(*) FROM interviews.api_keys), (SELECT count(*) FROM interviews.idempotency_keys),
		(SELECT string_agg(status || transcript_acked_seq, ',' ORDER BY id) FROM interviews.interview_sessions),
		(SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM interviews.positions t),
		(SELECT md5(string_agg(t::text, ',' ORDER BY t.position_id, t.ordinal)) FROM interviews.position_competencies t),
		(SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM interviews.candidates t),
		(SELECT md5(string_agg((t.id, t.max_duration_s, t.external_id, t.metadata)::text, ',' ORDER BY t.id)) FROM interviews.interview_sessions t))`).Scan(&out)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}
