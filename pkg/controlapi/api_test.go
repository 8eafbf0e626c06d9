package controlapi_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interviewvm/controlplane/pkg/controlapi"
	"github.com/interviewvm/controlplane/pkg/provision"
	"github.com/interviewvm/controlplane/pkg/session"
)

func TestListsPaginate(t *testing.T) {
	e := newEnv(t)
	tok := tenantToken(t, newTenant(), "admin")
	other := tenantToken(t, newTenant(), "admin")
	e.must(201, "POST", "/v1/candidates", other, map[string]any{"full_name": "Not mine", "email": "x@example.com"})
	want := map[string]bool{}
	for i := range 7 {
		c := e.must(201, "POST", "/v1/candidates", tok, map[string]any{"full_name": fmt.Sprintf("C%d", i), "email": "c@example.com"})
		want[c["id"].(string)] = true
	}
	seen := map[string]bool{}
	cursor, pages := "", 0
	for {
		path := "/v1/candidates?limit=3"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		page := e.must(200, "GET", path, tok, nil)
		pages++
		for _, it := range page["items"].([]any) {
			id := it.(map[string]any)["id"].(string)
			if seen[id] || !want[id] {
				t.Fatalf("page %d: unexpected or repeated candidate %s", pages, id)
			}
			seen[id] = true
		}
		next, _ := page["next_cursor"].(string)
		if next == "" {
			if page["next_cursor"] != nil {
				t.Fatalf("last page next_cursor = %v, want null", page["next_cursor"])
			}
			break
		}
		cursor = next
	}
	if pages != 3 || len(seen) != 7 {
		t.Fatalf("pages = %d, seen = %d; want 3 pages, 7 candidates", pages, len(seen))
	}

	// Interviews by status, and positions.
	a, b := e.interview(tok), e.interview(tok)
	e.must(200, "POST", "/v1/interviews/"+a+"/cancel", tok, nil)
	for status, wantID := range map[string]string{"cancelled": a, "scheduled": b} {
		page := e.must(200, "GET", "/v1/interviews?status="+status, tok, nil)
		items := page["items"].([]any)
		if len(items) != 1 || items[0].(map[string]any)["id"] != wantID {
			t.Fatalf("interviews with status %s = %v", status, items)
		}
	}
	if n := len(e.must(200, "GET", "/v1/interviews", tok, nil)["items"].([]any)); n != 2 {
		t.Fatalf("all interviews = %d, want 2", n)
	}
	pos := e.must(200, "GET", "/v1/positions?limit=1", tok, nil)
	comps := pos["items"].([]any)[0].(map[string]any)["competencies"].([]any)
	if len(comps) != 2 || comps[0].(map[string]any)["name"] != "Go" || pos["next_cursor"] == nil {
		t.Fatalf("positions page = %v", pos)
	}
	for _, bad := range []string{"/v1/candidates?limit=0", "/v1/candidates?limit=101", "/v1/candidates?limit=x",
		"/v1/candidates?cursor=bogus", "/v1/interviews?status=sleeping"} {
		if r := e.do("GET", bad, tok, nil); r.status != 400 || r.code() != session.EINVALID {
			t.Errorf("GET %s = %d %s, want 400 invalid_request", bad, r.status, r.body)
		}
	}
}

