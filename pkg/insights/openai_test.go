package insights_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/interviewvm/controlplane/pkg/insights"
	"github.com/interviewvm/controlplane/pkg/insights/responsestest"
)

func asError(t *testing.T, err error) *insights.Error {
	t.Helper()
	var e *insights.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *insights.Error", err, err)
	}
	return e
}

func TestOpenAIScoresThroughTheFake(t *testing.T) {
	fake, sc, _ := setup(t, nil)
	fake.Script(responsestest.Behavior{Text: goodAnswer().text(t)})

	res, err := insights.Analyze(context.Background(), sc, fixture())
	if err != nil {
		t.Fatal(err)
	}
	// (3·4 + 1·3) / 4 = 3.75, computed by us.
	if res.OverallScore != 3.75 {
		t.Errorf("overall score %v, want 3.75", res.OverallScore)
	}
	want := []insights.CompetencyResult{
		{Name: "Go", Weight: 3, Score: 4, Rationale: "Concrete concurrency and testing practice.", Evidence: []insights.Evidence{
			{Seq: 2, Quote: "goroutines with a bounded worker pool"}, {Seq: 2, Quote: "table-driven tests"},
		}},
		{Name: "Communication", Weight: 1, Score: 3, Rationale: "Wrote and presented a design doc.", Evidence: []insights.Evidence{
			{Seq: 4, Quote: "walked the team through the trade-offs"},
		}},
	}
	if d := cmp.Diff(want, res.Competencies); d != "" {
		t.Errorf("competencies (-want +got):\n%s", d)
	}
	if res.Recommendation != insights.Yes || res.Model != "gpt-5.5" || res.Simulated || res.DroppedEvidence != 0 {
		t.Errorf("result %+v", res)
	}
	if res.Usage.InputTokens <= 0 || res.Usage.OutputTokens <= 0 {
		t.Errorf("usage not recorded: %+v", res.Usage)
	}

	reqs := fake.Requests()
	if len(reqs) != 1 || reqs[0].Status != http.StatusOK || !reqs[0].Authorized {
		t.Fatalf("requests %+v", reqs)
	}
	r := reqs[0]
	f := r.Format()
	if f["type"] != "json_schema" || f["strict"] != true || f["name"] != insights.SchemaName {
		t.Errorf("text.format %v", f)
	}
	if r.Body["store"] != false {
		t.Errorf("store = %v, want false", r.Body["store"])
	}
	for _, s := range []string{`"Go" (weight 3)`, `"Communication" (weight 1)`, "Explaining technical decisions clearly",
		"[seq 2] candidate: I built a billing service", "[seq 5] interviewer:", "Backend engineer"} {
		if !strings.Contains(r.Input(), s) {
			t.Errorf("prompt lacks %q:\n%s", s, r.Input())
		}
	}
	if !strings.Contains(r.Instructions(), "character for character") || strings.Contains(r.Instructions(), "overall_score") {
		t.Errorf("instructions: %s", r.Instructions())
	}
	comps := r.Schema()["properties"].(map[string]any)["competencies"].(map[string]any)
	if d := cmp.Diff([]any{"Go", "Communication"}, comps["required"]); d != "" {
		t.Errorf("schema competencies required (-want +got):\n%s", d)
	}
}

func TestOpenAIDropsFabricatedQuotes(t *testing.T) {
	fake, sc, _ := setup(t, nil)
	a := goodAnswer()
	goComp := a.Competencies["Go"]
	goComp.Evidence = append(goComp.Evidence,
		insights.Evidence{Seq: 2, Quote: "I am the best Go programmer alive"},     // not said
		insights.Evidence{Seq: 4, Quote: "goroutines with a bounded worker pool"}, // said, but in seq 2
		insights.Evidence{Seq: 99, Quote: "Thank you"},                            // no such segment
	)
	a.Competencies["Go"] = goComp
	fake.Script(responsestest.Behavior{Text: a.text(t)})

	res, err := insights.Analyze(context.Background(), sc, fixture())
	if err != nil {
		t.Fatal(err)
	}
	if res.DroppedEvidence != 3 {
		t.Errorf("dropped %d, want 3", res.DroppedEvidence)
	}
	if got := len(res.Competencies[0].Evidence); got != 2 {
		t.Errorf("Go keeps %d quotes, want the 2 verbatim ones: %+v", got, res.Competencies[0].Evidence)
	}
}

