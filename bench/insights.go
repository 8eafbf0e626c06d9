package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/interviewvm/controlplane/pkg/controller"
	"github.com/interviewvm/controlplane/pkg/insights/responsestest"
	"github.com/interviewvm/controlplane/pkg/session"
)

// insightsKey is the API key the harness's Responses fake accepts.
const insightsKey = "sk-bench-insights"

// InsightsConfig sets case 9 up.
type InsightsConfig struct {
	// Interviews complete at once (the burst); Sequential more complete
	// one at a time beforehand, each after the last one's analysis was
	// stored (the queue idle).
	Interviews, Sequential int
	// Segments is each interview's transcript length (alternating
	// interviewer and candidate).
	Segments int
	// Concurrency is how many VMs report their end at once in the burst.
	Concurrency int
}

// Insights is case 9's result. Times of the analyses come from
// PostgreSQL: an analysis's row is created (now()) in the transaction
// that completes the interview, and stamped completed_at (now()) in the
// one that stores its outcome; River stamps attempted_at when a worker
// takes the job.
type Insights struct {
	Interviews, Sequential, Segments int
	// Workers is the controller's analyses at once (its insights queue).
	Workers int
	// PerSecond is the burst's analyses per second: Interviews over the
	// time from the first completion to the last stored analysis.
	PerSecond float64
	Span      time.Duration
	// Completing is the time from the first completion of the burst to
	// its last (the VMs' end reports).
	Completing time.Duration
	// Wait (completion → a worker takes the job) and Work (taken →
	// stored) of the burst's analyses.
	Wait, Work Summary
	// EndToEnd is completion → stored of the sequential analyses, made
	// of SeqWait (completion → taken) and SeqWork (taken → stored).
	EndToEnd, SeqWait, SeqWork Summary
	// Floor is a plain SDK client's round trip to the fake with the
	// sequential analyses' own requests, one at a time.
	Floor Summary
	// SDKPerSecond is the plain SDK client replaying the burst's requests
	// to the fake, Workers at a time.
	SDKPerSecond float64
	// Ready counts analyses stored ready; NotReady the others; Retried
	// those that took more than one attempt.
	Ready, NotReady, Retried int
}