func TestTranscriptIngest(t *testing.T) {
	e := newEnv(t)
	tok := tenantToken(t, newTenant(), "recruiter")
	id := e.interview(tok)
	vmTok, _ := e.ready(tok, id)
	post := func(segs ...session.Segment) int64 {
		t.Helper()
		ans := e.must(200, "POST", "/internal/v1/sessions/"+id+"/transcript", vmTok, session.TranscriptBatch{Segments: segs})
		return int64(ans["acked_seq"].(float64))
	}
	c, i := session.SpeakerCandidate, session.SpeakerInterviewer
	if got := post(seg(2, c, "two"), seg(1, i, "one"), seg(2, c, "two again")); got != 2 {
		t.Fatalf("acked after reordered batch with a duplicate = %d, want 2", got)
	}
	if got := post(seg(4, c, "four"), seg(5, i, "five")); got != 2 {
		t.Fatalf("acked with seq 3 missing = %d, want 2 (a gap holds the ack back)", got)
	}
	if got := post(seg(1, i, "one, resent"), seg(3, i, "three")); got != 5 {
		t.Fatalf("acked once the gap is filled = %d, want 5", got)
	}
	tr := e.must(200, "GET", "/v1/interviews/"+id+"/transcript", tok, nil)
	segs := tr["segments"].([]any)
	var texts []string
	for n, s := range segs {
		m := s.(map[string]any)
		if int(m["seq"].(float64)) != n+1 {
			t.Fatalf("segment %d has seq %v", n, m["seq"])
		}
		texts = append(texts, m["text"].(string))
	}
	if strings.Join(texts, ",") != "one,two,three,four,five" || tr["complete"] != false {
		t.Fatalf("transcript = %v complete=%v", texts, tr["complete"])
	}
	if after := e.must(200, "GET", "/v1/interviews/"+id+"/transcript?after_seq=3", tok, nil)["segments"].([]any); len(after) != 2 {
		t.Fatalf("after_seq=3 gave %d segments", len(after))
	}

	// Invalid segments are refused whole.
	bad := []session.TranscriptBatch{
		{Segments: []session.Segment{seg(0, c, "zero")}},
		{Segments: []session.Segment{seg(6, "narrator", "x")}},
		{Segments: []session.Segment{{Seq: 6, Speaker: c, Text: strings.Repeat("x", provision.MaxSegmentText+1)}}},
		{Segments: nil},
	}
	for _, b := range bad {
		if r := e.do("POST", "/internal/v1/sessions/"+id+"/transcript", vmTok, b); r.status != 400 {
			t.Errorf("bad batch %+v = %d %s", b, r.status, r.body)
		}
	}
	if r := e.do("POST", "/internal/v1/sessions/"+id+"/transcript", vmTok, `{"segments":[{"seq":"6"}]}`); r.status != 400 {
		t.Errorf("wrong type = %d", r.status)
	}

	// The VM ends claiming 7 segments: the interview waits for 6 and 7.
	e.must(204, "POST", "/internal/v1/sessions/"+id+"/ended", vmTok, session.Ended{Reason: session.ReasonCompleted, LastSeq: 7})
	if st := e.must(200, "GET", "/v1/interviews/"+id, tok, nil)["status"]; st != "ending" {
		t.Fatalf("status with segments missing = %v, want ending", st)
	}
	post(seg(7, i, "seven"))
	if st := e.must(200, "GET", "/v1/interviews/"+id, tok, nil)["status"]; st != "ending" {
		t.Fatalf("status with seq 6 missing = %v, want ending", st)
	}
	if got := post(seg(6, c, "six")); got != 7 {
		t.Fatalf("final ack = %d", got)
	}
	iv := e.must(200, "GET", "/v1/interviews/"+id, tok, nil)
	if iv["status"] != "completed" || iv["end_reason"] != "completed" {
		t.Fatalf("interview after the last segment = %v", iv)
	}
	if tr := e.must(200, "GET", "/v1/interviews/"+id+"/transcript", tok, nil); tr["complete"] != true || len(tr["segments"].([]any)) != 7 {
		t.Fatalf("final transcript = %v", tr)
	}
	// Fenced: the completed session's token writes nothing any more.
	before := e.count(`SELECT count(*) FROM interviews.transcript_segments`)
	for _, path := range []string{"transcript", "heartbeat", "ready", "ended"} {
		r := e.do("POST", "/internal/v1/sessions/"+id+"/"+path, vmTok, `{"segments":[{"seq":8,"speaker":"candidate","text":"late"}]}`)
		if path != "transcript" {
			r = e.do("POST", "/internal/v1/sessions/"+id+"/"+path, vmTok, `{"reason":"completed","last_seq":9}`)
			if path != "ended" {
				r = e.do("POST", "/internal/v1/sessions/"+id+"/"+path, vmTok, nil)
			}
		}
		if r.status != 409 {
			t.Errorf("fenced token on %s = %d %s, want 409", path, r.status, r.body)
		}
	}
	if e.count(`SELECT count(*) FROM interviews.transcript_segments`) != before {
		t.Fatal("a fenced token wrote segments")
	}
}

