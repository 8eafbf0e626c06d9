package controlapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// FuzzRoutes sends arbitrary bodies to the JSON routes, the VM's transcript
// route and the SDP route. Whatever arrives, the answer is never a 5xx, and
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
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		ee := *e
		ee.t = t
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		before := ee.snapshot()
		path := strings.ReplaceAll(rt.path, "{id}", id)
		bearer := tok
		if rt.vm {
			bearer = vmTok
		}
		req, err := http.NewRequest("POST", ee.base+path, strings.NewReader(string(body)))
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
			t.Fatalf("POST %s with %q = %d", path, body, resp.StatusCode)
		}
		if resp.StatusCode >= 400 {
			if after := ee.snapshot(); after != before {
				t.Fatalf("refused POST %s with %q (%d) changed the database: %s → %s", path, body, resp.StatusCode, before, after)
			}
		}
	})
}

var fuzzRoutes = []struct {
	path, contentType string
	vm                bool
}{
	{"/v1/positions", "application/json", false},
	{"/v1/candidates", "application/json", false},
	{"/v1/interviews", "application/json", false},
	{"/internal/v1/sessions/{id}/transcript", "application/json", true},
	{"/v1/interviews/{id}/session/sdp", "application/sdp", false},
	{"/v1/api-keys", "application/json", false},
}

// snapshot summarises every table the API writes.
func (e *env) snapshot() string {
	e.t.Helper()
	var out string
	err := e.db.Pool.QueryRow(context.Background(), `SELECT concat_ws(',',
		(SELECT count(*) FROM interviews.positions), (SELECT count(*) FROM interviews.position_competencies),
		(SELECT count(*) FROM interviews.candidates), (SELECT count(*) FROM interviews.interview_sessions),
		(SELECT count(*) FROM interviews.session_events), (SELECT count(*) FROM interviews.transcript_segments),
		(SELECT count(*) FROM interviews.api_keys), (SELECT count(*) FROM interviews.idempotency_keys),
		(SELECT string_agg(status || transcript_acked_seq, ',' ORDER BY id) FROM interviews.interview_sessions))`).Scan(&out)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}