func TestOpenAIRateLimitedTwiceThenSucceeds(t *testing.T) {
	fake, sc, _ := setup(t, nil)
	fake.Script(
		responsestest.Behavior{Status: http.StatusTooManyRequests, RetryAfter: 2 * time.Second},
		responsestest.Behavior{Status: http.StatusTooManyRequests, RetryAfter: 7 * time.Second},
		responsestest.Behavior{Text: goodAnswer().text(t)},
	)
	// The job runner retries; this loop stands in for it, recording the
	// delays it was asked to wait instead of waiting.
	var delays []time.Duration
	var res insights.Result
	var err error
	for attempt := 1; attempt <= 5; attempt++ {
		res, err = insights.Analyze(context.Background(), sc, fixture())
		if err == nil {
			break
		}
		e := asError(t, err)
		if !insights.Retryable(err) || e.Reason != insights.ReasonRateLimited || e.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("attempt %d: %v not a retryable rate limit", attempt, err)
		}
		delays = append(delays, insights.RetryAfter(err))
	}
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]time.Duration{2 * time.Second, 7 * time.Second}, delays); d != "" {
		t.Errorf("Retry-After delays (-want +got):\n%s", d)
	}
	if res.OverallScore != 3.75 {
		t.Errorf("overall %v", res.OverallScore)
	}
	if n := len(fake.Requests()); n != 3 {
		t.Errorf("%d requests, want 3 (the SDK must not retry on its own)", n)
	}
}

func TestOpenAIServerErrorsAreRetryable(t *testing.T) {
	for _, status := range []int{http.StatusInternalServerError, http.StatusServiceUnavailable} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			fake, sc, _ := setup(t, nil)
			fake.Script(responsestest.Behavior{Status: status})
			_, err := insights.Analyze(context.Background(), sc, fixture())
			e := asError(t, err)
			if !e.Retryable || e.Reason != insights.ReasonServerError || e.StatusCode != status || e.RetryAfter != 0 {
				t.Errorf("got %+v", e)
			}
			if n := len(fake.Requests()); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
		})
	}
}

func TestOpenAIHangingRequestTimesOutRetryably(t *testing.T) {
	// The fake holds the request until the client gives up: only the
	// scorer's request timeout ends it.
	fake, sc, _ := setup(t, func(c *insights.OpenAIConfig) { c.RequestTimeout = time.Second })
	fake.Script(responsestest.Behavior{Hang: true})
	_, err := insights.Analyze(context.Background(), sc, fixture())
	e := asError(t, err)
	if !e.Retryable || e.Reason != insights.ReasonTimeout {
		t.Errorf("got %+v", e)
	}
	select {
	case <-fake.Hanging():
	case <-time.After(30 * time.Second):
		t.Error("the fake never held the request")
	}
}

