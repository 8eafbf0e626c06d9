package provision

import (
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/interviewvm/controlplane/pkg/session"
)

func TestHeartbeatsAreAnsweredFromMemoryOnceKnown(t *testing.T) {
	b := newBeats()
	h := sha256.Sum256([]byte("tok"))
	now := time.Now()
	if _, ok := b.record("s1", "tok", now, session.Heartbeat{LastSeq: 1}); ok {
		t.Fatal("unknown session answered from memory")
	}
	b.remember(session.Interview{ID: "s1", TokenHash: h[:], Status: session.StateInProgress})
	if _, ok := b.record("s1", "wrong", now, session.Heartbeat{}); ok {
		t.Fatal("wrong token accepted from memory")
	}
	e, ok := b.record("s1", "tok", now, session.Heartbeat{LastSeq: 7, BufferedSegments: -1})
	if !ok || e.status != session.StateInProgress {
		t.Fatalf("known session: %+v %v", e, ok)
	}
	batch := b.take()
	if len(batch) != 1 || batch[0].ID != "s1" || batch[0].Stats.LastSeq != 7 || batch[0].Stats.BufferedSegments != 0 || !batch[0].At.Equal(now) {
		t.Fatalf("batch = %+v", batch)
	}
	if len(b.take()) != 0 {
		t.Fatal("a batch is taken twice")
	}
	// A failed write puts the reports back.
	b.written(batch, nil, errors.New("down"))
	if again := b.take(); len(again) != 1 {
		t.Fatalf("after a failed write: %+v", again)
	}
	// The batch's answer refreshes the status: ending is answered "end".
	reason := session.ReasonCancelled
	b.written(batch, map[string]session.Interview{"s1": {ID: "s1", TokenHash: h[:], Status: session.StateEnding, EndReason: &reason}}, nil)
	e, ok = b.record("s1", "tok", now, session.Heartbeat{})
	if ans := heartbeatAnswer(e.status, e.endReason); !ok || ans.Action != session.ActionEnd || ans.Reason != reason {
		t.Fatalf("after refresh to ending: %+v %v", ans, ok)
	}
	// No longer live (absent from the answer): the next one takes the full path.
	b.written(b.take(), map[string]session.Interview{}, nil)
	if _, ok := b.record("s1", "tok", now, session.Heartbeat{}); ok {
		t.Fatal("a session no longer live answered from memory")
	}
	b.remember(session.Interview{ID: "s2", TokenHash: h[:], Status: session.StateReady})
	b.forget("s2")
	if _, ok := b.record("s2", "tok", now, session.Heartbeat{}); ok {
		t.Fatal("forgotten session answered from memory")
	}
}