func TestVMTokenIsBoundToItsSession(t *testing.T) {
	e := newEnv(t)
	tok := tenantToken(t, newTenant(), "recruiter")
	x, y := e.interview(tok), e.interview(tok)
	xTok, _ := e.ready(tok, x)
	yTok, _ := e.ready(tok, y)
	for _, tc := range []struct{ id, tok string }{{y, xTok}, {x, yTok}, {x, "wrong"}, {x, tok}} {
		r := e.do("POST", "/internal/v1/sessions/"+tc.id+"/transcript", tc.tok, session.TranscriptBatch{Segments: []session.Segment{seg(1, "candidate", "hi")}})
		if r.status != 401 || r.code() != session.EUNAUTHENTICATED {
			t.Errorf("token for another session = %d %s", r.status, r.body)
		}
	}
	if r := e.do("GET", "/internal/v1/sessions/not-a-uuid/config", xTok, nil); r.status != 400 {
		t.Errorf("bad id = %d", r.status)
	}
	if n := e.count(`SELECT count(*) FROM interviews.transcript_segments`); n != 0 {
		t.Fatalf("segments written with wrong tokens: %d", n)
	}
	cfg := e.must(200, "GET", "/internal/v1/sessions/"+x+"/config", xTok, nil)
	if cfg["session_id"] != x || cfg["position"].(map[string]any)["title"] != "Engineer" {
		t.Fatalf("config = %v", cfg)
	}
	if hb := e.must(200, "POST", "/internal/v1/sessions/"+x+"/heartbeat", xTok, session.Heartbeat{LastSeq: 1}); hb["action"] != "continue" {
		t.Fatalf("heartbeat = %v", hb)
	}
	e.must(202, "POST", "/v1/interviews/"+x+"/end", tok, nil)
	if hb := e.must(200, "POST", "/internal/v1/sessions/"+x+"/heartbeat", xTok, nil); hb["action"] != "end" || hb["reason"] != "ended_by_user" {
		t.Fatalf("heartbeat after end = %v", hb)
	}
}

// sse reads server-sent events.
type sse struct {
	resp *http.Response
	r    *bufio.Reader
}

type event struct{ id, name, data string }

