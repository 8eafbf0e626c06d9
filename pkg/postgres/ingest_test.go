package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

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
	if _, err := db.UpdateInterview(ctx, sc, live.ID, func(iv *session.Interview) ([]session.Event, error) {
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
	if len(got) != 1 || got[live.ID].Status != session.StateProvisioning {
		t.Fatalf("returned %+v, want only the live one", got)
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