func TestOpenAINetworkFailureIsRetryable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	sc, err := insights.NewOpenAI(insights.OpenAIConfig{APIKey: testKey, BaseURL: "http://" + addr + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = insights.Analyze(context.Background(), sc, fixture())
	e := asError(t, err)
	if !e.Retryable || e.Reason != insights.ReasonNetwork || strings.Contains(err.Error(), testKey) {
		t.Errorf("got %+v", e)
	}
}

func TestOpenAIRefusalIsPermanent(t *testing.T) {
	fake, sc, _ := setup(t, nil)
	fake.Script(responsestest.Behavior{Refusal: "I'm sorry, I can't help with that."})
	_, err := insights.Analyze(context.Background(), sc, fixture())
	e := asError(t, err)
	if e.Retryable || e.Reason != insights.ReasonRefusal || !strings.Contains(e.Error(), "I can't help with that") {
		t.Errorf("got %v (%+v)", e, e)
	}
	if e.Usage.OutputTokens <= 0 {
		t.Errorf("usage of the refused request not kept: %+v", e.Usage)
	}
}

func TestOpenAIIncomplete(t *testing.T) {
	t.Run("max_output_tokens once, then asked again with twice the budget", func(t *testing.T) {
		fake, sc, _ := setup(t, func(c *insights.OpenAIConfig) { c.MaxOutputTokens = 1000 })
		fake.Script(
			responsestest.Behavior{Incomplete: "max_output_tokens", Text: goodAnswer().text(t)},
			responsestest.Behavior{Text: goodAnswer().text(t)},
		)
		res, err := insights.Analyze(context.Background(), sc, fixture())
		if err != nil {
			t.Fatal(err)
		}
		reqs := fake.Requests()
		if len(reqs) != 2 {
			t.Fatalf("%d requests, want 2", len(reqs))
		}
		if a, b := fmt.Sprint(reqs[0].Body["max_output_tokens"]), fmt.Sprint(reqs[1].Body["max_output_tokens"]); a != "1000" || b != "2000" {
			t.Errorf("max_output_tokens %s then %s, want 1000 then 2000", a, b)
		}
		if res.Usage.OutputTokens <= 64*2 {
			t.Errorf("usage %+v does not add up both attempts", res.Usage)
		}
	})
	t.Run("max_output_tokens twice is permanent", func(t *testing.T) {
		fake, sc, _ := setup(t, nil)
		fake.Script(
			responsestest.Behavior{Incomplete: "max_output_tokens"},
			responsestest.Behavior{Incomplete: "max_output_tokens"},
		)
		_, err := insights.Analyze(context.Background(), sc, fixture())
		e := asError(t, err)
		if e.Retryable || e.Reason != insights.ReasonIncomplete || !strings.Contains(e.Error(), "max_output_tokens") {
			t.Errorf("got %v", e)
		}
		if n := len(fake.Requests()); n != 2 {
			t.Errorf("%d requests, want 2", n)
		}
	})
	t.Run("content_filter is permanent at once", func(t *testing.T) {
		fake, sc, _ := setup(t, nil)
		fake.Script(responsestest.Behavior{Incomplete: "content_filter"})
		_, err := insights.Analyze(context.Background(), sc, fixture())
		e := asError(t, err)
		if e.Retryable || e.Reason != insights.ReasonIncomplete || !strings.Contains(e.Error(), "content_filter") {
			t.Errorf("got %v", e)
		}
		if n := len(fake.Requests()); n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
	})
}

func TestOpenAIAnswersThatBreakTheSchemaArePermanent(t *testing.T) {
	missing := goodAnswer()
	delete(missing.Competencies, "Communication")
	unknown := goodAnswer()
	unknown.Competencies["Leadership"] = answerComp{Score: 5, Rationale: "x", Evidence: []insights.Evidence{}}
	outOfRange := goodAnswer()
	c := outOfRange.Competencies["Go"]
	c.Score = 6
	outOfRange.Competencies["Go"] = c
	badRec := goodAnswer()
	badRec.Recommendation = "maybe"
	for _, tc := range []struct {
		name   string
		text   string
		reason insights.Reason
	}{
		{"missing competency", missing.text(t), insights.ReasonMissingCompetency},
		{"unknown competency", unknown.text(t), insights.ReasonSchemaViolation},
		{"score out of range", outOfRange.text(t), insights.ReasonSchemaViolation},
		{"recommendation outside the enum", badRec.text(t), insights.ReasonSchemaViolation},
		{"not JSON", "The candidate is great.", insights.ReasonSchemaViolation},
		{"unknown field", `{"competencies":{},"summary":"","strengths":[],"concerns":[],"recommendation":"yes","overall_score":5}`, insights.ReasonSchemaViolation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, sc, _ := setup(t, nil)
			fake.Script(responsestest.Behavior{Text: tc.text})
			_, err := insights.Analyze(context.Background(), sc, fixture())
			e := asError(t, err)
			if e.Retryable || e.Reason != tc.reason {
				t.Errorf("got %v, want permanent %s", e, tc.reason)
			}
		})
	}
}

func TestOpenAIDefaultFakeAnswerVerifies(t *testing.T) {
	// With no script the fake answers a schema instance, as a model under
	// strict mode must: that instance passes our verification.
	_, sc, _ := setup(t, nil)
	res, err := insights.Analyze(context.Background(), sc, fixture())
	if err != nil {
		t.Fatal(err)
	}
	if res.Competencies[0].Score != 3 || res.Recommendation != insights.StrongYes || res.OverallScore != 3 {
		t.Errorf("result %+v", res)
	}
}

