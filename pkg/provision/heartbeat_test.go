package provision

import (
	"context"
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
	batch, _ := b.take(now, 0, time.Minute)
	if len(batch) != 1 || batch[0].ID != "s1" || batch[0].Stats.LastSeq != 7 || batch[0].Stats.BufferedSegments != 0 || !batch[0].At.Equal(now) {
		t.Fatalf("batch = %+v", batch)
	}
	if again, read := b.take(now, 0, time.Minute); len(again)+len(read) != 0 {
		t.Fatal("a batch is taken twice")
	}
	// A failed write puts the reports back.
	b.written(batch, nil, errors.New("down"))
	if again, _ := b.take(now, 0, time.Minute); len(again) != 1 {
		t.Fatalf("after a failed write: %+v", again)
	}
	// The batch's answer refreshes the status: ending is answered "end".
	reason := session.ReasonCancelled
	b.written(batch, map[string]session.HeartbeatState{"s1": {ID: "s1", TokenHash: h[:], Status: session.StateEnding, EndReason: &reason}}, nil)
	e, ok = b.record("s1", "tok", now, session.Heartbeat{})
	if ans := heartbeatAnswer(e.status, e.endReason); !ok || ans.Action != session.ActionEnd || ans.Reason != reason {
		t.Fatalf("after refresh to ending: %+v %v", ans, ok)
	}
	// No longer live (absent from the answer): the next one takes the full path.
	last, _ := b.take(now, 0, time.Minute)
	b.written(last, map[string]session.HeartbeatState{}, nil)
	if _, ok := b.record("s1", "tok", now, session.Heartbeat{}); ok {
		t.Fatal("a session no longer live answered from memory")
	}
	b.remember(session.Interview{ID: "s2", TokenHash: h[:], Status: session.StateReady})
	b.forget("s2")
	if _, ok := b.record("s2", "tok", now, session.Heartbeat{}); ok {
		t.Fatal("forgotten session answered from memory")
	}
}

// TestHeartbeatsAreWrittenWhenStaleChangedOrQuiet: with HeartbeatPersist,
// a report is written once the stored heartbeat is that much older, when
// the VM's buffered segments or retries change, or when the VM went quiet;
// the others only have their status read, once per report.
func TestHeartbeatsAreWrittenWhenStaleChangedOrQuiet(t *testing.T) {
	const persist, quiet = 8 * time.Second, 4 * time.Second
	b := newBeats()
	h := sha256.Sum256([]byte("tok"))
	t0 := time.Now()
	b.remember(session.Interview{ID: "s1", TokenHash: h[:], Status: session.StateInProgress, LastHeartbeatAt: &t0})
	beat := func(at time.Time, hb session.Heartbeat) {
		t.Helper()
		if _, ok := b.record("s1", "tok", at, hb); !ok {
			t.Fatal("known session not answered from memory")
		}
	}
	want := func(now time.Time, wantWrite time.Time, wantRead bool) []session.HeartbeatRecord {
		t.Helper()
		write, read := b.take(now, persist, quiet)
		if wantWrite.IsZero() && len(write) != 0 || !wantWrite.IsZero() && (len(write) != 1 || !write[0].At.Equal(wantWrite)) {
			t.Fatalf("at +%s: wrote %+v, want a write of +%s", now.Sub(t0), write, wantWrite.Sub(t0))
		}
		if wantRead != (len(read) == 1) || len(read) > 1 {
			t.Fatalf("at +%s: read %v, want a read: %v", now.Sub(t0), read, wantRead)
		}
		return write
	}
	live := func(st session.State) map[string]session.HeartbeatState {
		return map[string]session.HeartbeatState{"s1": {ID: "s1", TokenHash: h[:], Status: st}}
	}
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	beat(at(2*time.Second), session.Heartbeat{})
	want(at(2100*time.Millisecond), time.Time{}, true)  // fresh: status read only
	want(at(2500*time.Millisecond), time.Time{}, false) // read once per report
	b.refreshed([]string{"s1"}, live(session.StateEnding), nil)
	if e, _ := b.record("s1", "tok", at(3*time.Second), session.Heartbeat{}); heartbeatAnswer(e.status, e.endReason).Action != session.ActionEnd {
		t.Fatal("the status read did not refresh the answer")
	}
	b.refreshed([]string{"s1"}, live(session.StateInProgress), nil)
	beat(at(6*time.Second), session.Heartbeat{})
	want(at(6100*time.Millisecond), time.Time{}, true)
	// 8 s after the stored one: written.
	beat(at(8*time.Second), session.Heartbeat{})
	b.written(want(at(8100*time.Millisecond), at(8*time.Second), false), live(session.StateInProgress), nil)
	beat(at(10*time.Second), session.Heartbeat{})
	want(at(10100*time.Millisecond), time.Time{}, true)
	// Buffered segments changed: written at once.
	beat(at(12*time.Second), session.Heartbeat{BufferedSegments: 3})
	b.written(want(at(12100*time.Millisecond), at(12*time.Second), false), live(session.StateInProgress), nil)
	beat(at(14*time.Second), session.Heartbeat{BufferedSegments: 3})
	want(at(14100*time.Millisecond), time.Time{}, true)
	// Then silence: the last report is written once it has stayed the
	// latest for quiet.
	want(at(17*time.Second), time.Time{}, false)
	b.written(want(at(18*time.Second), at(14*time.Second), false), live(session.StateInProgress), nil)
	want(at(18500*time.Millisecond), time.Time{}, false) // nothing left
	// A failed read reads the report again.
	beat(at(19*time.Second), session.Heartbeat{BufferedSegments: 3})
	want(at(19100*time.Millisecond), time.Time{}, true)
	b.refreshed([]string{"s1"}, nil, errors.New("down"))
	want(at(19200*time.Millisecond), time.Time{}, true)
	// A session no longer live (absent from a read) takes the full path.
	b.refreshed([]string{"s1"}, map[string]session.HeartbeatState{}, nil)
	if _, ok := b.record("s1", "tok", at(20*time.Second), session.Heartbeat{}); ok {
		t.Fatal("a session no longer live answered from memory")
	}
}

