package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/interviewvm/controlplane/pkg/postgres/postgrestest"
	"github.com/interviewvm/controlplane/pkg/session"
)

type appended struct {
	id   string
	segs []session.Segment
	iv   session.Interview
}

type change struct {
	id   string
	upTo int64
}

// TestAppendedHookHandsOverWhatWasStored: after each flush commits, the
// appended hook receives exactly the segments it inserted (a retried seq
// is not handed over twice; a refused batch hands over nothing), encoded
// as a read returns them, with the interview as committed; and the flush's
// notification names the seq it reaches.
func TestAppendedHookHandsOverWhatWasStored(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	tenant := uuid.NewString()
	c, p := seed(t, db, tenant)
	sc := session.TenantScope(tenant)
	iv, err := db.CreateInterview(ctx, sc, session.Interview{CandidateID: c.ID, PositionID: p.ID, Architecture: "hybrid", MaxDurationS: 60})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []appended
	db.OnAppended(func(id string, segs []session.Segment, iv session.Interview) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, appended{id, segs, iv})
	})
	changes := make(chan change, 64)
	lctx, stop := context.WithCancel(ctx)
	listening := make(chan struct{})
	go func() {
		defer close(listening)
		db.Listen(lctx, func(id string, upTo int64) { changes <- change{id, upTo} })
	}()
	defer func() { stop(); <-listening }()
	if ch := <-changes; ch.id != "" { // the listener is up
		t.Fatalf("first notification %+v, want the empty reconnect one", ch)
	}
	nextChange := func() change {
		t.Helper()
		select {
		case ch := <-changes:
			return ch
		case <-time.After(30 * time.Second):
			t.Fatal("no notification")
			return change{}
		}
	}

	if _, err := db.AppendTranscript(ctx, iv.ID, segsOf(1, 3, "first"), accept, noEvents); err != nil {
		t.Fatal(err)
	}
	if ch := nextChange(); ch != (change{iv.ID, 3}) {
		t.Fatalf("notification after seqs 1-3: %+v, want %s up to 3", ch, iv.ID)
	}
	// A retry of 2-3 with 4 new: only 4 is stored, and handed over.
	if _, err := db.AppendTranscript(ctx, iv.ID, segsOf(2, 4, "retry"), accept, noEvents); err != nil {
		t.Fatal(err)
	}
	if ch := nextChange(); ch != (change{iv.ID, 4}) {
		t.Fatalf("notification after seq 4: %+v, want %s up to 4", ch, iv.ID)
	}
	refused := errors.New("refused")
	if _, err := db.AppendTranscript(ctx, iv.ID, segsOf(5, 5, "never"), func(*session.Interview) error { return refused }, noEvents); !errors.Is(err, refused) {
		t.Fatalf("refused batch: %v", err)
	}

	stored, _, err := db.Transcript(ctx, sc, iv.ID, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("hook called %d times, want 2 (the refused batch stored nothing): %+v", len(got), got)
	}
	var handed []session.Segment
	for i, a := range got {
		if a.id != iv.ID {
			t.Fatalf("hook %d for interview %s", i, a.id)
		}
		handed = append(handed, a.segs...)
	}
	if got[0].iv.AckedSeq != 3 || got[1].iv.AckedSeq != 4 {
		t.Fatalf("interviews handed over acknowledge %d and %d, want 3 and 4", got[0].iv.AckedSeq, got[1].iv.AckedSeq)
	}
	want, _ := json.Marshal(stored)
	have, _ := json.Marshal(handed)
	if string(want) != string(have) {
		t.Fatalf("handed over:\n%s\nstored (as read):\n%s", have, want)
	}
}

// TestListenReadsNotificationKeys: an id alone may have changed in any way;
// id:seq only in its transcript, up to seq; anything malformed after the
// colon counts as any change.
func TestListenReadsNotificationKeys(t *testing.T) {
	db, _ := postgrestest.New(t)
	ctx := context.Background()
	changes := make(chan change, 64)
	lctx, stop := context.WithCancel(ctx)
	listening := make(chan struct{})
	go func() {
		defer close(listening)
		db.Listen(lctx, func(id string, upTo int64) { changes <- change{id, upTo} })
	}()
	defer func() { stop(); <-listening }()
	if ch := <-changes; ch.id != "" {
		t.Fatalf("first notification %+v", ch)
	}
	if _, err := db.Pool.Exec(ctx, `SELECT pg_notify('interview_changed', 'a,b:7,c:x,d:-2')`); err != nil {
		t.Fatal(err)
	}
	for _, want := range []change{{"a", 0}, {"b", 7}, {"c", 0}, {"d", 0}} {
		select {
		case ch := <-changes:
			if ch != want {
				t.Fatalf("notification %+v, want %+v", ch, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no notification for %+v", want)
		}
	}
}