func (e *env) stream(tok, id, lastEventID string) *sse {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.base+"/v1/interviews/"+id+"/transcript/stream", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		e.t.Fatalf("stream = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	return &sse{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next returns the next event or comment (name ":"), failing after 10 s.
func (s *sse) next(t *testing.T) event {
	t.Helper()
	type result struct {
		ev  event
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var ev event
		for {
			line, err := s.r.ReadString('\n')
			if err != nil {
				ch <- result{err: err}
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case line == "":
				if ev != (event{}) {
					ch <- result{ev: ev}
					return
				}
			case strings.HasPrefix(line, ":"):
				ch <- result{ev: event{name: ":"}}
				return
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("read stream: %v", r.err)
		}
		return r.ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10 s")
	}
	return event{}
}

func TestTranscriptStreamResumes(t *testing.T) {
	e := newEnv(t, func(c *controlapi.Config, _ *provision.Config) { c.StreamKeepAlive = 100 * time.Millisecond })
	tok := tenantToken(t, newTenant(), "viewer")
	rec := tenantToken(t, strings.TrimSpace(tenantOf(t, tok)), "recruiter")
	id := e.interview(rec)
	vmTok, _ := e.ready(rec, id)
	post := func(segs ...session.Segment) {
		e.must(200, "POST", "/internal/v1/sessions/"+id+"/transcript", vmTok, session.TranscriptBatch{Segments: segs})
	}
	post(seg(1, "interviewer", "Tell me about Go."))
	s := e.stream(tok, id, "")
	if ev := s.next(t); ev.name != "segment" || ev.id != "1" || !strings.Contains(ev.data, "Tell me about Go.") {
		t.Fatalf("first event = %+v", ev)
	}
	post(seg(2, "candidate", "Goroutines."), seg(3, "interviewer", "And channels?"))
	var ids []string
	for len(ids) < 2 {
		if ev := s.next(t); ev.name == "segment" {
			ids = append(ids, ev.id)
		}
	}
	if strings.Join(ids, ",") != "2,3" {
		t.Fatalf("live events = %v", ids)
	}
	// Idle: keep-alive comments, and nothing sent twice after them.
	for range 2 {
		if ev := s.next(t); ev.name != ":" {
			t.Fatalf("idle stream sent %+v, want a keep-alive comment", ev)
		}
	}
	post(seg(4, "candidate", "four, live"))
	ev := s.next(t)
	for ev.name == ":" { // more keep-alives while the post is on its way (a busy machine)
		ev = s.next(t)
	}
	if ev.id != "4" {
		t.Fatalf("after keep-alives the stream sent %+v, want segment 4 (nothing repeated)", ev)
	}
	s.resp.Body.Close() // the client drops; more arrives meanwhile
	post(seg(5, "interviewer", "five"), seg(4, "candidate", "four"))
	r := e.stream(tok, id, "3")
	got := []string{}
	for len(got) < 2 {
		if ev := r.next(t); ev.name == "segment" {
			got = append(got, ev.id)
		}
	}
	if strings.Join(got, ",") != "4,5" {
		t.Fatalf("resumed events = %v, want 4,5 (nothing missed, nothing twice)", got)
	}
	e.must(204, "POST", "/internal/v1/sessions/"+id+"/ended", vmTok, session.Ended{Reason: session.ReasonCompleted, LastSeq: 5})
	for {
		ev := r.next(t)
		if ev.name == "segment" {
			t.Fatalf("segment after resume repeated: %+v", ev)
		}
		if ev.name == "end" {
			if !strings.Contains(ev.data, `"completed"`) {
				t.Fatalf("end event = %+v", ev)
			}
			break
		}
	}
	other := tenantToken(t, newTenant(), "admin")
	if r := e.do("GET", "/v1/interviews/"+id+"/transcript/stream", other, nil); r.status != 404 {
		t.Fatalf("another tenant's stream = %d", r.status)
	}
	if r := e.do("GET", "/v1/interviews/"+id+"/transcript/stream", tok, nil, "Last-Event-ID", "x"); r.status != 400 {
		t.Fatalf("bad Last-Event-ID = %d", r.status)
	}
}

func TestSessionRouting(t *testing.T) {
	e := newEnv(t)
	tenant := newTenant()
	tok := tenantToken(t, tenant, "recruiter")
	id, other := e.interview(tok), e.interview(tok)
	offer := "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"
	sdp := func(path, bearer string, body []byte) response {
		req, _ := http.NewRequest("POST", e.base+path, strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/sdp")
		req.Header.Set("Authorization", "Bearer "+bearer)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw := make([]byte, 0, 512)
		buf := make([]byte, 512)
		for {
			n, err := resp.Body.Read(buf)
			raw = append(raw, buf[:n]...)
			if err != nil {
				break
			}
		}
		return response{status: resp.StatusCode, header: resp.Header, body: raw}
	}
	// Not ready yet: 409.
	if r := sdp("/v1/interviews/"+id+"/session/sdp", tok, []byte(offer)); r.status != 409 {
		t.Fatalf("sdp before ready = %d %s", r.status, r.body)
	}
	_, ans := e.ready(tok, id)
	access := ans["connect"].(map[string]any)["access_token"].(string)
	r := sdp("/v1/interviews/"+id+"/session/sdp", access, []byte(offer))
	if r.status != 201 || r.header.Get("Content-Type") != "application/sdp" || !strings.Contains(string(r.body), "answer-to") {
		t.Fatalf("sdp with the access token = %d %q", r.status, r.body)
	}
	seen := <-e.vmSeen
	if seen.URL.Path != "/session/sdp" || seen.Header.Get("Authorization") != "" {
		t.Fatalf("VM saw %s with Authorization %q", seen.URL.Path, seen.Header.Get("Authorization"))
	}
	if st := e.must(200, "GET", "/v1/interviews/"+id, tok, nil)["status"]; st != "in_progress" {
		t.Fatalf("status after an answered offer = %v", st)
	}
	if tokAns := e.must(200, "POST", "/v1/interviews/"+id+"/session/token", access, nil); tokAns["value"] != "ek_test" {
		t.Fatalf("token route = %v", tokAns)
	}
	// The access token is scoped to its interview and only to session routes.
	if r := sdp("/v1/interviews/"+other+"/session/sdp", access, []byte(offer)); r.status != 404 {
		t.Fatalf("access token on another interview = %d", r.status)
	}
	for _, path := range []string{"/v1/interviews/" + id, "/v1/interviews/" + id + "/transcript"} {
		if r := e.do("GET", path, access, nil); r.status != 401 {
			t.Fatalf("access token on %s = %d", path, r.status)
		}
	}
	if r := sdp("/v1/interviews/"+id+"/session/sdp", tenantToken(t, tenant, "viewer"), []byte(offer)); r.status != 403 {
		t.Fatalf("viewer sdp = %d", r.status)
	}
	if r := sdp("/v1/interviews/"+id+"/session/sdp", tenantToken(t, newTenant(), "admin"), []byte(offer)); r.status != 404 {
		t.Fatalf("other tenant's sdp = %d", r.status)
	}
	big := make([]byte, 65*1024)
	if r := sdp("/v1/interviews/"+id+"/session/sdp", access, big); r.status != 413 || r.code() != session.ETOOLARGE {
		t.Fatalf("oversized offer = %d %s", r.status, r.body)
	}
	// The VM goes away: 502 with the error JSON.
	e.vm.Close()
	if r := sdp("/v1/interviews/"+id+"/session/sdp", access, []byte(offer)); r.status != 502 || r.code() != session.EBADGATEWAY {
		t.Fatalf("sdp to a dead VM = %d %s", r.status, r.body)
	}
}

func TestSessionRoutingTimeout(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	e := newEnv(t, func(c *controlapi.Config, _ *provision.Config) {
		c.VMTimeout = 200 * time.Millisecond
		c.VMTransport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
			return nil, r.Context().Err()
		})
	})
	tok := tenantToken(t, newTenant(), "recruiter")
	id := e.interview(tok)
	e.ready(tok, id)
	r := e.do("POST", "/v1/interviews/"+id+"/session/token", tok, nil)
	if r.status != 504 || r.code() != session.EGATEWAYTIMEOUT {
		t.Fatalf("hanging VM = %d %s", r.status, r.body)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestTenantQuota(t *testing.T) {
	e := newEnv(t, func(_ *controlapi.Config, p *provision.Config) { p.TenantMaxConcurrent = 1 })
	tok := tenantToken(t, newTenant(), "recruiter")
	a, b := e.interview(tok), e.interview(tok)
	e.ready(tok, a)
	r := e.do("POST", "/v1/interviews/"+b+"/start?wait=0", tok, nil)
	if r.status != 429 || r.code() != session.EQUOTA {
		t.Fatalf("second live interview = %d %s, want 429 quota_exceeded", r.status, r.body)
	}
	if st := e.must(200, "GET", "/v1/interviews/"+b, tok, nil)["status"]; st != "scheduled" {
		t.Fatalf("refused start changed the status to %v", st)
	}
	// Another tenant is not affected.
	tok2 := tenantToken(t, newTenant(), "recruiter")
	e.must(202, "POST", "/v1/interviews/"+e.interview(tok2)+"/start?wait=0", tok2, nil)
	// Once a ends, b may start.
	e.must(200, "POST", "/v1/interviews/"+a+"/cancel", tok, nil)
	e.must(202, "POST", "/v1/interviews/"+b+"/start?wait=0", tok, nil)
}

func TestRateLimitPerUser(t *testing.T) {
	e := newEnv(t, func(c *controlapi.Config, _ *provision.Config) { c.RateLimit, c.RateBurst = 0.5, 3 })
	tenant := newTenant()
	alice := tenantToken(t, tenant, "viewer")
	var limited response
	for i := range 5 {
		r := e.do("GET", "/v1/candidates", alice, nil)
		if i < 3 && r.status != 200 {
			t.Fatalf("request %d = %d", i, r.status)
		}
		if i >= 3 {
			limited = r
		}
	}
	if limited.status != 429 || limited.code() != session.ERATELIMITED {
		t.Fatalf("over the limit = %d %s", limited.status, limited.body)
	}
	if ra, err := strconv.Atoi(limited.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After = %q", limited.header.Get("Retry-After"))
	}
	// Another user (another subject) has its own budget.
	bob, err := controlapi.DevToken(testSecret, "authenticated", newTenant(), "viewer", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.must(200, "GET", "/v1/candidates", bob, nil)
}

func TestConcurrentStartsOneMachine(t *testing.T) {
	e := newEnv(t)
	tok := tenantToken(t, newTenant(), "recruiter")
	id := e.interview(tok)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { e.do("POST", "/v1/interviews/"+id+"/start?wait=0", tok, nil, "Idempotency-Key", "k1") })
	}
	wg.Wait()
	<-e.machines.created
	select {
	case extra := <-e.machines.created:
		t.Fatalf("a second machine was created for %s", extra)
	case <-time.After(200 * time.Millisecond):
	}
	_ = context.Background()
}

func tenantOf(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	raw, err := base64URL(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(raw), `"tenant_id":"`)
	return string(raw[i+13 : i+13+36])
}

func TestOpenAPIServed(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/openapi.yaml", "", nil)
	if r.status != 200 || !strings.Contains(r.header.Get("Content-Type"), "yaml") ||
		!strings.Contains(string(r.body), "openapi: 3.0.3") || !strings.Contains(string(r.body), "/v1/interviews/{id}/start") {
		t.Fatalf("GET /openapi.yaml = %d %s %.200s", r.status, r.header.Get("Content-Type"), r.body)
	}
}

// TestStreamFollowsIngestOnAnotherReplica: a segment ingested by replica
// A reaches B's streams by notification and a read, and A's as well: from
// memory (handed over at commit) unless A's own notification was quicker
// than the hand-over; the same event on both.
func TestStreamFollowsIngestOnAnotherReplica(t *testing.T) {
	a := newEnv(t)
	b := newEnvOn(t, a.db, a.dbURL) // a second controller on the same database
	tok := tenantToken(t, newTenant(), "recruiter")
	id := a.interview(tok)
	vmTok, _ := a.ready(tok, id)
	s := b.stream(tok, id, "")
	local := a.stream(tok, id, "")
	a.must(200, "POST", "/internal/v1/sessions/"+id+"/transcript", vmTok,
		session.TranscriptBatch{Segments: []session.Segment{seg(1, "interviewer", "Hello from replica A")}})
	ev := s.next(t)
	if ev.name != "segment" || ev.id != "1" {
		t.Fatalf("replica B's stream got %+v", ev)
	}
	if evA := local.next(t); evA != ev {
		t.Fatalf("replica A's stream got %+v, B's %+v", evA, ev)
	}
	if n := metricValue(t, a, "livefeed_handoffs_total"); n > 1 {
		t.Fatalf("replica A handed over %v updates, want at most 1", n)
	}
	if n := metricValue(t, b, "livefeed_handoffs_total"); n != 0 {
		t.Fatalf("replica B handed over %v updates, want 0 (it did not ingest)", n)
	}
}

// metricValue reads an unlabelled sample from e's /metrics.
func metricValue(t *testing.T, e *env, name string) float64 {
	t.Helper()
	for line := range strings.SplitSeq(string(e.do("GET", "/metrics", "", nil).body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

func TestCrashedVMFailsItsSession(t *testing.T) {
	e := newEnv(t)
	tok := tenantToken(t, newTenant(), "recruiter")
	id := e.interview(tok)
	vmTok, _ := e.ready(tok, id)
	e.must(200, "POST", "/internal/v1/sessions/"+id+"/transcript", vmTok, session.TranscriptBatch{Segments: []session.Segment{seg(1, "interviewer", "Hi")}})
	e.must(204, "POST", "/internal/v1/sessions/"+id+"/ended", vmTok, session.Ended{Reason: session.ReasonMachineLost, LastSeq: 3, Failed: true})
	iv := e.must(200, "GET", "/v1/interviews/"+id, tok, nil)
	if iv["status"] != "failed" || iv["end_reason"] != "machine_lost" {
		t.Fatalf("crashed interview = %v", iv)
	}
	// What was acknowledged stays; the token is dead.
	if n := len(e.must(200, "GET", "/v1/interviews/"+id+"/transcript", tok, nil)["segments"].([]any)); n != 1 {
		t.Fatalf("transcript after the crash has %d segments", n)
	}
	if r := e.do("POST", "/internal/v1/sessions/"+id+"/heartbeat", vmTok, nil); r.status != 409 {
		t.Fatalf("heartbeat after the crash = %d", r.status)
	}
}

// TestHeartbeatsAreLoggedAtDebug: thousands of VMs heartbeat every couple
// of seconds, so an accepted heartbeat's access log line is at debug; a
// refused one stays at info, as every other request.
func TestHeartbeatsAreLoggedAtDebug(t *testing.T) {
	e := newEnv(t)
	tok := tenantToken(t, newTenant(), "recruiter")
	x := e.interview(tok)
	xTok, _ := e.ready(tok, x)
	e.must(200, "POST", "/internal/v1/sessions/"+x+"/heartbeat", xTok, session.Heartbeat{LastSeq: 1})
	if r := e.do("POST", "/internal/v1/sessions/"+x+"/heartbeat", "wrong", nil); r.status != 401 {
		t.Fatalf("heartbeat with a wrong token = %d", r.status)
	}
	levels := map[string]string{}
	for line := range strings.SplitSeq(e.logs.String(), "\n") {
		if !strings.Contains(line, `msg="http request"`) || !strings.Contains(line, "route=/internal/v1/sessions/:id/heartbeat") {
			continue
		}
		level, _, _ := strings.Cut(strings.TrimPrefix(line[strings.Index(line, "level="):], "level="), " ")
		status, _, _ := strings.Cut(line[strings.Index(line, "status=")+len("status="):], " ")
		levels[status] = level
	}
	if levels["200"] != "DEBUG" || levels["401"] != "INFO" {
		t.Fatalf("heartbeat access log levels by status = %v, want 200 at DEBUG and 401 at INFO", levels)
	}
}

// TestHeartbeatBodyIsCheckedAsTheSpecSays: the heartbeat route skips the
// generic spec validation for speed; its handler refuses what the spec's
// Heartbeat schema refuses, with the contract's error, and records none
// of it.
func TestHeartbeatBodyIsCheckedAsTheSpecSays(t *testing.T) {
	e := newEnv(t)
	tok := tenantToken(t, newTenant(), "recruiter")
	x := e.interview(tok)
	xTok, _ := e.ready(tok, x)
	path := "/internal/v1/sessions/" + x + "/heartbeat"
	for name, body := range map[string]string{
		"negative last_seq":   `{"last_seq":-1}`,
		"negative acked_seq":  `{"acked_seq":-1}`,
		"negative buffered":   `{"buffered_segments":-3}`,
		"negative retries":    `{"retries":-1}`,
		"fractional last_seq": `{"last_seq":1.5}`,
		"string retries":      `{"retries":"2"}`,
		"unknown field":       `{"last_seq":1,"cpu":3}`,
		"long sideband":       `{"sideband":"` + strings.Repeat("é", 201) + `"}`,
		"not an object":       `[1]`,
		// Over the fast path's buffer: read again by the general decoder.
		"long escaped sideband": `{"sideband":"` + strings.Repeat(`\u00e9`, 201) + `"}`,
		"long unknown field":    `{"last_seq":1,"` + strings.Repeat("x", 2000) + `":1}`,
	} {
		if r := e.do("POST", path, xTok, body); r.status != 400 || r.code() != session.EINVALID {
			t.Errorf("%s: %d %s, want 400 invalid", name, r.status, r.body)
		}
	}
	if r := e.do("POST", "/internal/v1/sessions/not-a-uuid/heartbeat", xTok, nil); r.status != 400 || r.code() != session.EINVALID {
		t.Errorf("malformed session id: %d %s, want 400 invalid", r.status, r.body)
	}
	if r := e.do("POST", path, xTok, `{"last_seq":1}`, "Content-Type", "text/plain"); r.status != 415 {
		t.Errorf("text/plain heartbeat: %d %s, want 415", r.status, r.body)
	}
	if n := e.count(`SELECT count(*) FROM interviews.interview_sessions WHERE vm_last_seq <> 0 OR vm_retries <> 0`); n != 0 {
		t.Fatalf("a refused heartbeat was recorded: %d interviews changed", n)
	}
	ok := e.must(200, "POST", path, xTok, `{"last_seq":3,"acked_seq":2,"buffered_segments":1,"retries":0,"sideband":"`+strings.Repeat("é", 200)+`"}`)
	if ok["action"] != "continue" {
		t.Fatalf("a valid heartbeat = %v", ok)
	}
	// A body longer than the fast path reads, and one of the usual shape
	// (the first heartbeat of y is written at once): both are read whole.
	long := `{"last_seq":4,"sideband":"` + strings.Repeat(`\u00e9`, 200) + `"}`
	if ok := e.must(200, "POST", path, xTok, long); ok["action"] != "continue" {
		t.Fatalf("a valid heartbeat of %d bytes = %v", len(long), ok)
	}
	y := e.interview(tok)
	yTok, _ := e.ready(tok, y)
	e.must(200, "POST", "/internal/v1/sessions/"+y+"/heartbeat", yTok, `{"last_seq":5,"acked_seq":4,"buffered_segments":2,"retries":1}`)
	if n := e.count(`SELECT count(*) FROM interviews.interview_sessions WHERE id = $1 AND vm_last_seq = 5 AND vm_buffered_segments = 2 AND vm_retries = 1`, y); n != 1 {
		t.Fatalf("heartbeat {last_seq 5, buffered 2, retries 1} not stored as sent")
	}
}