// RunInsights completes interviews the way they really complete — started
// through a controller with INSIGHTS=openai on the fake Fly API
// (synthetic VMs), each VM posting its transcript and then its end report
// — so each analysis is enqueued by the controller's own transition hook.
// The controller's OPENAI_BASE_URL is the Responses fake, served by the
// harness, which answers at once. It measures the analyses first one at a
// time, then Interviews at once, and then a plain SDK client replaying
// the same requests to the same fake.
func (e *Env) RunInsights(ctx context.Context, cfg InsightsConfig) (Insights, error) {
	res := Insights{Interviews: cfg.Interviews, Sequential: cfg.Sequential, Segments: cfg.Segments, Workers: controller.InsightsWorkers}
	fake := responsestest.NewServer(responsestest.Config{APIKey: insightsKey})
	defer fake.Close()
	n := cfg.Interviews + cfg.Sequential
	const tenants = 8
	f, vms, _, ids, err := e.liveSessions(ctx, "insights", tenants*((n+tenants-1)/tenants), tenants, map[string]string{
		"INSIGHTS": "openai", "OPENAI_API_KEY": insightsKey, "OPENAI_BASE_URL": fake.BaseURL(), "INSIGHTS_MODEL": "gpt-bench",
		// The VMs stay quiet: the analyses are what is measured.
		"HEARTBEAT_INTERVAL": "20s", "HEARTBEAT_TIMEOUT": "5m",
	})
	if err != nil {
		return res, err
	}
	defer f.Close()
	var all []*SyntheticVM
	for _, group := range ids {
		for _, id := range group {
			v := vms.VM(id)
			if v == nil {
				return res, fmt.Errorf("no VM for interview %s", id)
			}
			all = append(all, v)
		}
	}
	all = all[:n]
	hc := &http.Client{Transport: newTransport(cfg.Concurrency + 4), Timeout: 60 * time.Second}
	segs := make([]session.Segment, cfg.Segments)
	for i := range segs {
		segs[i] = Segment(int64(i + 1))
	}
	e.logf("insights: %d interviews live; posting their transcripts (%d segments each)", n, cfg.Segments)
	if err := parallel(ctx, n, cfg.Concurrency, func(ctx context.Context, i int) error {
		acked, err := all[i].Post(ctx, hc, segs)
		if err == nil && acked != int64(cfg.Segments) {
			err = fmt.Errorf("transcript of %s acknowledged up to %d of %d", all[i].SessionID, acked, cfg.Segments)
		}
		return err
	}); err != nil {
		return res, fmt.Errorf("post transcripts: %w", err)
	}
	end := func(ctx context.Context, v *SyntheticVM) error {
		return vmCall(ctx, hc, v.Base, v.SessionID, v.Token, "POST", "ended",
			session.Ended{Reason: session.ReasonCompleted, LastSeq: int64(cfg.Segments)}, nil)
	}
	db, err := pgx.Connect(ctx, f.Controller.DBURL)
	if err != nil {
		return res, fmt.Errorf("connect to the bench database: %w", err)
	}
	defer db.Close(context.Background())

	// One at a time: each analysis runs with the queue otherwise idle.
	e.logf("insights: %d analyses one at a time", cfg.Sequential)
	seqIDs := make([]string, cfg.Sequential)
	for i, v := range all[:cfg.Sequential] {
		seqIDs[i] = v.SessionID
		if err := end(ctx, v); err != nil {
			return res, fmt.Errorf("end interview %s: %w", v.SessionID, err)
		}
		if err := waitFor(ctx, 30*time.Second, "the analysis of "+v.SessionID, func() bool {
			done, err := finishedAnalyses(ctx, db, []string{v.SessionID})
			return err == nil && done == 1
		}); err != nil {
			return res, err
		}
	}
	seqFirst := len(fake.Requests())

	// At once: every VM of the burst reports its end.
	burst := all[cfg.Sequential:]
	burstIDs := make([]string, len(burst))
	for i, v := range burst {
		burstIDs[i] = v.SessionID
	}
	e.logf("insights: %d interviews completing at once", len(burst))
	if err := parallel(ctx, len(burst), cfg.Concurrency, func(ctx context.Context, i int) error {
		return end(ctx, burst[i])
	}); err != nil {
		return res, fmt.Errorf("end interviews: %w", err)
	}
	if err := waitFor(ctx, 3*time.Minute, "every analysis of the burst", func() bool {
		done, err := finishedAnalyses(ctx, db, burstIDs)
		return err == nil && done == len(burstIDs)
	}); err != nil {
		return res, err
	}

	seq, err := analysisTimes(ctx, db, seqIDs)
	if err != nil {
		return res, err
	}
	bt, err := analysisTimes(ctx, db, burstIDs)
	if err != nil {
		return res, err
	}
	var e2e, seqWait, seqWork, wait, work []time.Duration
	for _, a := range seq {
		e2e = append(e2e, a.stored.Sub(a.completed))
		seqWait = append(seqWait, a.taken.Sub(a.completed))
		seqWork = append(seqWork, a.stored.Sub(a.taken))
	}
	first, last, lastCompleted := bt[0].completed, bt[0].stored, bt[0].completed
	for _, a := range append(seq, bt...) {
		if a.status == session.InsightsReady {
			res.Ready++
		} else {
			res.NotReady++
		}
		if a.attempts > 1 {
			res.Retried++
		}
	}
	for _, a := range bt {
		wait = append(wait, a.taken.Sub(a.completed))
		work = append(work, a.stored.Sub(a.taken))
		if a.completed.Before(first) {
			first = a.completed
		}
		if a.completed.After(lastCompleted) {
			lastCompleted = a.completed
		}
		if a.stored.After(last) {
			last = a.stored
		}
	}
	res.EndToEnd, res.Wait, res.Work = Summarize(e2e), Summarize(wait), Summarize(work)
	res.SeqWait, res.SeqWork = Summarize(seqWait), Summarize(seqWork)
	res.SeqWait, res.SeqWork = Summarize(seqWait), Summarize(seqWork)
	res.Span, res.Completing = last.Sub(first), lastCompleted.Sub(first)
	res.PerSecond = float64(len(bt)) / res.Span.Seconds()

	// The limit: the fake's own service to a plain SDK client, with the
	// requests the controller sent it.
	reqs := fake.Requests()
	var bodies []json.RawMessage
	for _, r := range reqs {
		if r.Status != http.StatusOK {
			return res, fmt.Errorf("the fake answered the controller %d", r.Status)
		}
		b, err := json.Marshal(r.Body)
		if err != nil {
			return res, err
		}
		bodies = append(bodies, b)
	}
	if len(bodies) != n || seqFirst != cfg.Sequential {
		return res, fmt.Errorf("the fake got %d requests (%d before the burst), want %d (%d)", len(bodies), seqFirst, n, cfg.Sequential)
	}
	client := openai.NewClient(option.WithBaseURL(fake.BaseURL()+"/"), option.WithAPIKey(insightsKey), option.WithMaxRetries(0))
	call := func(ctx context.Context, body json.RawMessage) error {
		var out responses.Response
		if err := client.Post(ctx, "responses", body, &out); err != nil {
			return fmt.Errorf("plain SDK client: %w", err)
		}
		if out.Status != responses.ResponseStatusCompleted || out.OutputText() == "" {
			return fmt.Errorf("plain SDK client: response %s", out.Status)
		}
		return nil
	}
	e.logf("insights: the same requests from a plain SDK client")
	var floor []time.Duration
	for _, b := range bodies[:cfg.Sequential] {
		t0 := time.Now()
		if err := call(ctx, b); err != nil {
			return res, err
		}
		floor = append(floor, time.Since(t0))
	}
	res.Floor = Summarize(floor)
	burstBodies := bodies[cfg.Sequential:]
	t0 := time.Now()
	if err := parallel(ctx, len(burstBodies), res.Workers, func(ctx context.Context, i int) error {
		return call(ctx, burstBodies[i])
	}); err != nil {
		return res, err
	}
	res.SDKPerSecond = float64(len(burstBodies)) / time.Since(t0).Seconds()
	if res.NotReady > 0 {
		return res, fmt.Errorf("insights: %d analyses did not end ready", res.NotReady)
	}
	return res, nil
}

