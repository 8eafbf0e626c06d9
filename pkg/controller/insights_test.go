package controller

import (
	"context"
	"fmt"
	"math"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/insights/responsestest"
	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
)

// completedInterview seeds an interview, runs it with the scripted
// candidate until the transcript holds candidate speech, ends it and
// waits until it is completed; it returns the interview id and its
// transcript segments by seq.
func (c *controller) completedInterview(t *testing.T, tok string) (string, map[int64]string) {
	t.Helper()
	id := c.seed(t, tok)
	c.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/start?wait=30", tok, nil)
	eventually(t, "candidate speech in the transcript", 60*time.Second, func() bool {
		segs := c.mustCall(t, 200, "GET", "/v1/interviews/"+id+"/transcript", tok, nil)["segments"].([]any)
		n := 0
		for _, s := range segs {
			if s.(map[string]any)["speaker"] == "candidate" {
				n++
			}
		}
		return n >= 2
	})
	c.mustCall(t, 202, "POST", "/v1/interviews/"+id+"/end", tok, nil)
	eventually(t, "the interview to complete", 60*time.Second, func() bool {
		return c.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil)["status"] == "completed"
	})
	tr := c.mustCall(t, 200, "GET", "/v1/interviews/"+id+"/transcript", tok, nil)
	if tr["complete"] != true {
		t.Fatalf("transcript of a completed interview is not complete: %v", tr)
	}
	text := map[int64]string{}
	for _, s := range tr["segments"].([]any) {
		seg := s.(map[string]any)
		text[int64(seg["seq"].(float64))] = seg["text"].(string)
	}
	return id, text
}

// insightsWhen polls the interview's insights until their status is one
// of final, and returns them.
func (c *controller) insightsWhen(t *testing.T, tok, id string, final ...string) map[string]any {
	t.Helper()
	var got map[string]any
	eventually(t, "insights "+strings.Join(final, "|"), 90*time.Second, func() bool {
		status, out := c.call(t, "GET", "/v1/interviews/"+id+"/insights", tok, nil)
		if status != 200 {
			return false
		}
		got = out
		for _, f := range final {
			if out["status"] == f {
				return true
			}
		}
		return false
	})
	return got
}

// checkReady checks ready insights against the contract: every
// competency of the seeded position scored 1–5, the overall score
// computed from the weights, every quote verbatim in its segment.
func checkReady(t *testing.T, in map[string]any, text map[int64]string) {
	t.Helper()
	if in["status"] != "ready" || in["error"] != nil || in["completed_at"] == nil || in["recommendation"] == nil {
		t.Fatalf("insights = %v", in)
	}
	weights := map[string]float64{"Go": 0.6, "PostgreSQL": 0.4}
	comps := in["competencies"].([]any)
	if len(comps) != len(weights) {
		t.Fatalf("competencies = %v, want one per competency of the position", comps)
	}
	var sum float64
	for _, c := range comps {
		cm := c.(map[string]any)
		score := cm["score"].(float64)
		if score != math.Trunc(score) || score < 1 || score > 5 || cm["weight"].(float64) != weights[cm["name"].(string)] {
			t.Fatalf("competency = %v", cm)
		}
		sum += cm["weight"].(float64) * score
		for _, e := range cm["evidence"].([]any) {
			ev := e.(map[string]any)
			seg, ok := text[int64(ev["seq"].(float64))]
			if !ok || !strings.Contains(seg, ev["quote"].(string)) {
				t.Errorf("evidence %v is not verbatim in its segment %q", ev, seg)
			}
		}
	}
	if want := math.Round(sum*100) / 100; in["overall_score"].(float64) != want {
		t.Errorf("overall_score = %v, want %v", in["overall_score"], want)
	}
}

// insightsEvents returns the reasons of the analysis events on the
// interview's timeline.
func (c *controller) insightsEvents(t *testing.T, tok, id string) []string {
	t.Helper()
	var out []string
	for _, e := range c.mustCall(t, 200, "GET", "/v1/interviews/"+id+"/events", tok, nil)["items"].([]any) {
		ev := e.(map[string]any)
		if ev["actor"] == "insights" {
			if ev["from"] != "completed" || ev["to"] != "completed" {
				t.Errorf("insights event %v changes the status", ev)
			}
			out = append(out, ev["reason"].(string))
		}
	}
	return out
}