func TestOpenAIKeyNeverInErrorsOrLogs(t *testing.T) {
	const wrongKey = "sk-proj-WRONGKEYabcdef0123456789XYZ"
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fake := responsestest.NewServer(responsestest.Config{APIKey: testKey, Logger: log})
	t.Cleanup(fake.Close)
	sc, err := insights.NewOpenAI(insights.OpenAIConfig{APIKey: wrongKey, BaseURL: fake.BaseURL(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	_, err = insights.Analyze(context.Background(), sc, fixture())
	e := asError(t, err)
	if e.Retryable || e.Reason != insights.ReasonAuth || e.StatusCode != http.StatusUnauthorized {
		t.Errorf("got %+v", e)
	}

	// A correct key through failures and successes.
	fake2, sc2, logs2 := setup(t, nil)
	fake2.Script(
		responsestest.Behavior{Status: http.StatusTooManyRequests, RetryAfter: time.Second},
		responsestest.Behavior{Status: http.StatusInternalServerError},
		responsestest.Behavior{Status: http.StatusBadRequest},
		responsestest.Behavior{Refusal: "no"},
	)
	var errs []error
	errs = append(errs, err)
	for range 4 {
		_, err := insights.Analyze(context.Background(), sc2, fixture())
		if err == nil {
			t.Fatal("scripted failure succeeded")
		}
		errs = append(errs, err)
	}
	if _, err := insights.Analyze(context.Background(), sc2, fixture()); err != nil {
		t.Fatal(err)
	}
	for _, err := range errs {
		for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err), fmt.Sprintf("%v", errors.Unwrap(err))} {
			for _, key := range []string{wrongKey, testKey, "WRONGKEY", "XYZ", "FAKEKEY", "Bearer"} {
				if strings.Contains(s, key) {
					t.Errorf("error text %q holds %q", s, key)
				}
			}
		}
	}
	for _, l := range []string{logs.String(), logs2.String()} {
		for _, key := range []string{wrongKey, testKey, "WRONGKEY", "FAKEKEY"} {
			if strings.Contains(l, key) {
				t.Errorf("logs hold %q:\n%s", key, l)
			}
		}
	}
	if !strings.Contains(logs2.String(), "responses request") {
		t.Errorf("the scorer logged nothing; the check above proves nothing:\n%s", logs2.String())
	}
}

func TestOpenAITrimsLongTranscripts(t *testing.T) {
	fake, sc, _ := setup(t, func(c *insights.OpenAIConfig) { c.MaxInputTokens = 4000 })
	in := fixture()
	in.Segments = nil
	for i := int64(1); i <= 400; i++ {
		sp := insights.SpeakerInterviewer
		if i%2 == 0 {
			sp = insights.SpeakerCandidate
		}
		in.Segments = append(in.Segments, insights.Segment{Seq: i, Speaker: sp,
			Text: fmt.Sprintf("Segment %d: I worked on Go services and explained the design to the team in some detail.", i)})
	}
	p := insights.BuildPrompt(in, 4000)
	if p.OmittedSegments == 0 || p.OmittedSegments == len(in.Segments) || p.EstimatedTokens > 4000 {
		t.Fatalf("prompt omits %d segments, estimates %d tokens", p.OmittedSegments, p.EstimatedTokens)
	}
	res, err := insights.Analyze(context.Background(), sc, in)
	if err != nil {
		t.Fatal(err)
	}
	if res.OmittedSegments != p.OmittedSegments {
		t.Errorf("result omits %d, prompt %d", res.OmittedSegments, p.OmittedSegments)
	}
	input := fake.Requests()[0].Input()
	for _, s := range []string{"[seq 1] interviewer:", "[seq 400] candidate:", "are left out here to fit the model's context"} {
		if !strings.Contains(input, s) {
			t.Errorf("trimmed prompt lacks %q", s)
		}
	}
	if strings.Contains(input, "[seq 200] ") {
		t.Error("a middle segment was kept")
	}
	// Whole transcripts are kept when they fit.
	if p := insights.BuildPrompt(in, insights.DefaultMaxInputTokens); p.OmittedSegments != 0 {
		t.Errorf("default budget omits %d segments", p.OmittedSegments)
	}
}