// finishedAnalyses counts the interviews of ids whose analysis ended
// (ready, failed or not_applicable).
func finishedAnalyses(ctx context.Context, db *pgx.Conn, ids []string) (int, error) {
	var n int
	err := db.QueryRow(ctx, `SELECT count(*) FROM interviews.insights
		WHERE interview_id = ANY($1::uuid[]) AND status IN ('ready', 'failed', 'not_applicable')`, ids).Scan(&n)
	return n, err
}

type analysisTime struct {
	completed, taken, stored time.Time
	status                   session.InsightsStatus
	attempts                 int
}

// analysisTimes reads when each analysis of ids was enqueued (its
// interview completed), taken by a worker (its job's last attempt) and
// stored.
func analysisTimes(ctx context.Context, db *pgx.Conn, ids []string) ([]analysisTime, error) {
	rows, err := db.Query(ctx, `SELECT i.created_at, j.attempted_at, i.completed_at, i.status, i.attempts
		FROM interviews.insights i JOIN interviews.river_job j ON j.args->>'interview_id' = i.interview_id::text
		WHERE i.interview_id = ANY($1::uuid[])`, ids)
	if err != nil {
		return nil, fmt.Errorf("read analysis times: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (analysisTime, error) {
		var a analysisTime
		var taken, stored *time.Time
		if err := r.Scan(&a.completed, &taken, &stored, &a.status, &a.attempts); err != nil {
			return a, err
		}
		if taken == nil || stored == nil {
			return a, errors.New("an analysis without its job's attempt or its completion time")
		}
		a.taken, a.stored = *taken, *stored
		return a, nil
	})
	if err != nil {
		return nil, fmt.Errorf("read analysis times: %w", err)
	}
	if len(out) != len(ids) {
		return nil, fmt.Errorf("read analysis times: %d rows for %d interviews (one job and one row each expected)", len(out), len(ids))
	}
	return out, nil
}