func TestInsightsSimulatedEndToEnd(t *testing.T) {
	c := startController(t, map[string]string{"REALTIME": "synthetic", "SYNTHETIC_TURN": "50ms"})
	tenant := uuid.NewString()
	tok := token(t, tenant, "recruiter")

	// Not completed: nothing to read, nothing to re-run.
	scheduled := c.seed(t, tok)
	c.mustCall(t, 404, "GET", "/v1/interviews/"+scheduled+"/insights", tok, nil)
	c.mustCall(t, 409, "POST", "/v1/interviews/"+scheduled+"/insights", tok, nil)

	id, text := c.completedInterview(t, tok)
	in := c.insightsWhen(t, tok, id, "ready", "failed", "not_applicable")
	checkReady(t, in, text)
	if in["simulated"] != true || in["model"] != "simulated" {
		t.Errorf("simulated insights say model %v simulated %v", in["model"], in["simulated"])
	}
	if got := c.insightsEvents(t, tok, id); strings.Join(got, ",") != "insights_ready" {
		t.Errorf("insights events = %v, want [insights_ready]", got)
	}

	// Another tenant sees nothing, and cannot re-run it.
	other := token(t, uuid.NewString(), "recruiter")
	c.mustCall(t, 404, "GET", "/v1/interviews/"+id+"/insights", other, nil)
	c.mustCall(t, 404, "POST", "/v1/interviews/"+id+"/insights", other, nil)
	// A viewer reads but does not re-run.
	c.mustCall(t, 403, "POST", "/v1/interviews/"+id+"/insights", token(t, tenant, "viewer"), nil)

	// A re-run queues a new analysis of the same row.
	queued := c.mustCall(t, 202, "POST", "/v1/interviews/"+id+"/insights", tok, nil)
	if s := queued["status"]; s != "pending" && s != "running" && s != "ready" {
		t.Fatalf("re-run answered %v", queued)
	}
	eventually(t, "the re-run's insights_ready event", 90*time.Second, func() bool {
		return len(c.insightsEvents(t, tok, id)) == 2
	})
	checkReady(t, c.insightsWhen(t, tok, id, "ready"), text)
	if n := insightsRows(t, c.dbURL, id); n != 1 {
		t.Errorf("%d insights rows after a re-run, want 1", n)
	}
}

