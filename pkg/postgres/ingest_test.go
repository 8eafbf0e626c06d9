package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/interviewvm/controlplane/pkg/postgres"
	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
	"github.com/interviewvm/controlplane/pkg/session"
)

func accept(*session.Interview) error { return nil }

func noEvents(*session.Interview) ([]session.Event, error) { return nil, nil }

func segsOf(from, to int64, text string) []session.Segment {
	var out []session.Segment
	for s := from; s <= to; s++ {
		out = append(out, session.Segment{Seq: s, Speaker: session.SpeakerCandidate, Text: fmt.Sprintf("%s %d", text, s)})
	}
	return out
}

// TestGroupCommitIngestIsExactUnderConcurrency: many interviews' batches,
// each also sent a second time at once (a retry), arrive together and are
// committed in shared flushes; every acknowledgement covers only stored
// seqs without a gap, nothing is stored twice, a refused batch fails alone,
// and every interview's change is notified.
func TestGroupCommitIngestIsExactUnderConcurrency(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	tenant := uuid.NewString()
	c, p := seed(t, db, tenant)
	sc := session.TenantScope(tenant)
	const interviews, batches, per = 12, 8, 5
	ids := make([]string, interviews)
	for i := range ids {
		iv, err := db.CreateInterview(ctx, sc, session.Interview{CandidateID: c.ID, PositionID: p.ID, Architecture: "hybrid", MaxDurationS: 60})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = iv.ID
	}

	notified := make(chan string, 1024)
	lctx, stop := context.WithCancel(ctx)
	listening := make(chan struct{})
	go func() { defer close(listening); db.Listen(lctx, func(id string, _ int64) { notified <- id }) }()
	defer func() { stop(); <-listening }()
	if id := <-notified; id != "" { // the listener is up
		t.Fatalf("first notification %q, want the empty reconnect one", id)
	}

	refused := errors.New("refused")
	var wg sync.WaitGroup
	errs := make(chan error, interviews*batches*3)
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range int64(batches) {
				segs := segsOf(b*per+1, (b+1)*per, "text")
				var inner sync.WaitGroup
				acks := make([]int64, 2)
				for k := range 2 { // the batch and its retry, at once
					inner.Add(1)
					go func() {
						defer inner.Done()
						iv, err := db.AppendTranscript(ctx, id, segs, accept, noEvents)
						if err != nil {
							errs <- err
							return
						}
						acks[k] = iv.AckedSeq
					}()
				}
				// A batch its check refuses, in the same flushes.
				inner.Add(1)
				go func() {
					defer inner.Done()
					_, err := db.AppendTranscript(ctx, id, segsOf(1000, 1001, "never"), func(*session.Interview) error { return refused }, noEvents)
					if !errors.Is(err, refused) {
						errs <- fmt.Errorf("refused batch: err = %w", err)
					}
				}()
				inner.Wait()
				for _, a := range acks {
					if a != (b+1)*per {
						errs <- fmt.Errorf("interview %s batch %d acked %d, want %d", id, b, a, (b+1)*per)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seen := map[string]bool{}
	for len(seen) < interviews {
		select {
		case id := <-notified:
			if id != "" {
				seen[id] = true
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("notified %d of %d interviews", len(seen), interviews)
		}
	}
	for _, id := range ids {
		segs, iv, err := db.Transcript(ctx, sc, id, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(segs) != batches*per || iv.AckedSeq != batches*per {
			t.Fatalf("interview %s: %d segments stored, acked %d; want %d each", id, len(segs), iv.AckedSeq, batches*per)
		}
		for i, s := range segs {
			if s.Seq != int64(i+1) {
				t.Fatalf("interview %s: segment %d has seq %d", id, i, s.Seq)
			}
		}
	}
}

// TestGroupCommitAcksOnlyContiguousSeqs: a gap holds the acknowledgement
// back until it is filled; an unknown or malformed interview fails alone.
func TestGroupCommitAcksOnlyContiguousSeqs(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	tenant := uuid.NewString()
	c, p := seed(t, db, tenant)
	iv, err := db.CreateInterview(ctx, session.TenantScope(tenant), session.Interview{CandidateID: c.ID, PositionID: p.ID, Architecture: "hybrid", MaxDurationS: 60})
	if err != nil {
		t.Fatal(err)
	}
	got, err := db.AppendTranscript(ctx, iv.ID, append(segsOf(1, 2, "a"), segsOf(4, 5, "a")...), accept, noEvents)
	if err != nil || got.AckedSeq != 2 {
		t.Fatalf("with a gap at 3: acked %d, %v; want 2", got.AckedSeq, err)
	}
	got, err = db.AppendTranscript(ctx, iv.ID, segsOf(3, 3, "a"), accept, noEvents)
	if err != nil || got.AckedSeq != 5 {
		t.Fatalf("gap filled: acked %d, %v; want 5", got.AckedSeq, err)
	}
	if _, err := db.AppendTranscript(ctx, uuid.NewString(), segsOf(1, 1, "x"), accept, noEvents); session.ErrorCode(err) != session.ENOTFOUND {
		t.Fatalf("unknown interview: %v, want not found", err)
	}
	if _, err := db.AppendTranscript(ctx, "not-a-uuid", segsOf(1, 1, "x"), accept, noEvents); session.ErrorCode(err) != session.EINVALID {
		t.Fatalf("malformed id: %v, want invalid", err)
	}
}

// TestRecordHeartbeatsWritesLiveSessionsInOneBatch: live interviews get
// their heartbeat and are returned as they stand; others are left alone.
func TestRecordHeartbeatsWritesLiveSessionsInOneBatch(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	tenant := uuid.NewString()
	c, p := seed(t, db, tenant)
	sc := session.TenantScope(tenant)
	mk := func() session.Interview {
		iv, err := db.CreateInterview(ctx, sc, session.Interview{CandidateID: c.ID, PositionID: p.ID, Architecture: "hybrid", MaxDurationS: 60})
		if err != nil {
			t.Fatal(err)
		}
		return iv
	}
	live, idle := mk(), mk() // idle stays scheduled: not live
	now := time.Now()
	hash := bytes.Repeat([]byte{7}, 32)
	if _, err := db.UpdateInterview(ctx, sc, live.ID, func(iv *session.Interview) ([]session.Event, error) {
		iv.TokenHash = hash
		ev, err := iv.Transition(session.StateProvisioning, "", session.ActorUser, now)
		return []session.Event{ev}, err
	}); err != nil {
		t.Fatal(err)
	}
	at := now.Add(time.Second).Truncate(time.Microsecond)
	got, err := db.RecordHeartbeats(ctx, []session.HeartbeatRecord{
		{ID: live.ID, At: at, Stats: session.VMStats{LastSeq: 9, BufferedSegments: 2, Retries: 1}},
		{ID: idle.ID, At: at},
		{ID: uuid.NewString(), At: at},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[live.ID].Status != session.StateProvisioning || got[live.ID].ID != live.ID ||
		!bytes.Equal(got[live.ID].TokenHash, hash) {
		t.Fatalf("returned %+v, want only the live one with its status and token hash", got)
	}
	iv, err := db.Interview(ctx, sc, live.ID)
	if err != nil || iv.LastHeartbeatAt == nil || !iv.LastHeartbeatAt.Equal(at) || iv.VM.LastSeq != 9 || iv.VM.BufferedSegments != 2 || iv.VM.Retries != 1 {
		t.Fatalf("live after batch: %+v %v", iv, err)
	}
	iv, err = db.Interview(ctx, sc, idle.ID)
	if err != nil || iv.LastHeartbeatAt != nil {
		t.Fatalf("not-live interview written: %+v %v", iv, err)
	}
}

// TestIngestDropsRetriesAboveTheAcknowledgement: a retry of seqs stored
// above a gap (so above the acknowledgement) stores nothing twice, keeps
// the first text and moves the acknowledgement once the gap is filled.
func TestIngestDropsRetriesAboveTheAcknowledgement(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	tenant := uuid.NewString()
	c, p := seed(t, db, tenant)
	sc := session.TenantScope(tenant)
	iv, err := db.CreateInterview(ctx, sc, session.Interview{CandidateID: c.ID, PositionID: p.ID, Architecture: "hybrid", MaxDurationS: 60})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := db.AppendTranscript(ctx, iv.ID, append(segsOf(1, 1, "first"), segsOf(3, 4, "first")...), accept, noEvents); err != nil || got.AckedSeq != 1 {
		t.Fatalf("1, 3, 4: acked %d, %v; want 1", got.AckedSeq, err)
	}
	// The retry of 1 and 3–4 with other texts, and 2 twice in one batch.
	batch := append(segsOf(1, 4, "retry"), segsOf(2, 2, "again")...)
	if got, err := db.AppendTranscript(ctx, iv.ID, batch, accept, noEvents); err != nil || got.AckedSeq != 4 {
		t.Fatalf("retry: acked %d, %v; want 4", got.AckedSeq, err)
	}
	segs, _, err := db.Transcript(ctx, sc, iv.ID, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"first 1", "retry 2", "first 3", "first 4"}
	if len(segs) != len(want) {
		t.Fatalf("%d segments stored, want %d: %+v", len(segs), len(want), segs)
	}
	for i, s := range segs {
		if s.Seq != int64(i+1) || s.Text != want[i] {
			t.Fatalf("segment %d = %d %q, want %d %q", i, s.Seq, s.Text, i+1, want[i])
		}
	}
}

// TestRecordHeartbeatsSkipsRowsAnotherTransactionHolds: a batch does not
// wait for a row a transcript flush (here: an open transaction) holds; that
// heartbeat is returned as live and written by a later batch, the third
// one waiting for the row.
func TestRecordHeartbeatsSkipsRowsAnotherTransactionHolds(t *testing.T) {
	db, url := postgrestest.New(t)
	ctx := context.Background()
	tenant := uuid.NewString()
	c, p := seed(t, db, tenant)
	sc := session.TenantScope(tenant)
	var ivs []session.Interview
	for range 2 {
		iv, err := db.CreateInterview(ctx, sc, session.Interview{CandidateID: c.ID, PositionID: p.ID, Architecture: "hybrid", MaxDurationS: 60})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.UpdateInterview(ctx, sc, iv.ID, func(iv *session.Interview) ([]session.Event, error) {
			ev, err := iv.Transition(session.StateProvisioning, "", session.ActorUser, time.Now())
			return []session.Event{ev}, err
		}); err != nil {
			t.Fatal(err)
		}
		ivs = append(ivs, iv)
	}
	free, held := ivs[0], ivs[1]

	holder, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var pid int
	if err := tx.QueryRow(ctx, `SELECT pg_backend_pid() FROM interviews.interview_sessions WHERE id = $1 FOR NO KEY UPDATE`, held.ID).Scan(&pid); err != nil {
		t.Fatal(err)
	}

	// The context only keeps a broken store from hanging the test.
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	at := time.Now().Truncate(time.Microsecond)
	beats := []session.HeartbeatRecord{{ID: free.ID, At: at}, {ID: held.ID, At: at}}
	lastBeat := func(id string) *time.Time {
		t.Helper()
		iv, err := db.Interview(ctx, sc, id)
		if err != nil {
			t.Fatal(err)
		}
		return iv.LastHeartbeatAt
	}
	for batch := 1; batch <= 2; batch++ {
		got, err := db.RecordHeartbeats(rctx, beats)
		if err != nil {
			t.Fatalf("batch %d: %v", batch, err)
		}
		if got[held.ID].Status != session.StateProvisioning || (batch == 1 && got[free.ID].Status != session.StateProvisioning) {
			t.Fatalf("batch %d returned %+v, want the held one (and in batch 1 the free one) live", batch, got)
		}
		if lb := lastBeat(free.ID); lb == nil || !lb.Equal(at) {
			t.Fatalf("batch %d: free row's heartbeat %v, want %v", batch, lb, at)
		}
		if lb := lastBeat(held.ID); lb != nil {
			t.Fatalf("batch %d: held row written (%v) while held", batch, lb)
		}
		beats = nil // the put-off heartbeat goes with the next batches
	}

	// The third batch waits for the row.
	done := make(chan error, 1)
	go func() {
		_, err := db.RecordHeartbeats(rctx, nil)
		done <- err
	}()
	for {
		var waiting bool
		if err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted AND $1 = ANY(pg_blocking_pids(pid)))`, pid).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("third batch returned (%v) without waiting for the held row", err)
		case <-rctx.Done():
			t.Fatal("the third batch never waited for the held row")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if lb := lastBeat(held.ID); lb == nil || !lb.Equal(at) {
		t.Fatalf("held row's heartbeat %v after the wait, want %v", lb, at)
	}
}

// TestTranscriptFlushWritesAPutOffHeartbeat: a heartbeat put off because
// its row was busy is written by the next transcript flush of that
// interview.
func TestTranscriptFlushWritesAPutOffHeartbeat(t *testing.T) {
	db, url := postgrestest.New(t)
	ctx := context.Background()
	tenant := uuid.NewString()
	c, p := seed(t, db, tenant)
	sc := session.TenantScope(tenant)
	iv, err := db.CreateInterview(ctx, sc, session.Interview{CandidateID: c.ID, PositionID: p.ID, Architecture: "hybrid", MaxDurationS: 60})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.UpdateInterview(ctx, sc, iv.ID, func(iv *session.Interview) ([]session.Event, error) {
		ev, err := iv.Transition(session.StateProvisioning, "", session.ActorUser, time.Now())
		return []session.Event{ev}, err
	}); err != nil {
		t.Fatal(err)
	}
	holder, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM interviews.interview_sessions WHERE id = $1 FOR NO KEY UPDATE`, iv.ID); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Truncate(time.Microsecond)
	if _, err := db.RecordHeartbeats(ctx, []session.HeartbeatRecord{{ID: iv.ID, At: at, Stats: session.VMStats{LastSeq: 7}}}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := db.Interview(ctx, sc, iv.ID)
	if err != nil || got.LastHeartbeatAt != nil {
		t.Fatalf("heartbeat of a held row written at once: %v, %v", got.LastHeartbeatAt, err)
	}
	if _, err := db.AppendTranscript(ctx, iv.ID, segsOf(1, 1, "a"), accept, noEvents); err != nil {
		t.Fatal(err)
	}
	got, err = db.Interview(ctx, sc, iv.ID)
	if err != nil || got.LastHeartbeatAt == nil || !got.LastHeartbeatAt.Equal(at) || got.VM.LastSeq != 7 {
		t.Fatalf("after the flush: heartbeat %v, last seq %d, %v; want %v, 7", got.LastHeartbeatAt, got.VM.LastSeq, err, at)
	}
}

// TestIngestConnectionsUseGenericPlans: the flush's statements are planned
// once per connection, not on every flush (their array arguments made
// PostgreSQL's plan cache prefer a fresh custom plan each time), while the
// rest of the controller's connections keep the server's default.
func TestIngestConnectionsUseGenericPlans(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	got, err := postgres.IngestSetting(ctx, db, "plan_cache_mode")
	if err != nil {
		t.Fatal(err)
	}
	if got != "force_generic_plan" {
		t.Fatalf("ingest connections: plan_cache_mode = %q, want force_generic_plan", got)
	}
	var main string
	if err := db.Pool.QueryRow(ctx, "SELECT current_setting('plan_cache_mode')").Scan(&main); err != nil {
		t.Fatal(err)
	}
	if main != "auto" {
		t.Fatalf("main pool: plan_cache_mode = %q, want the default auto", main)
	}
}

// TestIngestStoresEveryColumnAsSent: the flush's pre-encoded arrays carry
// every column exactly (multi-byte and empty text, item ids, failed,
// large seqs), for segments of two interviews of two tenants in one flush.
func TestIngestStoresEveryColumnAsSent(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	type stored struct {
		sc   session.Scope
		id   string
		segs []session.Segment
	}
	var all []stored
	for k := range 2 {
		tenant := uuid.NewString()
		c, p := seed(t, db, tenant)
		sc := session.TenantScope(tenant)
		iv, err := db.CreateInterview(ctx, sc, session.Interview{CandidateID: c.ID, PositionID: p.ID, Architecture: "hybrid", MaxDurationS: 60})
		if err != nil {
			t.Fatal(err)
		}
		segs := []session.Segment{
			{Seq: 1, Speaker: session.SpeakerCandidate, Text: "héllo wörld 🚀 \"quoted\"\n", ItemID: "item_é"},
			{Seq: 2, Speaker: session.SpeakerInterviewer, Text: "", Failed: true},
			{Seq: 3, Speaker: session.SpeakerCandidate, Text: string(bytes.Repeat([]byte("x"), 4000+k))},
			{Seq: 1 << 40, Speaker: session.SpeakerInterviewer, Text: "far", ItemID: "i"},
		}
		all = append(all, stored{sc, iv.ID, segs})
	}
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Go(func() {
			if got, err := db.AppendTranscript(ctx, s.id, s.segs, accept, noEvents); err != nil || got.AckedSeq != 3 {
				t.Errorf("append: acked %d, %v; want 3", got.AckedSeq, err)
			}
		})
	}
	wg.Wait()
	for _, s := range all {
		got, _, err := db.Transcript(ctx, s.sc, s.id, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(s.segs) {
			t.Fatalf("%d segments stored, want %d", len(got), len(s.segs))
		}
		for i, g := range got {
			w := s.segs[i]
			if g.Seq != w.Seq || g.Speaker != w.Speaker || g.Text != w.Text || g.ItemID != w.ItemID || g.Failed != w.Failed {
				t.Fatalf("segment %d = %+v, want %+v", i, g, w)
			}
		}
	}
}