// TestQuietVMTimesOutAfterItsLastHeartbeat: through the service and the
// store, heartbeats are written only every HeartbeatPersist, yet the last
// heartbeat of a VM that goes quiet is stored exactly, so the leader fails
// it HeartbeatTimeout after that heartbeat, not earlier.
func TestQuietVMTimesOutAfterItsLastHeartbeat(t *testing.T) {
	r := newRigWith(t, false, func(c *Config) {
		c.HeartbeatInterval, c.HeartbeatPersist = 2*time.Second, 8*time.Second
		c.HeartbeatFlush = time.Hour // batches are written by the test, on its clock
	})
	ctx := context.Background()
	iv := r.interview(session.StateProvisioning, session.StateReady)
	hash := sha256.Sum256([]byte("tok"))
	if _, err := r.db.UpdateInterview(ctx, r.scope, iv.ID, func(cur *session.Interview) ([]session.Event, error) {
		cur.TokenHash = hash[:]
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	t0 := r.clock.Now()
	stored := func() time.Duration {
		t.Helper()
		lb := r.get(iv.ID).LastHeartbeatAt
		if lb == nil {
			t.Fatal("no heartbeat stored")
		}
		return lb.Sub(t0).Round(time.Millisecond)
	}
	// Every 2 s for 12 s; the first takes the full path (written), then
	// only every 8 s.
	wantStored := []time.Duration{2, 2, 2, 2, 10, 10}
	for i, w := range wantStored {
		r.clock.Advance(2 * time.Second)
		ans, err := r.svc.Heartbeat(ctx, iv.ID, "tok", session.Heartbeat{})
		if err != nil || ans.Action != session.ActionContinue {
			t.Fatalf("heartbeat %d: %+v %v", i+1, ans, err)
		}
		r.svc.writeBeats(ctx)
		if got := stored(); got != w*time.Second {
			t.Fatalf("after heartbeat %d (+%ds): stored +%s, want +%ds", i+1, 2*(i+1), got, w)
		}
	}
	// Quiet since +12 s: written once it stayed the latest for 4 s.
	r.clock.Advance(3 * time.Second)
	r.svc.writeBeats(ctx)
	if got := stored(); got != 10*time.Second {
		t.Fatalf("3 s after the last heartbeat: stored +%s, want +10s", got)
	}
	r.clock.Advance(time.Second)
	r.svc.writeBeats(ctx)
	if got := stored(); got != 12*time.Second {
		t.Fatalf("4 s after the last heartbeat: stored +%s, want the last one, +12s", got)
	}
	// The leader's rule counts from the last heartbeat.
	r.clock.Advance(testReconcile.HeartbeatTimeout - 4*time.Second - time.Second)
	r.pass()
	r.wantStatus(iv.ID, session.StateReady, "")
	r.clock.Advance(2 * time.Second)
	r.pass()
	r.settle()
	r.wantStatus(iv.ID, session.StateFailed, session.ReasonHeartbeatTimeout)
}