func insightsRows(t *testing.T, dbURL, id string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM interviews.insights WHERE interview_id = $1`, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

var candidateLine = regexp.MustCompile(`(?m)^\[seq (\d+)\] candidate: (.+)$`)

// fakeAnswer answers like a model: every competency scored, one verbatim
// quote of the first candidate segment and one quote the candidate never
// said (which the controller must drop).
func fakeAnswer(r responsestest.Request) string {
	m := candidateLine.FindStringSubmatch(r.Input())
	seq, quote := "1", "nothing"
	if m != nil {
		seq, quote = m[1], m[2]
		if len(quote) > 12 {
			quote = quote[:12]
		}
	}
	ev := fmt.Sprintf(`[{"seq": %s, "quote": %q}, {"seq": %s, "quote": "words the candidate never said"}]`, seq, quote, seq)
	return `{"competencies": {` +
		`"Go": {"evidence": ` + ev + `, "rationale": "answers in Go terms", "score": 4},` +
		`"PostgreSQL": {"evidence": [], "rationale": "little said", "score": 2}},` +
		`"summary": "A short interview.", "strengths": ["concise"], "concerns": ["thin"], "recommendation": "yes"}`
}

func TestInsightsOpenAIThroughTheFake(t *testing.T) {
	fake := responsestest.NewServer(responsestest.Config{APIKey: "sk-test-insights-key"})
	defer fake.Close()
	c := startController(t, map[string]string{
		"REALTIME": "synthetic", "SYNTHETIC_TURN": "50ms",
		"INSIGHTS": "openai", "OPENAI_API_KEY": "sk-test-insights-key", "OPENAI_BASE_URL": fake.BaseURL(),
		"INSIGHTS_MODEL": "gpt-test",
	})
	tok := token(t, uuid.NewString(), "recruiter")

	// Rate limited twice (with Retry-After), then an answer: ready, with
	// the quote the candidate never said dropped.
	fake.Script(
		responsestest.Behavior{Status: 429, RetryAfter: time.Second},
		responsestest.Behavior{Status: 429, RetryAfter: time.Second},
		responsestest.Behavior{Answer: fakeAnswer},
	)
	id, text := c.completedInterview(t, tok)
	in := c.insightsWhen(t, tok, id, "ready", "failed", "not_applicable")
	checkReady(t, in, text)
	if in["model"] != "gpt-test" || in["simulated"] != false || in["dropped_evidence"].(float64) != 1 ||
		in["attempts"].(float64) != 3 || in["usage"].(map[string]any)["input_tokens"].(float64) <= 0 {
		t.Errorf("insights = %v", in)
	}
	if in["overall_score"].(float64) != 3.2 { // (0.6·4 + 0.4·2) ⁄ 1
		t.Errorf("overall_score = %v, want 3.2", in["overall_score"])
	}
	reqs := fake.Requests()
	if len(reqs) != 3 || reqs[0].Status != 429 || reqs[2].Status != 200 || reqs[2].Model() != "gpt-test" {
		t.Errorf("requests to the fake: %d, %+v", len(reqs), reqs)
	}

	// A refusal fails the analysis, with no scores.
	fake.Script(responsestest.Behavior{Refusal: "I can't help with that."})
	c.mustCall(t, 202, "POST", "/v1/interviews/"+id+"/insights", tok, nil)
	failed := c.insightsWhen(t, tok, id, "failed")
	if e, _ := failed["error"].(string); !strings.Contains(e, "refusal") || failed["overall_score"] != nil ||
		len(failed["competencies"].([]any)) != 0 {
		t.Errorf("refused insights = %v", failed)
	}
	if got := c.insightsEvents(t, tok, id); strings.Join(got, ",") != "insights_ready,insights_failed" {
		t.Errorf("insights events = %v", got)
	}

	// An answer cut off by a content filter also fails (one cut off by
	// the output budget is asked again with a larger one first).
	fake.Script(responsestest.Behavior{Incomplete: "content_filter"})
	c.mustCall(t, 202, "POST", "/v1/interviews/"+id+"/insights", tok, nil)
	eventually(t, "the third analysis event", 90*time.Second, func() bool { return len(c.insightsEvents(t, tok, id)) == 3 })
	inc := c.insightsWhen(t, tok, id, "failed")
	if e, _ := inc["error"].(string); !strings.Contains(e, "incomplete") || inc["overall_score"] != nil {
		t.Errorf("incomplete insights = %v", inc)
	}
	if strings.Contains(c.logs.String(), "sk-test-insights-key") {
		t.Error("the controller logged the OpenAI API key")
	}
}

// Two replicas work the same queue: each completed interview gets exactly
// one analysis row and one insights_ready event.
func TestInsightsTwoReplicasOneRow(t *testing.T) {
	a := startController(t, map[string]string{"REALTIME": "synthetic", "SYNTHETIC_TURN": "50ms"})
	b := startController(t, map[string]string{"REALTIME": "synthetic", "SYNTHETIC_TURN": "50ms", "DATABASE_URL": a.dbURL})
	tok := token(t, uuid.NewString(), "recruiter")
	var ids []string
	for _, c := range []*controller{a, b, a} {
		id, _ := c.completedInterview(t, tok)
		ids = append(ids, id)
	}
	for _, id := range ids {
		b.insightsWhen(t, tok, id, "ready")
		if n := insightsRows(t, a.dbURL, id); n != 1 {
			t.Errorf("interview %s has %d insights rows, want 1", id, n)
		}
		if got := a.insightsEvents(t, tok, id); len(got) != 1 {
			t.Errorf("interview %s has insights events %v, want one", id, got)
		}
	}
}

// A controller stopped in the middle of an analysis (its request to the
// API hanging) cancels it on the way out; the other replica runs it again
// and there is still exactly one insights row, finished once.
func TestInsightsSurviveAStoppedReplica(t *testing.T) {
	fake := responsestest.NewServer(responsestest.Config{APIKey: "sk-test-insights-key"})
	defer fake.Close()
	env := map[string]string{
		"REALTIME": "synthetic", "SYNTHETIC_TURN": "50ms", "SHUTDOWN_TIMEOUT": "1s",
		"INSIGHTS": "openai", "OPENAI_API_KEY": "sk-test-insights-key", "OPENAI_BASE_URL": fake.BaseURL(),
	}
	a := startController(t, env)
	tok := token(t, uuid.NewString(), "recruiter")
	fake.Script(responsestest.Behavior{Hang: true}, responsestest.Behavior{Answer: fakeAnswer})
	id, text := a.completedInterview(t, tok)
	select {
	case <-fake.Hanging():
	case <-time.After(90 * time.Second):
		t.Fatal("the analysis never reached the API")
	}
	if s := a.mustCall(t, 200, "GET", "/v1/interviews/"+id+"/insights", tok, nil)["status"]; s != "running" {
		t.Fatalf("insights status while the API hangs = %v, want running", s)
	}
	bEnv := map[string]string{"DATABASE_URL": a.dbURL}
	for k, v := range env {
		bEnv[k] = v
	}
	b := startController(t, bEnv)
	if err := a.stop(); err != nil {
		t.Fatalf("stopping the first replica: %v", err)
	}
	in := b.insightsWhen(t, tok, id, "ready", "failed")
	checkReady(t, in, text)
	if in["attempts"].(float64) != 2 {
		t.Errorf("attempts = %v, want 2 (the cancelled one and the one that finished)", in["attempts"])
	}
	if n := insightsRows(t, a.dbURL, id); n != 1 {
		t.Errorf("%d insights rows, want 1", n)
	}
	if got := b.insightsEvents(t, tok, id); strings.Join(got, ",") != "insights_ready" {
		t.Errorf("insights events = %v, want one insights_ready", got)
	}
}

// A controller process SIGKILLed while its analysis waits on the API
// runs no shutdown path: its job stays running in River's table and the
// analysis stays running. Another controller process takes the job over
// once the dead one's attempt has run past its time limit
// (INSIGHTS_TIMEOUT + 30s) and JOB_RESCUE_AFTER, and the analysis ends
// ready, in exactly one insights row with one insights_ready event.
func TestInsightsSurviveAKilledController(t *testing.T) {
	bin := buildController(t)
	fake := responsestest.NewServer(responsestest.Config{APIKey: "sk-test-insights-key"})
	defer fake.Close()
	fake.Script(responsestest.Behavior{Hang: true}, responsestest.Behavior{Answer: fakeAnswer})
	dbURL := postgrestest.NewURL(t)
	process := func() *chaosController {
		port := freeTCPPort(t)
		return &chaosController{t: t, bin: bin, base: "http://127.0.0.1:" + port, logs: &syncBuffer{}, env: []string{
			"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + dbURL, "LISTEN_ADDR=127.0.0.1:" + port,
			"JWT_SECRET=" + testSecret, "SESSIONVM_BIN=" + sessionVMBin, "HEARTBEAT_INTERVAL=100ms", "HEARTBEAT_TIMEOUT=5s",
			"REALTIME=synthetic", "SYNTHETIC_TURN=50ms", "LOG_FORMAT=json", "LOG_LEVEL=debug",
			"INSIGHTS=openai", "OPENAI_API_KEY=sk-test-insights-key", "OPENAI_BASE_URL=" + fake.BaseURL(),
			// The dead attempt's time limit (20s + 30s) stays below
			// JOB_RESCUE_AFTER, the shortest allowed: the rescue comes a
			// minute after the attempt began. 20s leaves the test ample
			// time to kill the controller before its own request times out.
			"INSIGHTS_TIMEOUT=20s", "JOB_RESCUE_AFTER=1m",
		}}
	}
	a := process()
	a.start()
	defer a.kill()
	b := process()
	defer func() {
		b.kill()
		if t.Failed() {
			t.Logf("killed controller's log (tail):\n%s", tail(a.logs.String(), 10000))
			t.Logf("second controller's log (tail):\n%s", tail(b.logs.String(), 10000))
		}
	}()
	ac := &controller{base: a.base, dbURL: dbURL, logs: a.logs}
	tok := token(t, uuid.NewString(), "recruiter")
	id, text := ac.completedInterview(t, tok)
	select {
	case <-fake.Hanging():
	case <-time.After(90 * time.Second):
		t.Fatal("the analysis never reached the API")
	}
	a.kill()

	// Nothing ran on the way out: the job and the analysis still say
	// running.
	ctx := context.Background()
	db, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	jobState := func() (state, errs string) {
		t.Helper()
		if err := db.QueryRow(ctx, `SELECT state::text, coalesce(array_to_string(errors, ' '), '')
			FROM interviews.river_job WHERE kind = 'insights_analyze' AND args->>'interview_id' = $1`, id).Scan(&state, &errs); err != nil {
			t.Fatalf("the analysis job: %v", err)
		}
		return state, errs
	}
	var status string
	if err := db.QueryRow(ctx, `SELECT status FROM interviews.insights WHERE interview_id = $1`, id).Scan(&status); err != nil {
		t.Fatal(err)
	}
	if state, _ := jobState(); state != "running" || status != "running" {
		t.Fatalf("after the kill: job %s, analysis %s; want both running", state, status)
	}

	b.start()
	bc := &controller{base: b.base, dbURL: dbURL, logs: b.logs}
	var in map[string]any
	eventually(t, "the second controller to finish the analysis", 4*time.Minute, func() bool {
		st, out := bc.call(t, "GET", "/v1/interviews/"+id+"/insights", tok, nil)
		in = out
		return st == 200 && (out["status"] == "ready" || out["status"] == "failed")
	})
	checkReady(t, in, text)
	if in["attempts"].(float64) != 2 {
		t.Errorf("attempts = %v, want 2 (the killed one and the one that finished)", in["attempts"])
	}
	if _, errs := jobState(); !strings.Contains(errs, "Stuck job rescued") {
		t.Errorf("the job's errors %q do not show River's rescue of the killed attempt", errs)
	}
	if n := insightsRows(t, dbURL, id); n != 1 {
		t.Errorf("%d insights rows, want 1", n)
	}
	if got := bc.insightsEvents(t, tok, id); strings.Join(got, ",") != "insights_ready" {
		t.Errorf("insights events = %v, want one insights_ready", got)
	}
	if reqs := fake.Requests(); len(reqs) != 2 {
		t.Errorf("%d requests reached the API, want 2 (the one left hanging, the rescued one)", len(reqs))
	}
}

// An interview that completes without a word from the candidate has
// nothing to score: not_applicable, with the reason, and no scores.
func TestInsightsNotApplicableWithoutCandidateSpeech(t *testing.T) {
	c := startController(t, nil)
	tok := token(t, uuid.NewString(), "recruiter")
	id := c.seed(t, tok)
	c.mustCall(t, 200, "POST", "/v1/interviews/"+id+"/start?wait=30", tok, nil)
	c.mustCall(t, 202, "POST", "/v1/interviews/"+id+"/end", tok, nil)
	eventually(t, "the interview to complete", 60*time.Second, func() bool {
		return c.mustCall(t, 200, "GET", "/v1/interviews/"+id, tok, nil)["status"] == "completed"
	})
	in := c.insightsWhen(t, tok, id, "ready", "failed", "not_applicable")
	if e, _ := in["error"].(string); in["status"] != "not_applicable" || !strings.Contains(e, "no candidate speech") ||
		in["overall_score"] != nil || len(in["competencies"].([]any)) != 0 {
		t.Errorf("insights = %v", in)
	}
	if got := c.insightsEvents(t, tok, id); strings.Join(got, ",") != "insights_failed" {
		t.Errorf("insights events = %v, want [insights_failed]", got)
	}
}
